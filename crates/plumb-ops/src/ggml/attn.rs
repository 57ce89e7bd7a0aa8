//! Attention as ggml's CPU backend computes it over an f16 KV cache, in its two forms.

use super::num::{dot_f16_avx2, dot_f16_avx512, exp_avx2, exp_avx512, f16r, fma, sum_by_halves};

/// One query row against the cache: `q` (f32, one head), `k_at(j)` / `v_at(j)` the head's key
/// and value at position `j` (already f16 values), positions `first .. n_kv` attended (the
/// ones before `first` masked, as a sliding window masks them).
pub struct Row<'a, K, V> {
    pub q: &'a [f32],
    pub k_at: K,
    pub v_at: V,
    pub first: usize,
    pub n_kv: usize,
    pub scale: f32,
}

impl<'a, K, V> Row<'a, K, V>
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    /// The query rounded to f16, as the f16 dot product takes it.
    fn q_f16(&self) -> Vec<f32> {
        self.q.iter().map(|&x| f16r(x)).collect()
    }
}

/// The f16 dot product of the chosen vector width.
fn dot_for(avx512: bool) -> fn(&[f32], &[f32]) -> f32 {
    if avx512 {
        dot_f16_avx512
    } else {
        dot_f16_avx2
    }
}

/// The state of one query row's online softmax over the positions seen so far: the largest
/// score, the sum of `exp(score - largest)`, and the value rows weighted the same way, held
/// in f16 as ggml's f16 accumulator holds them.
struct OnlineSoftmax {
    largest: f32,
    weight_sum: f32,
    acc: Vec<f32>,
    contract: bool,
}

impl OnlineSoftmax {
    fn new(dim: usize, contract: bool) -> Self {
        OnlineSoftmax {
            largest: f32::NEG_INFINITY,
            weight_sum: 0.0,
            acc: vec![0f32; dim],
            contract,
        }
    }

    /// Takes in one position with `score` and value row `v`. A new largest score rescales
    /// what was accumulated by `exp(old - new)` (libm's `expf`, each element rounded back to
    /// f16) and gives this row the weight 1; otherwise nothing is rescaled and the weight is
    /// `exp(score - largest)`. The row is then added element by element as `f16(fma(v, weight,
    /// acc))`, and the sum becomes `sum · rescale + weight` (one FMA when contracted).
    fn push(&mut self, score: f32, v: &[f32]) {
        let (rescale, weight) = if score > self.largest {
            let rescale = (self.largest - score).exp();
            self.largest = score;
            for a in self.acc.iter_mut() {
                *a = f16r(*a * rescale);
            }
            (rescale, 1.0)
        } else {
            (1.0, (score - self.largest).exp())
        };
        for (a, &x) in self.acc.iter_mut().zip(v) {
            *a = f16r(fma(x, weight, *a));
        }
        self.weight_sum = if self.contract {
            fma(self.weight_sum, rescale, weight)
        } else {
            self.weight_sum * rescale + weight
        };
    }

    /// The accumulated row (read back from f16) times `1 / sum` (0 when nothing was added).
    fn finish(self, out: &mut [f32]) {
        let inv = if self.weight_sum == 0.0 {
            0.0
        } else {
            1.0 / self.weight_sum
        };
        for (o, &a) in out.iter_mut().zip(&self.acc) {
            *o = a * inv;
        }
    }
}

/// Flash attention as ggml's CPU kernel computes it with f16 K and V: the query rounded to
/// f16; each position's score the f16 dot product of key and query times `scale`; the
/// positions taken in order by an [`OnlineSoftmax`] whose running output is f16; at the end
/// that output divided by the sum of weights. `contract` fuses the weight-sum update into an
/// FMA; `avx512` picks the f16 dot product of that build.
pub fn flash_row<'a, K, V>(r: Row<'a, K, V>, contract: bool, avx512: bool, out: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    let q = r.q_f16();
    let dot = dot_for(avx512);
    let mut state = OnlineSoftmax::new(out.len(), contract);
    // ggml's kernel skips masked positions.
    for j in r.first..r.n_kv {
        state.push(dot((r.k_at)(j), &q) * r.scale, (r.v_at)(j));
    }
    state.finish(out);
}

/// Exponentiates `w[i] - max` in place in groups of `W` (the vector width) with `exp`, and
/// returns the sum: each group's lanes summed by [`sum_by_halves`] in f32, the group sums
/// added in f64. `w.len()` is a multiple of `W`.
fn exp_in_groups<const W: usize>(w: &mut [f32], max: f32, exp: fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for group in w.chunks_exact_mut(W) {
        let mut lanes = [0f32; W];
        for (lane, x) in lanes.iter_mut().zip(group.iter_mut()) {
            *x = exp(*x - max);
            *lane = *x;
        }
        total += sum_by_halves(lanes) as f64;
    }
    total
}

/// The attention of llama.cpp without flash attention. The row of scores is padded with
/// masked positions to a multiple of 32, as llama.cpp pads its view of the cache; each score
/// is the f16 dot product of key and f16 query, times `scale`, plus the mask (0, which turns
/// `-0.0` into `+0.0`; masked positions are `-inf`). The softmax subtracts the maximum,
/// exponentiates with the vectorized `exp` of the build in groups of its width (8 or 16),
/// sums as [`exp_in_groups`] does, and multiplies by `1 / sum` computed in f64 and rounded to
/// f32. The probabilities are rounded to f16, and each output element is the f16 dot product
/// of the value column (zero past the last position) with them.
pub fn softmax_row<'a, K, V>(r: Row<'a, K, V>, avx512: bool, out: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    let q = r.q_f16();
    let dot = dot_for(avx512);
    let padded = r.n_kv.div_ceil(32) * 32;
    let mut w = vec![f32::NEG_INFINITY; padded];
    for (j, wj) in w.iter_mut().enumerate().take(r.n_kv).skip(r.first) {
        *wj = dot((r.k_at)(j), &q) * r.scale + 0.0;
    }
    let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = if avx512 {
        exp_in_groups::<16>(&mut w, max, exp_avx512)
    } else {
        exp_in_groups::<8>(&mut w, max, exp_avx2)
    };
    let inv = (1.0 / sum) as f32;
    let probs: Vec<f32> = w.iter().map(|&p| f16r(p * inv)).collect();
    let mut column = vec![0f32; padded];
    for (d, o) in out.iter_mut().enumerate() {
        for (j, c) in column.iter_mut().enumerate().take(r.n_kv) {
            *c = (r.v_at)(j)[d];
        }
        *o = dot(&column, &probs);
    }
}
