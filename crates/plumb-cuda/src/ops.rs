//! Launchers of the small ops: embedding, the norms, rope, the elementwise ops and argmax.
//! Each checks its shapes on the host (a kernel never sees an out-of-bounds index) and
//! states its launch configuration's reason next to the kernel, in the `.cu` header.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use plumb_ops::{OpError, Result, RopeParams, RopeStyle};

use crate::compile::format_suffix;
use crate::device::{ensure_len, poisoned, CudaBackend};
use crate::error::DriverContext;
use crate::weight::CudaWeight;

pub(crate) fn shape(op: &'static str, msg: String) -> OpError {
    OpError::Shape { op, msg }
}

pub(crate) fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(shape(op, msg()))
    }
}

/// `v` as a kernel's `int`, or a shape error naming what overflowed.
pub(crate) fn int(v: usize, op: &'static str, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        shape(
            op,
            format!("{what} = {v} exceeds the kernels' 32-bit indexing"),
        )
    })
}

pub(crate) fn grid1(blocks: usize, threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Blocks for a 256-thread grid-stride loop over `len` elements (see elementwise.cu).
fn stride_blocks(len: usize) -> usize {
    len.div_ceil(256).clamp(1, 4096)
}

impl CudaBackend {
    pub(crate) fn embedding_impl(
        &self,
        table: &CudaWeight,
        ids: &[u32],
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let dim = table.cols;
        ensure(out.len() >= ids.len() * dim, "embedding", || {
            format!(
                "output holds {} values, need {}",
                out.len(),
                ids.len() * dim
            )
        })?;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(shape(
                "embedding",
                format!(
                    "token id {bad} is outside the vocabulary of {} rows",
                    table.rows
                ),
            ));
        }
        if ids.is_empty() || dim == 0 {
            return Ok(());
        }
        let suffix = format_suffix(table.ty).ok_or_else(|| OpError::Unsupported {
            op: "embedding",
            what: table.ty.name().into(),
        })?;
        let (cols, row_bytes) = (
            int(dim, "embedding", "cols")?,
            int(table.row_bytes, "embedding", "row bytes")?,
        );
        let ids_dev = self
            .stream
            .clone_htod(ids)
            .ctx(|| "uploading token ids".into())?;
        let f = self.func("embedding.cu", Some(suffix), &format!("embedding_{suffix}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&table.data)
            .arg(&ids_dev)
            .arg(out)
            .arg(&cols)
            .arg(&row_bytes);
        // SAFETY: ids < rows (checked), out holds ids.len() * cols floats (checked), the
        // table holds rows * row_bytes bytes (CudaWeight invariant); the argument list
        // matches embedding_* in embedding.cu.
        unsafe { b.launch(grid1(ids.len(), 128, 0)) }.ctx(|| "launching embedding".into())?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_impl(
        &self,
        residual: Option<&mut CudaSlice<f32>>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let op = if residual.is_some() {
            "add_rms_norm"
        } else {
            "rms_norm"
        };
        let n = rows * dim;
        ensure(w.len() >= dim && x.len() >= n && out.len() >= n, op, || {
            format!(
                "rows {rows} × dim {dim} do not fit x ({}), weight ({}) and out ({})",
                x.len(),
                w.len(),
                out.len()
            )
        })?;
        if let Some(r) = &residual {
            ensure(r.len() >= n, op, || "residual too short".into())?;
        }
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let d = int(dim, op, "dim")?;
        let cfg = grid1(rows, 256, 0);
        match residual {
            None => {
                let f = self.func("norm.cu", None, "rms_norm_f32")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(x).arg(w).arg(out).arg(&d).arg(&eps);
                // SAFETY: x and out hold rows*dim floats and w dim (checked); one block per row.
                unsafe { b.launch(cfg) }.ctx(|| "launching rms_norm".into())?;
            }
            Some(res) => {
                let f = self.func("norm.cu", None, "add_rms_norm_f32")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(res).arg(x).arg(w).arg(out).arg(&d).arg(&eps);
                // SAFETY: as rms_norm, and the residual holds rows*dim floats (checked).
                unsafe { b.launch(cfg) }.ctx(|| "launching add_rms_norm".into())?;
            }
        }
        Ok(())
    }

    pub(crate) fn rope_impl(
        &self,
        x: &mut CudaSlice<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        let n = positions.len();
        ensure(x.len() >= n * n_heads * head_dim, "rope", || {
            "x too short".into()
        })?;
        ensure(
            p.n_rot <= head_dim && p.n_rot.is_multiple_of(2),
            "rope",
            || format!("n_rot {} must be even and ≤ head_dim {head_dim}", p.n_rot),
        )?;
        let half = p.n_rot / 2;
        if let Some(f) = freq_factors {
            ensure(f.len() >= half, "rope", || {
                format!("{} freq factors, need {half}", f.len())
            })?;
        }
        let pairs = n * n_heads * half;
        if pairs == 0 {
            return Ok(());
        }
        let pos = self
            .stream
            .clone_htod(positions)
            .ctx(|| "uploading positions".into())?;
        let args = [
            int(n, "rope", "tokens")?,
            int(n_heads, "rope", "heads")?,
            int(head_dim, "rope", "head_dim")?,
            int(p.n_rot, "rope", "n_rot")?,
            (p.style == RopeStyle::Neox) as i32,
        ];
        let has_ff = freq_factors.is_some() as i32;
        let f = self.func("rope.cu", None, "rope_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&pos);
        // Without factors the kernel never reads the pointer (has_ff = 0); pass positions.
        match freq_factors {
            Some(ff) => b.arg(ff),
            None => b.arg(&pos),
        };
        b.arg(&has_ff);
        for a in &args {
            b.arg(a);
        }
        b.arg(&p.theta);
        // SAFETY: x holds n*heads*head_dim floats, positions n, factors n_rot/2 (checked);
        // one thread per pair, guarded by the pair count inside the kernel.
        unsafe { b.launch(grid1(pairs.div_ceil(256), 256, 0)) }.ctx(|| "launching rope".into())?;
        Ok(())
    }

    /// `add` (x += y over len) or `add_bias` (x[r, :] += y[:dim] over len = rows * dim).
    pub(crate) fn elementwise_impl(
        &self,
        op: &'static str,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
        dim: usize,
    ) -> Result<()> {
        let ylen = if op == "add_bias" { dim } else { len };
        ensure(x.len() >= len && y.len() >= ylen, op, || {
            format!("len {len} exceeds a buffer")
        })?;
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        let dim32 = u32::try_from(dim).map_err(|_| shape(op, format!("dim {dim} too large")))?;
        let f = self.func("elementwise.cu", None, &format!("{op}_f32"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(y).arg(&len64);
        if op == "add_bias" {
            b.arg(&dim32);
        }
        // SAFETY: x holds len floats and y len (add) or dim (add_bias) (checked); the
        // argument lists match elementwise.cu.
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| format!("launching {op}"))?;
        Ok(())
    }

    pub(crate) fn swiglu_impl(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        ensure(
            gate.len() >= len && up.len() >= len && out.len() >= len,
            "swiglu",
            || format!("len {len} exceeds a buffer"),
        )?;
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        let f = self.func("elementwise.cu", None, "swiglu_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(gate).arg(up).arg(out).arg(&len64);
        // SAFETY: the three buffers hold len floats (checked).
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| "launching swiglu".into())?;
        Ok(())
    }

    pub(crate) fn argmax_impl(&self, x: &CudaSlice<f32>, len: usize) -> Result<u32> {
        ensure(x.len() >= len, "argmax", || {
            format!("len {len} > buffer {}", x.len())
        })?;
        if len == 0 {
            return Ok(0);
        }
        let len32 =
            u32::try_from(len).map_err(|_| shape("argmax", format!("len {len} too large")))?;
        let mut scratch = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let result = ensure_len(&self.stream, &mut scratch.result, 1)?;
        let f = self.func("argmax.cu", None, "argmax_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&len32).arg(&mut *result);
        // SAFETY: x holds len floats (checked), result one u32; a single block (argmax.cu).
        unsafe { b.launch(grid1(1, 1024, 0)) }.ctx(|| "launching argmax".into())?;
        let mut host = [0u32; 1];
        self.stream
            .memcpy_dtoh(&result.slice(0..1), &mut host)
            .ctx(|| "reading the argmax".into())?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for argmax".into())?;
        Ok(host[0])
    }
}
