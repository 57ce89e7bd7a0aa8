//! Decode matvec launchers (n ≤ MATVEC_MAX_N tokens). Kernels and the reasons of their launch
//! configurations: kernels/matvec_q8.cu (v2, q8_dp4a) and kernels/matvec_q.cu (v1).

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use plumb_core::GgmlType;
use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{
    grid1, poisoned, BatchKernel, Dims, MvItem, MvSets, AUTO_MMA_MAX_N, MATVEC_MAX_N,
};
use crate::weight::CudaWeight;

/// Rows per thread group of matvec_q8 (MV_R in the kernel).
const MV_R: usize = 2;

/// Whether `ty` has a dp4a kernel in matvec_q8.cu (its PLUMB_Q8_FORMATS).
pub(crate) fn has_q8_kernel(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K
    )
}

/// Threads per row group: the smallest power of two ≥ the row's 32-element units, from 32
/// to 128 (576 columns: 18 units -> 32; 4096: 128 units -> 128).
fn threads_per_row(cols: usize) -> u32 {
    (cols / 32).next_power_of_two().clamp(32, 128) as u32
}

impl CudaBackend {
    /// `n` tokens (9 ≤ n ≤ BATCH_MAX_N). `auto`: mma up to AUTO_MMA_MAX_N tokens, where it
    /// measured ahead of dequant + cuBLAS (NOTES.md), the prefill path above.
    pub(crate) fn batch_kernel(&self, ty: GgmlType, n: usize) -> Option<BatchKernel> {
        let mma_ok = ty == GgmlType::Q4_0 && self.info().compute_capability.0 >= 8;
        match self.variant("batch") {
            Some("auto") if mma_ok && n <= AUTO_MMA_MAX_N => Some(BatchKernel::Mma),
            Some("mma") if mma_ok => Some(BatchKernel::Mma),
            Some("mma_lb") if mma_ok => Some(BatchKernel::MmaLb),
            Some("q8_dp4a") if has_q8_kernel(ty) => Some(BatchKernel::Dp4a),
            _ => None,
        }
    }

    pub(crate) fn matvec(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        d: &Dims,
        sfx: &'static str,
    ) -> Result<()> {
        let variant = self.variant("matvec");
        let dp4a = if d.n as usize > MATVEC_MAX_N {
            self.batch_kernel(w.ty, d.n as usize).is_some()
        } else {
            matches!(variant, Some("q8_dp4a") | Some("mma"))
        };
        if dp4a && has_q8_kernel(w.ty) && w.cols.is_multiple_of(32) {
            let item = MvItem {
                w: w.data.device_ptr(&self.stream).0,
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                row_bytes: w.row_bytes,
                x: x.device_ptr(&self.stream).0,
                n: d.n as usize,
                out: out.device_ptr(&self.stream).0,
            };
            // Inside a step the launch may wait for the matvecs that share its x (defer.rs).
            return self.defer_matvec(item);
        }
        self.flush()?;
        let tiled = variant == Some("tiled");
        let rows = d.rows as usize;
        // warp_per_row: 4 warps = 4 rows per block; tiled: 8 rows per block and the x tile
        // [n][1024 + 32] floats in dynamic shared memory (see matvec_q.cu).
        let cfg = if tiled {
            grid1(rows.div_ceil(8), 256, (d.n as u32) * 1056 * 4)
        } else {
            grid1(rows.div_ceil(4), 128, 0)
        };
        let name = format!("matvec_{}_{sfx}", if tiled { "tiled" } else { "warp" });
        let f = self.func("matvec_q.cu", Some(sfx), &name)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&w.data).arg(x).arg(out);
        b.arg(&d.rows).arg(&d.cols).arg(&d.row_bytes).arg(&d.n);
        // SAFETY: W holds rows*row_bytes bytes (CudaWeight invariant), x n*cols floats and
        // out n*rows (checked by matmul_impl), n ≤ MAX_N; the kernel guards rows.
        unsafe { b.launch(cfg) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }

    /// One launch of matvec_q8 over 1 to 3 items sharing x (`MvItem::joins`), after the q8
    /// activations of x (reused when its producer wrote them, else quantize_q8).
    pub(crate) fn matvec_q8_sets(&self, items: &[MvItem]) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let (n, cols) = (first.n, first.cols);
        // Variant matvec=mma: 2 to 8 tokens of Q4_0 through the mma kernel too (one tile).
        // 8B Q4_0 on an H100, `bench --parallel`: 2 sequences 421 t/s with dp4a against 308
        // with mma, 4: 608 / 611, 8: 877 / 1,240 (NOTES.md run 7), hence not the default yet:
        // a size-dependent choice is next.
        if self.variant("matvec") == Some("mma")
            && (2..=MATVEC_MAX_N).contains(&n)
            && first.ty == GgmlType::Q4_0
            && self.info().compute_capability.0 >= 8
        {
            return self.mmq_launch(items, false);
        }
        if n > MATVEC_MAX_N {
            match self.batch_kernel(first.ty, n) {
                Some(BatchKernel::Mma) => return self.mmq_launch(items, false),
                Some(BatchKernel::MmaLb) => return self.mmq_launch(items, true),
                _ => {}
            }
        }
        let len = n * cols;
        let (q8, stale) = self.q8_input(first.x, len)?;
        if stale {
            let groups = (len / 32) as i32;
            let f = self.func("elementwise.cu", None, "quantize_q8")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&first.x).arg(&q8.qs).arg(&q8.ds).arg(&groups);
            // SAFETY: x holds n*cols floats (checked by matmul_impl when the item was made,
            // and alive until this launch: defer.rs); the slot holds at least len int8 and
            // len/32 float2 (q8_input); one warp per group of 32.
            unsafe { b.launch(grid1((len / 32).div_ceil(8), 256, 0)) }
                .ctx(|| "launching quantize_q8".into())?;
        }
        let tpr = threads_per_row(cols);
        let rows_per_block = MV_R * (128 / tpr as usize);
        let (sets, blocks) = MvSets::of(items, rows_per_block);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (tpr, 128 / tpr, 1),
            shared_mem_bytes: 0,
        };
        let sfx = crate::compile::format_suffix(first.ty)
            .ok_or_else(|| CudaError::Other(format!("no kernels for {}", first.ty)))?;
        let batched = n > MATVEC_MAX_N;
        let (name, cfg) = if batched {
            // ceil(n / 8) chunks of 8 tokens per row group, the chunk fastest (MV_B8).
            let mut cfg = cfg;
            cfg.grid_dim.0 *= n.div_ceil(MATVEC_MAX_N) as u32;
            (format!("matvec_q8_b8_{sfx}"), cfg)
        } else {
            (format!("matvec_q8_n{n}_{sfx}"), cfg)
        };
        let f = self.func("matvec_q8.cu", Some(sfx), &name)?;
        let (cols_i, n_i) = (cols as i32, n as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&q8.qs).arg(&q8.ds).arg(&cols_i);
        if batched {
            b.arg(&n_i);
        }
        // SAFETY: each W holds rows*row_bytes bytes in the layout quant.cuh gives the format
        // (CudaWeight invariant), cols % 32 == 0, the q8 slot holds n*cols values (written
        // above or by the producer, earlier on this stream), each out holds n*rows floats
        // (checked by matmul_impl); items share x and format (MvItem::joins); the kernel
        // clamps the rows it reads and guards the rows it writes.
        unsafe { b.launch(cfg) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }

    /// mmq.cu for 1 to 3 items sharing x̂ (`MvItem::joins`): one launch, ceil(rows / 32)
    /// blocks of 256 per item, ceil(n / 8) token tiles.
    fn mmq_launch(&self, items: &[MvItem], lb: bool) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        // x̂ in fragment order (mmq.cu quantize_q8_frag), for ceil(n / 8) tiles of 8 tokens.
        let nt = first.n.div_ceil(8);
        let units = first.cols / 32;
        let (xf, xd) = {
            let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
            let g = &mut *guard;
            let xf = self.ensure_len(&mut g.mmq_xf, nt * 8 * first.cols)?;
            let xf = xf.device_ptr(&self.stream).0;
            let xd = self.ensure_len(&mut g.mmq_xd, 2 * units * nt * 8)?;
            let xd = xd.device_ptr(&self.stream).0;
            (xf, xd)
        };
        let (n_i, cols_i, nt_i) = (first.n as i32, first.cols as i32, nt as i32);
        let f = self.func("mmq.cu", None, "quantize_q8_frag")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&first.x)
            .arg(&xf)
            .arg(&xd)
            .arg(&n_i)
            .arg(&cols_i)
            .arg(&nt_i);
        // SAFETY: x holds n*cols floats (checked by matmul_impl when the item was made, alive
        // until this launch), xf 8*nt*cols int8 and xd 2*units*8*nt floats (ensured above);
        // cols % 32 == 0; one warp per (token, unit) group, tokens ≥ n written as zeros.
        unsafe { b.launch(grid1((nt * 8 * units).div_ceil(8), 256, 0)) }
            .ctx(|| "launching quantize_q8_frag".into())?;
        let (sets, blocks) = MvSets::of(items, 32);
        let name = format!("mmq_q4_0_{}nt{nt}", if lb { "lb_" } else { "" });
        let f = self.func("mmq.cu", None, &name)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&xf).arg(&xd).arg(&cols_i).arg(&n_i);
        // SAFETY: each W holds rows*row_bytes bytes of repacked Q4_0 (CudaWeight invariant),
        // the q8 slot n*cols values written earlier on this stream, each out n*rows floats
        // (checked by matmul_impl); x̂ is in fragment order for nt tiles (written above,
        // in stream order); the items share x, cols and n (MvItem::joins);
        // 2 ≤ n ≤ 64 so nt ∈ 1..=8; the kernel clamps the rows and tokens it reads and
        // guards those it writes.
        unsafe { b.launch(grid1(blocks, 256, 0)) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }
}
