//! Elementwise ops: `add` (x += y), `add_bias` (x[r, :] += b), `swiglu` (silu(g) · u),
//! `geglu` (gelu_tanh(g) · u), `gelu` (the erf form), `scale` (x *= s), `softcap`
//! (x = c · tanh(x / c)).

use crate::error::Result;
use crate::shapes;

pub fn add(x: &mut [f32], y: &[f32], len: usize) -> Result<()> {
    shapes::add(x.len(), y.len(), len)?;
    for i in 0..len {
        x[i] += y[i];
    }
    Ok(())
}

pub fn add_bias(x: &mut [f32], b: &[f32], rows: usize, dim: usize) -> Result<()> {
    shapes::add_bias(x.len(), b.len(), rows, dim)?;
    for r in 0..rows {
        for i in 0..dim {
            x[r * dim + i] += b[i];
        }
    }
    Ok(())
}

/// `silu(g) = g / (1 + e^-g)`.
pub fn swiglu(gate: &[f32], up: &[f32], len: usize, out: &mut [f32]) -> Result<()> {
    shapes::swiglu(gate.len(), up.len(), len, out.len())?;
    for i in 0..len {
        let g = gate[i] as f64;
        out[i] = (g / (1.0 + (-g).exp()) * up[i] as f64) as f32;
    }
    Ok(())
}

/// `gelu_tanh(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))`: gelu_tanh(1) = 0.841192.
pub fn geglu(gate: &[f32], up: &[f32], len: usize, out: &mut [f32]) -> Result<()> {
    shapes::gated("geglu", gate.len(), up.len(), len, out.len())?;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    for i in 0..len {
        let g = gate[i] as f64;
        let t = (c * (g + 0.044715 * g * g * g)).tanh();
        out[i] = (0.5 * g * (1.0 + t) * up[i] as f64) as f32;
    }
    Ok(())
}

/// `gelu(x) = x/2 · (1 + erf(x / √2))`: gelu(1) = 0.841345.
pub fn gelu(x: &[f32], len: usize, out: &mut [f32]) -> Result<()> {
    shapes::unary("gelu", x.len(), len, out.len())?;
    for i in 0..len {
        let v = x[i] as f64;
        out[i] = (0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))) as f32;
    }
    Ok(())
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32, len: usize) -> Result<()> {
    shapes::unary("scale", x.len(), len, len)?;
    for v in &mut x[..len] {
        *v = (*v as f64 * s as f64) as f32;
    }
    Ok(())
}

/// `x = cap · tanh(x / cap)`: values far below `cap` pass almost unchanged, every value stays
/// inside `(-cap, cap)`.
pub fn softcap(x: &mut [f32], cap: f32, len: usize) -> Result<()> {
    shapes::unary("softcap", x.len(), len, len)?;
    let c = cap as f64;
    for v in &mut x[..len] {
        *v = (c * (*v as f64 / c).tanh()) as f32;
    }
    Ok(())
}

/// The error function to ~1e-15: its Maclaurin series below |x| = 3, else the continued
/// fraction of erfc (evaluated backwards, 60 terms), both plain f64 loops.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        // erf(a) = 2/√π Σ (-1)^n a^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (a, a, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = e^(-a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...))))
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    r.copysign(x)
}
