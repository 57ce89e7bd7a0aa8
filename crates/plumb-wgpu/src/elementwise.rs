//! Launcher of shaders/elementwise.wgsl: add, add_bias, swiglu.

use plumb_ops::{shapes, Result};

use crate::buffer::WgpuBuf;
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

impl WgpuBackend {
    /// `x += y` over `len` values.
    pub(crate) fn add_impl(&self, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) -> Result<()> {
        shapes::add(x.len, y.len, len)?;
        self.elementwise("add", len, 1, vec![Bind::w(x), Bind::r(y)])
    }

    /// `x[r, :] += bias` for `rows` rows of `dim`.
    pub(crate) fn add_bias_impl(
        &self,
        x: &mut WgpuBuf,
        bias: &WgpuBuf,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        shapes::add_bias(x.len, bias.len, rows, dim)?;
        self.elementwise("add_bias", rows * dim, dim, vec![Bind::w(x), Bind::r(bias)])
    }

    /// `out = silu(gate) * up` over `len` values.
    pub(crate) fn swiglu_impl(
        &self,
        gate: &WgpuBuf,
        up: &WgpuBuf,
        len: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        shapes::swiglu(gate.len, up.len, len, out.len)?;
        let binds = vec![Bind::w(out), Bind::r(gate), Bind::r(up)];
        self.elementwise("swiglu", len, 1, binds)
    }

    fn elementwise(
        &self,
        entry: &'static str,
        len: usize,
        dim: usize,
        binds: Vec<Bind<'_>>,
    ) -> Result<()> {
        let k = Kernel::new(shaders::ELEMENTWISE, entry);
        let params = [len as u32, dim.max(1) as u32];
        self.op(|p, ctx| p.launch(ctx, &k, &params, &[], &binds, len.div_ceil(256)))
    }
}
