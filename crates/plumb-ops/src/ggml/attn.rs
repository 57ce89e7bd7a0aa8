//! Attention as ggml's CPU backend computes it over an f16 KV cache, in its two forms.

use super::num::{dot_f16, dot_f16_512, f16r, fma, hsum8, reduce16, v_expf, v_expf_512};

/// One query row against the cache: `q` (f32, one head), `k_at(j)` / `v_at(j)` the head's key
/// and value at position `j` (already f16 values), `n_kv` positions attended.
pub struct Row<'a, K, V> {
    pub q: &'a [f32],
    pub k_at: K,
    pub v_at: V,
    pub n_kv: usize,
    pub scale: f32,
}

/// `ggml_compute_forward_flash_attn_ext_f16_one_chunk` with F16 K and V: Q is rounded to
/// f16; each score is [`dot_f16`] times the scale; online softmax keeps the running output in
/// **f16**: on a new maximum `M` the output is scaled by `expf(M_old - M)` (and rounded back
/// to f16), otherwise the value row's weight is `expf(s - M)`; every value row is added as
/// `out = f16(fma(v, weight, out))`; the running sum is `S = S · ms + vs`. At the end the
/// output is read back to f32 and multiplied by `1 / S`.
pub fn flash_row<'a, K, V>(r: Row<'a, K, V>, contract: bool, avx512: bool, out: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    let q16: Vec<f32> = r.q.iter().map(|&x| f16r(x)).collect();
    let dv = out.len();
    let mut acc = vec![0f32; dv];
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0f32;
    let dot = if avx512 { dot_f16_512 } else { dot_f16 };
    for j in 0..r.n_kv {
        let s = dot((r.k_at)(j), &q16) * r.scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            let m_old = m;
            m = s;
            ms = (m_old - m).exp();
            for a in acc.iter_mut() {
                *a = f16r(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        for (a, &x) in acc.iter_mut().zip((r.v_at)(j)) {
            *a = f16r(fma(x, vs, *a));
        }
        sum = if contract {
            fma(sum, ms, vs)
        } else {
            sum * ms + vs
        };
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

/// The attention of llama.cpp without flash attention: `KQ = K·f16(Q)` ([`dot_f16`]),
/// `soft_max_ext` (scale, causal mask, max, exponentials by [`v_expf`] eight at a time with
/// each group's [`hsum8`] added in double, multiplied by `(float)(1.0 / sum)`), then the
/// probabilities rounded to f16 and dotted with the (transposed) f16 values by [`dot_f16`].
/// The row is padded with masked positions to a multiple of 32, as llama.cpp pads its view
/// of the cache.
pub fn softmax_row<'a, K, V>(r: Row<'a, K, V>, avx512: bool, out: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    let q16: Vec<f32> = r.q.iter().map(|&x| f16r(x)).collect();
    let dot = if avx512 { dot_f16_512 } else { dot_f16 };
    let padded = r.n_kv.div_ceil(32) * 32;
    let mut w = vec![f32::NEG_INFINITY; padded];
    for (j, wj) in w.iter_mut().enumerate().take(r.n_kv) {
        *wj = dot((r.k_at)(j), &q16) * r.scale + 0.0;
    }
    let max = w.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0f64;
    if avx512 {
        for g in w.chunks_mut(16) {
            let mut e = [0f32; 16];
            for (l, x) in g.iter_mut().enumerate() {
                e[l] = v_expf_512(*x - max);
                *x = e[l];
            }
            sum += reduce16(&e) as f64;
        }
    } else {
        for g in w.chunks_exact_mut(8) {
            let mut e = [0f32; 8];
            for (l, x) in g.iter_mut().enumerate() {
                e[l] = v_expf(*x - max);
                *x = e[l];
            }
            sum += hsum8(&e) as f64;
        }
    }
    let inv = (1.0 / sum) as f32;
    let p16: Vec<f32> = w.iter().map(|&p| f16r(p * inv)).collect();
    let mut col = vec![0f32; padded];
    for (d, o) in out.iter_mut().enumerate() {
        for (j, c) in col.iter_mut().enumerate().take(r.n_kv) {
            *c = (r.v_at)(j)[d];
        }
        *o = dot(&col, &p16);
    }
}
