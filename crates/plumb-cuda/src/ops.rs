//! Launchers of the small ops: embedding, the norms, rope, the elementwise ops and argmax.
//! Each checks its shapes on the host (a kernel never sees an out-of-bounds index) and
//! states its launch configuration's reason next to the kernel, in the `.cu` header.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};
use plumb_ops::{OpError, Result, RopeParams};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{ensure, grid1, int, poisoned, shape, stride_blocks, KvItem, RopeItem};
use crate::weight::CudaWeight;

impl CudaBackend {
    /// A device address holding `vals`: the step buffer's (`step`) when the values are the
    /// active step's, else a fresh upload, returned so that it outlives the launch (and
    /// refused while recording: a recording must not hold a temporary).
    pub(crate) fn device_u32s(
        &self,
        step: Option<u64>,
        vals: &[u32],
        what: &str,
    ) -> Result<(u64, Option<CudaSlice<u32>>)> {
        if let Some(p) = step {
            return Ok((p, None));
        }
        self.not_capturing(what)?;
        let buf = self
            .stream
            .clone_htod(vals)
            .ctx(|| format!("uploading {what}"))?;
        let p = buf.device_ptr(&self.stream).0;
        Ok((p, Some(buf)))
    }

    /// `cache[pos0 * kv_dim ..][.. n * kv_dim] = src[.. n * kv_dim]`, pos0 read on the device.
    pub(crate) fn kv_write_impl(
        &self,
        src: &CudaSlice<f32>,
        cache: &mut CudaSlice<f32>,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        let len = n * kv_dim;
        ensure(
            src.len() >= len && cache.len() >= (pos0 + n) * kv_dim,
            "kv_write",
            || format!("{n} rows of {kv_dim} at {pos0} do not fit the cache or the source"),
        )?;
        if len == 0 {
            return Ok(());
        }
        let pos0_u32 = [u32::try_from(pos0).map_err(|_| shape("kv_write", "pos0".into()))?];
        let step_p0 = self.step_pos0(pos0);
        let in_step = step_p0.is_some();
        let (p0, _upload) = self.device_u32s(step_p0, &pos0_u32, "pos0")?;
        let item = KvItem {
            src: src.device_ptr(&self.stream).0,
            cache: cache.device_ptr(&self.stream).0,
            pos0: p0,
            n,
            kv_dim,
            capacity: cache.len() / kv_dim.max(1),
        };
        self.defer_kv_write(item, in_step)
    }

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
        let (cols, row_bytes, vocab) = (
            int(dim, "embedding", "cols")?,
            int(table.row_bytes, "embedding", "row bytes")?,
            int(table.rows, "embedding", "vocab")?,
        );
        // Inside a step the ids come from the step's device buffer (src/step.rs).
        let (ids_ptr, _upload) = self.device_u32s(self.step_ids(ids), ids, "token ids")?;
        let f = self.func("embedding.cu", Some(suffix), &format!("embedding_{suffix}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&table.data)
            .arg(&ids_ptr)
            .arg(out)
            .arg(&cols)
            .arg(&row_bytes)
            .arg(&vocab);
        // SAFETY: ids < rows (checked; the kernel also guards), ids_ptr holds ids.len() u32
        // (the step buffer or the upload kept alive in _upload), out holds ids.len() * cols
        // floats (checked), the table holds rows * row_bytes bytes (CudaWeight invariant); the
        // argument list matches embedding_* in embedding.cu.
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
        // ~4 elements per thread, a whole number of warps, at most 1024 (norm.cu).
        let threads = (dim.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32;
        let cfg = grid1(rows, threads, 0);
        // The q8 copy of `out` for the matvec that may follow (src/q8.rs).
        let out_ptr = out.device_ptr(&self.stream).0;
        let q8 = if dim.is_multiple_of(32) {
            self.q8_produce(out_ptr, rows, rows * dim)
        } else {
            self.q8_forget(out_ptr);
            None
        };
        let (qs, ds) = q8.map(|p| (p.qs, p.ds)).unwrap_or((0, 0));
        match residual {
            None => {
                let f = self.func("norm.cu", None, "rms_norm_f32")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(x).arg(w).arg(out).arg(&d).arg(&eps).arg(&qs).arg(&ds);
                // SAFETY: x and out hold rows*dim floats and w dim (checked); one block per row;
                // qs/ds are null or a q8 slot of rows*dim values with dim % 32 == 0.
                unsafe { b.launch(cfg) }.ctx(|| "launching rms_norm".into())?;
            }
            Some(res) => {
                let f = self.func("norm.cu", None, "add_rms_norm_f32")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(res)
                    .arg(x)
                    .arg(w)
                    .arg(out)
                    .arg(&d)
                    .arg(&eps)
                    .arg(&qs)
                    .arg(&ds);
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
        // Inside a step the positions come from the step's device buffer (src/step.rs), and
        // the launch may be merged with its neighbours' (src/defer.rs).
        let step_pos = self.step_positions(positions);
        let in_step = step_pos.is_some();
        let (pos, _upload) = self.device_u32s(step_pos, positions, "positions")?;
        let item = RopeItem {
            x: x.device_ptr(&self.stream).0,
            pos,
            n,
            n_heads,
            head_dim,
            p,
            ff: freq_factors.map(|f| f.device_ptr(&self.stream).0),
        };
        self.defer_rope(item, in_step)
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
        // The q8 copy of `out` for the down projection (src/q8.rs): rows are unknown here, so
        // it is written for any len ≤ MATVEC_MAX_N rows' worth of q8 slot.
        let out_ptr = out.device_ptr(&self.stream).0;
        let q8 = self.q8_produce(out_ptr, 1, len);
        let (qs, ds) = q8.map(|p| (p.qs, p.ds)).unwrap_or((0, 0));
        let f = self.func("elementwise.cu", None, "swiglu_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(gate).arg(up).arg(out).arg(&len64).arg(&qs).arg(&ds);
        // SAFETY: the three buffers hold len floats (checked); qs/ds are null or a q8 slot of
        // len values with len % 32 == 0 (q8_produce).
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| "launching swiglu".into())?;
        Ok(())
    }

    /// The argmax of each of `rows` rows of `len` floats: one block per row (argmax.cu), then
    /// `rows` ids to the host.
    pub(crate) fn argmax_impl(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        len: usize,
    ) -> Result<Vec<u32>> {
        let total = rows
            .checked_mul(len)
            .ok_or_else(|| shape("argmax", format!("{rows} rows of {len} overflow")))?;
        ensure(x.len() >= total, "argmax", || {
            format!("{rows} rows of {len} > buffer {}", x.len())
        })?;
        if len == 0 || rows == 0 {
            return Ok(vec![0; rows]);
        }
        let len32 =
            u32::try_from(len).map_err(|_| shape("argmax", format!("len {len} too large")))?;
        u32::try_from(rows).map_err(|_| shape("argmax", format!("{rows} rows too many")))?;
        let mut scratch = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let result = self.ensure_len(&mut scratch.result, rows)?;
        let f = self.func("argmax.cu", None, "argmax_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&len32).arg(&*result);
        // SAFETY: x holds rows*len floats (checked), result at least rows u32 (ensure_len);
        // block b reads row b and writes result[b] (argmax.cu).
        unsafe { b.launch(grid1(rows, 1024, 0)) }.ctx(|| "launching argmax".into())?;
        let mut host = vec![0u32; rows];
        self.stream
            .memcpy_dtoh(&result.slice(0..rows), &mut host)
            .ctx(|| "reading the argmax".into())?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for argmax".into())?;
        Ok(host)
    }
}
