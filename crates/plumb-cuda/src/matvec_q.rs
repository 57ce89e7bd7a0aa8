//! Launcher of kernels/matvec_q.cu (v1 of the decode matvec: f32 activations, any stored
//! format dequantized in registers).

use cudarc::driver::{CudaSlice, PushKernelArg};
use plumb_ops::Result;

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, Dims};
use crate::weight::CudaWeight;

impl CudaBackend {
    /// v1 (variants warp_per_row and tiled): f32 activations, `n` ≤ MATVEC_MAX_N tokens.
    pub(crate) fn matvec_q(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        d: &Dims,
        sfx: &'static str,
    ) -> Result<()> {
        let tiled = self.variant("matvec") == Some("tiled");
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
}
