//! Rotary position embedding, in place on `x: [n_tokens, n_heads, head_dim]`.
//!
//! For pair `i` (0 ≤ i < n_rot/2) of a head at position `p`:
//! `θ_i = p · base^(-2i / n_rot) / f_i` (f_i = freq_factors[i], else 1) and
//! `(a, b) ← (a cos θ − b sin θ, a sin θ + b cos θ)`, where the pair is
//! `(x[2i], x[2i+1])` (Normal) or `(x[i], x[i + n_rot/2])` (NeoX).
//! Worked example (Normal, head_dim 4, base 10000, p = 1): pair 0 turns by 1 rad, pair 1 by 0.01.

use crate::backend::{RopeParams, RopeStyle};
use crate::error::Result;
use crate::shapes;

pub fn reference(
    x: &mut [f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    p: RopeParams,
    freq_factors: Option<&[f32]>,
) -> Result<()> {
    let (n, ff) = (positions.len(), freq_factors.map(<[f32]>::len));
    shapes::rope(x.len(), n, n_heads, head_dim, p.n_rot, ff)?;
    let half = p.n_rot / 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for i in 0..half {
                let inv_freq = (p.theta as f64).powf(-2.0 * i as f64 / p.n_rot as f64);
                let ff = freq_factors.map_or(1.0, |f| f[i] as f64);
                let angle = pos as f64 * inv_freq / ff;
                let (s, c) = angle.sin_cos();
                let (ia, ib) = match p.style {
                    RopeStyle::Normal => (base + 2 * i, base + 2 * i + 1),
                    RopeStyle::Neox => (base + i, base + i + half),
                };
                let (a, b) = (x[ia] as f64, x[ib] as f64);
                x[ia] = (a * c - b * s) as f32;
                x[ib] = (a * s + b * c) as f32;
            }
        }
    }
    Ok(())
}
