//! Launcher of shaders/rope.wgsl, and the per-pair frequency tables it reads: each pair's
//! frequency in turns, g_i = θ^(-2i/n_rot) / (2π f_i), computed in f64 and kept as the 64-bit
//! fixed-point fraction ⌊frac(g_i) · 2^64⌋ (the whole turns in g_i drop out of p · g_i mod 1
//! for an integer position p). A table is made once per (θ, n_rot, factors) and kept.

use std::sync::Arc;

use plumb_ops::{shapes, Backend, Result, RopeParams, RopeStyle};

use crate::buffer::{Tracked, WgpuBuf};
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

/// Rope frequency tables by (θ bits, n_rot, factor bits).
pub(crate) type FreqTables = std::collections::HashMap<(u32, usize, Vec<u32>), Arc<Tracked>>;

/// The table of one (θ, n_rot, factors): (low word, high word) of each pair's fixed-point
/// frequency.
pub(crate) fn freq_words(theta: f32, n_rot: usize, factors: Option<&[f32]>) -> Vec<u32> {
    let mut words = Vec::with_capacity(n_rot);
    for i in 0..n_rot / 2 {
        let inv_freq = (theta as f64).powf(-2.0 * i as f64 / n_rot as f64);
        let ff = factors.map_or(1.0, |f| f[i] as f64);
        let g = inv_freq / ff / std::f64::consts::TAU;
        // frac(g) · 2^64, saturating at the top (a fraction just under 1).
        let fixed = ((g - g.floor()) * 18_446_744_073_709_551_616.0) as u64;
        words.push(fixed as u32);
        words.push((fixed >> 32) as u32);
    }
    words
}

impl WgpuBackend {
    pub(crate) fn rope_impl(
        &self,
        x: &mut WgpuBuf,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&WgpuBuf>,
    ) -> Result<()> {
        let n = positions.len();
        shapes::rope(
            x.len,
            n,
            n_heads,
            head_dim,
            p.n_rot,
            freq_factors.map(|f| f.len),
        )?;
        let half = p.n_rot / 2;
        if n * n_heads * half == 0 {
            return Ok(());
        }
        let table = self.freq_table(p, freq_factors)?;
        let neox = (p.style == RopeStyle::Neox) as u32;
        let params = [n as u32, n_heads as u32, head_dim as u32, half as u32, neox];
        let k = Kernel::new(shaders::ROPE, "rope");
        let groups = (n * n_heads * half).div_ceil(256);
        let binds = [Bind::tracked(&table, false), Bind::w(x)];
        self.op(|q, ctx| q.launch(ctx, &k, &params, positions, &binds, groups))
    }

    /// The kept table of `p` and the factors, made on first use. The factors are read from
    /// the buffer's host copy (src/buffer.rs), or from the device when it has none.
    fn freq_table(&self, p: RopeParams, ff: Option<&WgpuBuf>) -> Result<Arc<Tracked>> {
        let half = p.n_rot / 2;
        let factors = match ff {
            None => None,
            Some(f) => Some(match &f.host {
                Some(h) => h[..half].to_vec(),
                None => {
                    let mut v = vec![0f32; half];
                    self.download(f, &mut v)?;
                    v
                }
            }),
        };
        let bits = factors.iter().flatten().map(|v| v.to_bits()).collect();
        let key = (p.theta.to_bits(), p.n_rot, bits);
        let mut tables = self.freqs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(&key) {
            return Ok(t.clone());
        }
        let words = freq_words(p.theta, p.n_rot, factors.as_deref());
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let usage = wgpu::BufferUsages::STORAGE;
        let t =
            Arc::new(self.buffer(bytes.len() as u64, usage, "rope frequencies", Some(&bytes))?);
        tables.insert(key, t.clone());
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::freq_words;

    #[test]
    fn frequencies_are_fixed_point_turns() {
        // Pair 0 turns by 1 rad per position: 1/2π turns = 0.159154943091895... · 2^64.
        let w = freq_words(10000.0, 4, None);
        let fixed = (w[1] as u64) << 32 | w[0] as u64;
        let want = 0.159_154_943_091_895_34_f64;
        assert!((fixed as f64 / 18_446_744_073_709_551_616.0 - want).abs() < 1e-15);
        // Pair 1 of n_rot 4, base 10000: 0.01 rad; with factor 0.5 it doubles.
        let ff = freq_words(10000.0, 4, Some(&[1.0, 0.5]));
        let f1 = |w: &[u32]| ((w[3] as u64) << 32 | w[2] as u64) as f64 / 2f64.powi(64);
        assert!((f1(&w) - 0.01 / std::f64::consts::TAU).abs() < 1e-15);
        assert!((f1(&ff) - 0.02 / std::f64::consts::TAU).abs() < 1e-15);
        // A factor below 1/2π makes more than a turn per position: only the fraction stays (the
        // factor is an f32, as the model stores it).
        let big = freq_words(10000.0, 2, Some(&[0.1]));
        let g = 1.0 / (0.1f32 as f64) / std::f64::consts::TAU;
        let got = ((big[1] as u64) << 32 | big[0] as u64) as f64 / 2f64.powi(64);
        assert!((got - (g - g.floor())).abs() < 1e-14);
    }
}
