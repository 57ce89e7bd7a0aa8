//! Launcher of shaders/quantize.wgsl: a batch of x as 8-bit blocks in the backend's scratch
//! buffer (src/scratch.rs), for matvec_q8.

use std::sync::Arc;

use plumb_ops::Result;

use crate::buffer::{Tracked, WgpuBuf};
use crate::device::WgpuBackend;
use crate::encoder::{Bind, Ctx, Pending};
use crate::pipeline::Kernel;
use crate::shaders;

/// `n` rows of `cols` values quantized: the buffer and the word where the (d, Σx) pairs
/// start (the packed bytes come first, 8 words per block).
pub(crate) struct Quantized {
    pub(crate) buf: Arc<Tracked>,
    pub(crate) xs_at: u32,
    pub(crate) cols: usize,
}

impl WgpuBackend {
    /// Encodes the quantization of `n` rows of `x` (`cols` a multiple of 32).
    pub(crate) fn quantize(
        &self,
        p: &mut Pending,
        ctx: &Ctx<'_>,
        x: &WgpuBuf,
        n: usize,
        cols: usize,
    ) -> Result<Quantized> {
        let blocks = n * cols / 32;
        let xs_at = blocks * 8;
        let buf = self.q8_scratch(((xs_at + 2 * blocks) * 4) as u64)?;
        let k = Kernel::new(shaders::QUANTIZE, "quantize");
        let params = [n as u32, cols as u32, (cols / 32) as u32, xs_at as u32];
        let binds = [Bind::r(x), Bind::tracked(&buf, true)];
        p.launch(ctx, &k, &params, &[], &binds, blocks.div_ceil(64))?;
        Ok(Quantized {
            buf,
            xs_at: xs_at as u32,
            cols,
        })
    }
}
