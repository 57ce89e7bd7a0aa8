//! Launcher of shaders/matmul.wgsl (batches above matvec's 8 rows), and the one place that
//! picks between it and the matvec (src/matvec.rs) for a matmul of `n` rows.

use plumb_ops::{shapes, Result};

use crate::buffer::{WgpuBuf, WgpuWeight};
use crate::device::WgpuBackend;
use crate::encoder::{Bind, Ctx, Pending};
use crate::matvec::MAX_N;
use crate::pipeline::Kernel;
use crate::quantize::Quantized;
use crate::shaders;

impl WgpuBackend {
    /// `out_i = x · W_iᵀ` for every pair, x quantized once for the quantized matvecs that
    /// share its width.
    pub(crate) fn matmul_impl(
        &self,
        x: &WgpuBuf,
        n: usize,
        pairs: &mut [(&WgpuWeight, &mut WgpuBuf)],
    ) -> Result<()> {
        for (w, out) in pairs.iter() {
            shapes::matmul((w.rows, w.cols), x.len, n, out.len)?;
        }
        self.op(|p, ctx| {
            let mut q8: Option<Quantized> = None;
            for (w, out) in pairs.iter_mut() {
                if n == 0 || w.rows == 0 {
                    continue;
                }
                if n > MAX_N {
                    self.tiled(p, ctx, w, x, n, out)?;
                    continue;
                }
                if !w.format.quantized() {
                    self.matvec(p, ctx, w, x, None, n, out)?;
                    continue;
                }
                if q8.as_ref().is_none_or(|q| q.cols != w.cols) {
                    q8 = Some(self.quantize(p, ctx, x, n, w.cols)?);
                }
                self.matvec(p, ctx, w, x, q8.as_ref(), n, out)?;
            }
            Ok(())
        })
    }

    /// Encodes the tiled matmul of `n` rows.
    fn tiled(
        &self,
        p: &mut Pending,
        ctx: &Ctx<'_>,
        w: &WgpuWeight,
        x: &WgpuBuf,
        n: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        let k = Kernel::new(shaders::MATMUL, "matmul").with(&w.format.constants());
        for part in &w.parts {
            let tiles_m = part.rows.div_ceil(64);
            let params = [
                part.rows as u32,
                w.cols as u32,
                n as u32,
                w.row_words as u32,
                tiles_m as u32,
                w.rows as u32,
                part.row0 as u32,
            ];
            let binds = [Bind::part(part), Bind::r(x), Bind::w(out)];
            p.launch(ctx, &k, &params, &[], &binds, tiles_m * n.div_ceil(64))?;
        }
        Ok(())
    }
}
