//! Layer normalization with a weight and a bias (BERT's LayerNorm).
//!
//! `out[r, i] = (x[r, i] - μ_r) / sqrt(σ²_r + eps) * w[i] + b[i]` for each of `rows` rows of
//! `dim`, with `μ_r` the row's mean and `σ²_r` its population variance. Row [1, 2, 3], w = 1,
//! b = 0, eps = 0: μ = 2, σ² = 2/3, out = [-1.2247, 0, 1.2247].

use crate::error::Result;
use crate::shapes;

#[allow(clippy::too_many_arguments)]
pub fn reference(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::layer_norm(x.len(), w.len(), b.len(), rows, dim, out.len())?;
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..dim {
            let y = (row[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64;
            out[r * dim + i] = y as f32;
        }
    }
    Ok(())
}
