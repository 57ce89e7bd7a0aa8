//! The activations beyond swiglu and the elementwise scalings: geglu (Gemma's gated FFN),
//! gelu (BERT's, the erf form), scale and softcap. Plain loops over `exp` (`mv.rs`),
//! multiversioned and vectorized by the compiler; every element is computed by the same
//! operations wherever it falls in the call, so results do not depend on the batch.

use super::matmul::SendPtr;
use super::mv::{exp, multiversion};
use super::CpuBackend;
use crate::error::Result;
use crate::shapes;

/// `tanh(y)` to a few ulp relative: `1 - 2 / (e^(2|y|) + 1)` (exact limit 1 through `exp`'s
/// clamp) where that has no cancellation, its odd Taylor series to y⁹ below |y| = 1/4 (next
/// term under 1e-8 relative), the sign restored.
#[inline(always)]
fn tanh(y: f32) -> f32 {
    let a = y.abs();
    let far = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let a2 = a * a;
    let near = a
        * (1.0
            + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))));
    (if a < 0.25 { near } else { far }).copysign(y)
}

/// `erfc(a)` for `a ≥ 0` to 1.2e-7 relative (a Chebyshev fit, Numerical Recipes' `erfcc`):
/// `t · e^(-a² + P(t))` with `t = 1 / (1 + a/2)`.
#[inline(always)]
fn erfc(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * a);
    let mut p = 0.170_872_77f32;
    for c in [
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        p = p * t + c;
    }
    t * exp(-a * a + p)
}

/// `1 + erf(x)`, with relative accuracy for negative x too (where it is `erfc(|x|)`, and
/// `1 + erf` would cancel).
#[inline(always)]
fn one_plus_erf(x: f32) -> f32 {
    let q = erfc(x.abs());
    if x < 0.0 {
        q
    } else {
        2.0 - q
    }
}

multiversion! {
    fn geglu_into(g: &[f32], u: &[f32], out: &mut [f32]) {
        // gelu_tanh(g) = g/2 · (1 + tanh(y)) = g / (1 + e^(-2y)), y = √(2/π) (g + 0.044715 g³):
        // the second form does not cancel for negative g.
        const C2: f32 = 2.0 * 0.797_884_6;
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            let y2 = C2 * (g + 0.044715 * g * g * g);
            *o = g / (1.0 + exp(-y2)) * u;
        }
    }
}

multiversion! {
    fn gelu_into(x: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = 0.5 * x * one_plus_erf(x * std::f32::consts::FRAC_1_SQRT_2);
        }
    }
}

multiversion! {
    fn scale_in(x: &mut [f32], s: f32) {
        for v in x.iter_mut() {
            *v *= s;
        }
    }
}

multiversion! {
    fn softcap_in(x: &mut [f32], cap: f32) {
        let inv = 1.0 / cap;
        for v in x.iter_mut() {
            *v = cap * tanh(*v * inv);
        }
    }
}

/// `out[r]` for every range `r` of `0..len`, on the pool when the call is large.
fn par_map(
    be: &CpuBackend,
    len: usize,
    out: &mut [f32],
    f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
) {
    let op = SendPtr(out.as_mut_ptr());
    be.par_ranges(len, 64, 4 * len, &|r| {
        // SAFETY: `r` lies within `len` ≤ `out.len()` (checked by every caller) and belongs
        // to this share alone.
        let o = unsafe { std::slice::from_raw_parts_mut(op.get().add(r.start), r.len()) };
        f(r, o)
    });
}

pub(crate) fn geglu(
    be: &CpuBackend,
    g: &[f32],
    u: &[f32],
    len: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::gated("geglu", g.len(), u.len(), len, out.len())?;
    par_map(be, len, out, &|r, o| {
        geglu_into(be.level, &g[r.clone()], &u[r], o)
    });
    Ok(())
}

pub(crate) fn gelu(be: &CpuBackend, x: &[f32], len: usize, out: &mut [f32]) -> Result<()> {
    shapes::unary("gelu", x.len(), len, out.len())?;
    par_map(be, len, out, &|r, o| gelu_into(be.level, &x[r], o));
    Ok(())
}

pub(crate) fn scale(be: &CpuBackend, x: &mut [f32], s: f32, len: usize) -> Result<()> {
    shapes::unary("scale", x.len(), len, len)?;
    par_map(be, len, x, &|_, o| scale_in(be.level, o, s));
    Ok(())
}

pub(crate) fn softcap(be: &CpuBackend, x: &mut [f32], cap: f32, len: usize) -> Result<()> {
    shapes::unary("softcap", x.len(), len, len)?;
    par_map(be, len, x, &|_, o| softcap_in(be.level, o, cap));
    Ok(())
}
