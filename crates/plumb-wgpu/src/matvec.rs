//! Launcher of shaders/matvec.wgsl: up to 8 rows of x against a weight, with 8-bit
//! activations for the quantized formats (matvec_q8) and f32 ones for the float formats
//! (matvec_f32).

use plumb_ops::Result;

use crate::buffer::{WgpuBuf, WgpuWeight};
use crate::device::WgpuBackend;
use crate::encoder::{Bind, Ctx, Pending};
use crate::pipeline::Kernel;
use crate::quantize::Quantized;
use crate::shaders;

/// The most rows of x the matvec takes (its accumulators); more go to the tiled matmul.
pub(crate) const MAX_N: usize = 8;

/// Invocations per weight row: about one per 32-element unit, a power of two from 4 to 64.
fn threads_per_row(units: usize) -> usize {
    units.next_power_of_two().clamp(4, 64)
}

impl WgpuBackend {
    /// Encodes `out = x · Wᵀ` for `n ≤ MAX_N` rows; `q8` is x quantized when the weight's
    /// format is quantized.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matvec(
        &self,
        p: &mut Pending,
        ctx: &Ctx<'_>,
        w: &WgpuWeight,
        x: &WgpuBuf,
        q8: Option<&Quantized>,
        n: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        let units = w.cols.div_ceil(32);
        let tpr = threads_per_row(units);
        let mut constants = w.format.constants().to_vec();
        constants.push(("TPR", tpr as f64));
        let xs_at = q8.map_or(0, |q| q.xs_at);
        let entry = if q8.is_some() {
            "matvec_q8"
        } else {
            "matvec_f32"
        };
        let k = Kernel::new(shaders::MATVEC, entry).with(&constants);
        for part in &w.parts {
            let params = [
                part.rows as u32,
                w.cols as u32,
                n as u32,
                w.row_words as u32,
                units as u32,
                xs_at,
                w.rows as u32,
                part.row0 as u32,
            ];
            let groups = part.rows.div_ceil(64 / tpr);
            // Bindings 2..5: weight, 8-bit x, f32 x, out; the entry that does not read one of
            // the two x's gets x there.
            let xq = match q8 {
                Some(q) => Bind::tracked(&q.buf, false),
                None => Bind::r(x),
            };
            let binds = [Bind::part(part), xq, Bind::r(x), Bind::w(out)];
            p.launch(ctx, &k, &params, &[], &binds, groups)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_share_workgroups_when_they_are_short() {
        assert_eq!(super::threads_per_row(1), 4);
        assert_eq!(super::threads_per_row(18), 32); // 576 columns
        assert_eq!(super::threads_per_row(48), 64); // 1536 columns
        assert_eq!(super::threads_per_row(500), 64);
    }
}
