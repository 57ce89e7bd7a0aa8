//! The matmul op: which kernel takes `n` tokens of a weight (the decode matvecs of
//! src/matvec_q.rs and src/matvec_q8.rs, the batched src/mmq.rs, by variant and size), and the
//! launcher of kernels/matmul.cu, the prefill paths (dequantize + cuBLAS, or tiled).

use std::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PushKernelArg, SyncOnDrop};
use plumb_core::GgmlType;
use plumb_ops::shapes;
use plumb_ops::{OpError, Result};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{
    auto_mma_max_n, grid1, int, poisoned, BatchKernel, Dims, MvItem, BATCH_MAX_N, MATVEC_MAX_N,
};
use crate::matvec_h::takes_h;
use crate::matvec_q8::has_q8_kernel;
use crate::mmq::has_mmq_kernel;
use crate::state::Scratch;
use crate::weight::CudaWeight;

impl CudaBackend {
    pub(crate) fn matmul_impl(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (rows, cols) = (w.rows, w.cols);
        shapes::matmul((rows, cols), x.len(), n, out.len())?;
        if n == 0 || rows == 0 {
            return Ok(());
        }
        let d = Dims {
            rows: int(rows, "matmul", "rows")?,
            cols: int(cols, "matmul", "cols")?,
            row_bytes: int(w.row_bytes, "matmul", "row bytes")?,
            n: int(n, "matmul", "n")?,
        };
        int(n * cols.max(rows), "matmul", "n × width")?;
        let sfx = format_suffix(w.ty).ok_or_else(|| OpError::Unsupported {
            op: "matmul",
            what: w.ty.name().into(),
        })?;
        if n <= MATVEC_MAX_N {
            return self.matvec(w, x, out, &d, sfx);
        }
        if n <= BATCH_MAX_N && cols.is_multiple_of(32) && self.batch_kernel(w.ty, n).is_some() {
            return self.matvec(w, x, out, &d, sfx);
        }
        self.flush()?;
        match self.variant("prefill") {
            Some("cublas") => self.prefill_cublas(w, x, out, &d, sfx),
            _ => self.prefill_tiled(w, x, out, &d, sfx),
        }
    }

    /// `n` tokens (9 ≤ n ≤ BATCH_MAX_N). `auto`: mma for the formats mmq.cu has, on sm_80+, up
    /// to the format's AUTO_MMA_MAX_N tokens (where it measured ahead of dequant + cuBLAS,
    /// NOTES.md), the prefill path above.
    pub(crate) fn batch_kernel(&self, ty: GgmlType, n: usize) -> Option<BatchKernel> {
        let mma_ok = self.mma_ok(ty);
        match self.variant("batch") {
            Some("auto") if mma_ok && n <= auto_mma_max_n(ty) => Some(BatchKernel::Mma),
            Some("mma") if mma_ok => Some(BatchKernel::Mma),
            Some("mma_lb") if mma_ok => Some(BatchKernel::MmaLb),
            Some("q8_dp4a") if has_q8_kernel(ty) => Some(BatchKernel::Dp4a),
            _ => None,
        }
    }

    /// Whether mmq.cu can take `ty` here: a format it has kernels for, int8 mma (sm_80+).
    fn mma_ok(&self, ty: GgmlType) -> bool {
        has_mmq_kernel(ty) && self.info().compute_capability.0 >= 8
    }

    /// n ≤ MATVEC_MAX_N tokens, or 9 to BATCH_MAX_N with a batch kernel: the q8 kernels, or
    /// matvec_h.cu for F16 / BF16 (held back inside a step, src/defer.rs), where the variant and
    /// format allow, else v1.
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
        let xp = x.device_ptr(&self.stream).0;
        // F16 / BF16 under the q8 variants: matvec_h.cu (16-byte weight loads, f32 x).
        let h = dp4a && takes_h(w.ty, d.n as usize, w.cols, xp);
        if h || (dp4a && has_q8_kernel(w.ty) && w.cols.is_multiple_of(32)) {
            let item = MvItem {
                w: w.data.device_ptr(&self.stream).0,
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                row_bytes: w.row_bytes,
                x: xp,
                n: d.n as usize,
                out: out.device_ptr(&self.stream).0,
            };
            // Inside a step the launch may wait for the matvecs that share its x (defer.rs).
            return self.defer_matvec(item);
        }
        self.flush()?;
        self.matvec_q(w, x, out, d, sfx)
    }

    /// The kernel of a held-back matvec over 1 to 3 items sharing x (`MvItem::joins`): mmq.cu
    /// where the variants send it there (every format it has), matvec_h.cu for F16 / BF16,
    /// else matvec_q8.cu.
    pub(crate) fn matvec_set(&self, items: &[MvItem]) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let n = first.n;
        // Variant matvec=mma: 2 to 8 tokens of every mmq.cu format through the mma kernel too
        // (one tile). 8B Q4_0 on an H100, `bench --parallel`: 2 sequences 421 t/s with dp4a
        // against 308 with mma, 4: 608 / 611, 8: 877 / 1,240 (NOTES.md run 7), hence not the
        // default yet: a size-dependent choice is next.
        if self.variant("matvec") == Some("mma")
            && (2..=MATVEC_MAX_N).contains(&n)
            && self.mma_ok(first.ty)
        {
            return self.mmq(items, false);
        }
        if takes_h(first.ty, n, first.cols, first.x) {
            return self.matvec_h(items);
        }
        if n > MATVEC_MAX_N {
            match self.batch_kernel(first.ty, n) {
                Some(BatchKernel::Mma) => return self.mmq(items, false),
                Some(BatchKernel::MmaLb) => return self.mmq(items, true),
                _ => {}
            }
        }
        self.matvec_q8(items)
    }

    fn prefill_tiled(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        d: &Dims,
        sfx: &'static str,
    ) -> Result<()> {
        let name = format!("matmul_tiled_{sfx}");
        let f = self.func("matmul.cu", Some(sfx), &name)?;
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: ((d.rows as u32).div_ceil(64), (d.n as u32).div_ceil(64), 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&w.data).arg(x).arg(out);
        b.arg(&d.rows).arg(&d.cols).arg(&d.row_bytes).arg(&d.n);
        // SAFETY: W holds rows*row_bytes bytes (CudaWeight invariant), x n*cols floats and out
        // n*rows (checked by matmul_impl); the kernel guards rows and tokens at the tile edges.
        unsafe { b.launch(cfg) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }

    /// Dequantize (or convert) to a GEMM-friendly type in scratch, then one cuBLAS GEMM:
    /// out[n, rows] (column-major rows × n) = W^T-as-stored (cols × rows, transposed) · x.
    fn prefill_cublas(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        d: &Dims,
        sfx: &'static str,
    ) -> Result<()> {
        let blas = self.blas()?;
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        self.gemm_inputs(w, x, &mut guard, d, sfx)?;
        let (scratch, s) = (&*guard, &self.stream);
        let (r32, r16) = (cudaDataType_t::CUDA_R_32F, cudaDataType_t::CUDA_R_16F);
        // (A, B) as the GEMM reads them; the guards keep cudarc's bookkeeping alive.
        let ((a_ptr, _ga), (b_ptr, _gb), ab_ty) = match w.ty {
            GgmlType::F32 => (w.data.device_ptr(s), x.device_ptr(s), r32),
            GgmlType::BF16 => (scratch_ptr(&scratch.w32, s)?, x.device_ptr(s), r32),
            GgmlType::F16 => (w.data.device_ptr(s), scratch_ptr(&scratch.x16, s)?, r16),
            _ => (
                scratch_ptr(&scratch.w16, s)?,
                scratch_ptr(&scratch.x16, s)?,
                r16,
            ),
        };
        let (c_ptr, _gc) = out.device_ptr_mut(s);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: A is rows×cols row-major (= cols×rows column-major, lda = cols, used
        // transposed), B is n×cols row-major (= cols×n column-major, ldb = cols), C is
        // rows×n column-major (ldc = rows) = out [n, rows] row-major; every buffer holds at
        // least those elements (checked by matmul_impl or sized by gemm_inputs); alpha/beta
        // are f32 as CUBLAS_COMPUTE_32F requires; the handle runs on this backend's stream.
        unsafe {
            gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                d.rows,
                d.n,
                d.cols,
                &alpha as *const f32 as *const c_void,
                a_ptr as *const c_void,
                ab_ty,
                d.cols,
                b_ptr as *const c_void,
                ab_ty,
                d.cols,
                &beta as *const f32 as *const c_void,
                c_ptr as *mut c_void,
                cudaDataType_t::CUDA_R_32F,
                d.rows,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas {
            what: format!(
                "GEMM of a {}×{} {} weight with {} tokens",
                d.rows, d.cols, w.ty, d.n
            ),
            source: e,
        })?;
        Ok(())
    }

    /// Queues what the GEMM reads that is not stored as such: W dequantized into
    /// `scratch.w16` (or `w32` for BF16: bf16 -> f16 would lose range, so an f32 GEMM) and,
    /// for an f16 GEMM, x rounded into `scratch.x16`. F32 weights need nothing.
    fn gemm_inputs(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        scratch: &mut Scratch,
        d: &Dims,
        sfx: &'static str,
    ) -> Result<()> {
        let (rows, cols, n) = (d.rows as usize, d.cols as usize, d.n as usize);
        match w.ty {
            GgmlType::F32 => {}
            GgmlType::BF16 => {
                let w32 = self.ensure_len(&mut scratch.w32, rows * cols)?;
                let f = self.func("matmul.cu", Some(sfx), &format!("dequant_f32_{sfx}"))?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(&w.data)
                    .arg(&*w32)
                    .arg(&d.rows)
                    .arg(&d.cols)
                    .arg(&d.row_bytes);
                let chunks = rows * cols.div_ceil(32);
                // SAFETY: w32 holds rows*cols floats; one thread per chunk, guarded.
                unsafe { l.launch(grid1(chunks.div_ceil(256), 256, 0)) }
                    .ctx(|| "launching dequant_f32".into())?;
            }
            _ => {
                if w.ty != GgmlType::F16 {
                    let w16 = self.ensure_len(&mut scratch.w16, rows * cols)?;
                    let f = self.func("matmul.cu", Some(sfx), &format!("dequant_f16_{sfx}"))?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(&w.data)
                        .arg(&*w16)
                        .arg(&d.rows)
                        .arg(&d.cols)
                        .arg(&d.row_bytes);
                    // v2: one warp per run of 1024 elements of a row (matmul.cu).
                    let warps = rows * cols.div_ceil(1024);
                    // SAFETY: w16 holds rows*cols halves, cols % 32 == 0 (a quantized format);
                    // whole warps past the last run leave.
                    unsafe { l.launch(grid1(warps.div_ceil(8), 256, 0)) }
                        .ctx(|| "launching dequant_f16".into())?;
                }
                let x16 = self.ensure_len(&mut scratch.x16, n * cols)?;
                let len = (n * cols) as u64;
                let f = self.func("matmul.cu", Some(sfx), "to_f16_f32")?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(x).arg(&*x16).arg(&len);
                // SAFETY: x holds n*cols floats (checked), x16 as many halves.
                unsafe { l.launch(grid1((n * cols).div_ceil(256).min(4096), 256, 0)) }
                    .ctx(|| "launching to_f16".into())?;
            }
        }
        Ok(())
    }
}

/// The device address of a scratch buffer `gemm_inputs` sized, with cudarc's guard.
fn scratch_ptr<'a, T>(
    slot: &'a Option<CudaSlice<T>>,
    s: &'a CudaStream,
) -> Result<(u64, SyncOnDrop<'a>), CudaError> {
    slot.as_ref().map(|b| b.device_ptr(s)).ok_or_else(lost)
}

fn lost() -> CudaError {
    CudaError::Other("scratch buffer vanished".into())
}
