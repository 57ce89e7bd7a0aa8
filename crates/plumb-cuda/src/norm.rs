//! Launcher of kernels/norm.cu: `rms_norm` and `add_rms_norm`, which also write the q8_1 copy
//! of their output for the matvec that follows (src/q8.rs), and `layer_norm`.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::Result;

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, int};

impl CudaBackend {
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
        match &residual {
            Some(r) => shapes::add_rms_norm(r.len(), x.len(), w.len(), rows, dim, out.len())?,
            None => shapes::rms_norm(x.len(), w.len(), rows, dim, out.len())?,
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

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_norm_impl(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::layer_norm(x.len(), w.len(), bias.len(), rows, dim, out.len())?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let d = int(dim, "layer_norm", "dim")?;
        let threads = (dim.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32;
        let f = self.func("norm.cu", None, "layer_norm_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(w).arg(bias).arg(out).arg(&d).arg(&eps);
        // SAFETY: x and out hold rows*dim floats, w and bias dim (checked); one block per row.
        unsafe { b.launch(grid1(rows, threads, 0)) }.ctx(|| "launching layer_norm".into())?;
        Ok(())
    }
}
