//! Launcher of shaders/norm.wgsl: rms_norm and add_rms_norm.

use plumb_ops::{shapes, Result};

use crate::buffer::WgpuBuf;
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

impl WgpuBackend {
    /// rms_norm, or add_rms_norm when there is a residual.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_impl(
        &self,
        residual: Option<&mut WgpuBuf>,
        x: &WgpuBuf,
        w: &WgpuBuf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        let params = [rows as u32, dim as u32, eps.to_bits()];
        let mut binds = vec![Bind::r(x), Bind::r(w)];
        let entry = match residual {
            Some(r) => {
                shapes::add_rms_norm(r.len, x.len, w.len, rows, dim, out.len)?;
                binds.push(Bind::w(out));
                binds.push(Bind::w(r));
                "add_rms_norm"
            }
            None => {
                shapes::rms_norm(x.len, w.len, rows, dim, out.len)?;
                binds.push(Bind::w(out));
                "rms_norm"
            }
        };
        let k = Kernel::new(shaders::NORM, entry);
        self.op(|p, ctx| p.launch(ctx, &k, &params, &[], &binds, rows))
    }
}
