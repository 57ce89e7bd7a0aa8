//! Elementwise ops: `add` (x += y), `add_bias` (x[r, :] += b), `swiglu` (silu(g) · u).

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
