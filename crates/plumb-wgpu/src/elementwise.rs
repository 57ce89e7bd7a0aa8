//! Launcher of shaders/elementwise.wgsl: add, add_bias, swiglu, geglu, scale, softcap.

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
        self.elementwise("add", len, 1, 0.0, vec![Bind::w(x), Bind::r(y)])
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
        let binds = vec![Bind::w(x), Bind::r(bias)];
        self.elementwise("add_bias", rows * dim, dim, 0.0, binds)
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
        self.elementwise("swiglu", len, 1, 0.0, binds)
    }

    /// `out = gelu_tanh(gate) * up` over `len` values.
    pub(crate) fn geglu_impl(
        &self,
        gate: &WgpuBuf,
        up: &WgpuBuf,
        len: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        shapes::gated("geglu", gate.len, up.len, len, out.len)?;
        let binds = vec![Bind::w(out), Bind::r(gate), Bind::r(up)];
        self.elementwise("geglu", len, 1, 0.0, binds)
    }

    /// `x *= s` over `len` values.
    pub(crate) fn scale_impl(&self, x: &mut WgpuBuf, s: f32, len: usize) -> Result<()> {
        shapes::unary("scale", x.len, len, len)?;
        self.elementwise("scale", len, 1, s, vec![Bind::w(x)])
    }

    /// `x = cap · tanh(x / cap)` over `len` values.
    pub(crate) fn softcap_impl(&self, x: &mut WgpuBuf, cap: f32, len: usize) -> Result<()> {
        shapes::unary("softcap", x.len, len, len)?;
        self.elementwise("softcap", len, 1, cap, vec![Bind::w(x)])
    }

    fn elementwise(
        &self,
        entry: &'static str,
        len: usize,
        dim: usize,
        f: f32,
        binds: Vec<Bind<'_>>,
    ) -> Result<()> {
        let k = Kernel::new(shaders::ELEMENTWISE, entry);
        let params = [len as u32, dim.max(1) as u32, f.to_bits()];
        self.op(|p, ctx| p.launch(ctx, &k, &params, &[], &binds, len.div_ceil(256)))
    }
}
