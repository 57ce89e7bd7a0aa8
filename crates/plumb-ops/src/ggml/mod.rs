//! `GgmlBackend`: a cross-checking backend that reproduces llama.cpp's CPU numerics (ggml's
//! x86 kernels as a native AVX2 or AVX-512 build runs them), so that its greedy outputs can be
//! compared with llama.cpp's token for token.
//!
//! Two engines that both compute "the same" model disagree wherever the model's top two
//! tokens are closer than their rounding differences, and greedy text then forks. The other
//! backends here are accurate (f32 KV cache, f64 or wide accumulation); this one instead
//! rounds where ggml rounds and sums in ggml's order:
//!
//! - **Matmul** (Q4_1 and Q8_0 weights): each activation row is quantized per 32-element
//!   block to the weight type's `vec_dot_type` (Q8_1 for Q4_1, Q8_0 for Q8_0) with the AVX2
//!   quantizer (AVX-512 builds run it too): `d = amax/127`, `q = round_half_even(x ·
//!   127/amax)`, `d` stored as f16 and, for Q8_1, `s = f16(d · Σq)` with the unrounded `d`.
//!   The block dot products accumulate integer lane sums (four products per lane, eight
//!   lanes) with FMA into eight f32 lanes, `fma(d_w · d_x, lane, acc)`, sum the lanes by
//!   halves ([`num::sum_by_halves`]), and for Q4_1 add the separate scalar sum `Σ m_w · s_x`
//!   ([`quant`]). Other weight types fall back to the reference matmul (not mirrored).
//! - **RMSNorm**: sum of squares (each square in f32) accumulated in double, `mean` narrowed
//!   to f32, `scale = 1/sqrtf(mean + eps)`, `y = x · scale` rounded to f32, *then* `y · w`
//!   (llama.cpp's graph multiplies by the norm weight in a separate op).
//! - **RoPE**: `theta_scale = powf(base, -2/n_dims)`; per position the angle starts at
//!   `(float)p` and is multiplied by `theta_scale` pair after pair (a running f32 product, not
//!   a power per pair), divided by the frequency factor when there is one; `cosf`/`sinf`;
//!   `x0·cos - x1·sin`, `x0·sin + x1·cos` in f32, contracted to `fma(x0, cos, -(x1·sin))`
//!   and `fma(x0, sin, x1·cos)` as the compiler of a native build emits them.
//! - **KV cache in f16**: keys (after RoPE) and values are rounded to f16 when written, and
//!   again (idempotently) when attention reads them.
//! - **Attention**: by default flash attention as ggml runs it on the CPU ([`attn::flash_row`]:
//!   f16 Q, f16 K·Q dot, online softmax with the running output held in f16); or the
//!   unfused path ([`attn::softmax_row`]: f16 K·Q, `soft_max_ext` with ggml's vectorized
//!   `expf`, f16 probabilities times f16 V), chosen by [`GgmlBackend::flash`].
//! - **SwiGLU**: `silu(g) · u` with `silu(x) = x / (1 + exp(-x))` and ggml's vectorized
//!   `exp` ([`num::exp_avx512`] or [`num::exp_avx2`]), the product rounded once.
//! - **Embedding**: the dequantized table row (exact). Residual adds and biases in f32.
//!
//! Scalar expressions such as `offsets += m·s` (Q4_1), `sum = sum·rescale + weight` (the
//! online softmax) and the RoPE rotation become FMAs when the C compiler contracts
//! floating-point expressions (GCC's default in GNU mode, clang's within an expression);
//! [`GgmlBackend::contract`] picks either. The f16 dot product, the vectorized `exp` and the
//! softmax sums differ between ggml's AVX2 and AVX-512 builds; [`GgmlBackend::avx512`] picks
//! either. All FMAs here are exact single roundings computed without target features
//! ([`num::fma`]), so the backend gives the same bits on every machine.
//!
//! The defaults (flash attention, contraction, AVX-512 forms) reproduce the greedy
//! continuations of `fixtures/smollm2-135m-instruct-q4_1/greedy.json`, which came from a
//! native x86 build with AVX-512: every token of every prompt, with no near-tie resolved
//! differently. Without the RoPE contraction, with the AVX2 forms, or with the unfused
//! attention, near-ties resolve differently on several prompts, so each of these details
//! matters.
//!
//! Weight rows are spread over threads; each output element is computed by exactly one
//! thread with a fixed order, so results do not depend on the thread count or the batch.

pub mod attn;
pub mod num;
pub mod quant;

#[cfg(test)]
mod tests;

use plumb_core::{GgmlType, HostWeight};

use crate::backend::{window_start, AttnParams, Backend, RopeParams, RopeStyle};
use crate::error::{ensure, Result};
use crate::host::host_buffers;
use crate::{ops, shapes};

use attn::Row;
use num::{f16r, silu};
use quant::{dot_q4_1, dot_q8_0, quantize_row, Q8Block, QK};

/// The backend mirroring ggml's CPU arithmetic. Buffers are host vectors and weights stay in
/// their stored bytes, like [`crate::ReferenceBackend`].
#[derive(Debug, Clone)]
pub struct GgmlBackend {
    /// Flash attention (llama.cpp's `-fa on`, and what `-fa auto` picks on the CPU) when
    /// true; the unfused KQ / softmax / KQV path when false.
    pub flash: bool,
    /// Whether scalar `a·b + c` expressions in the mirrored kernels are fused into FMAs.
    pub contract: bool,
    /// The AVX-512 forms of ggml's f16 dot product, `expf` and softmax sums (what a native
    /// build uses on a machine with AVX-512 F and DQ) instead of the AVX2 ones. The quantized
    /// kernels are the same on both.
    pub avx512: bool,
    /// Threads for matmuls (at least 1).
    pub threads: usize,
}

impl Default for GgmlBackend {
    fn default() -> Self {
        GgmlBackend {
            flash: true,
            contract: true,
            avx512: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl GgmlBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl GgmlBackend {
    /// `out[t, r] = W[r, :] · x[t, :]` with ggml's quantized dot products.
    fn matmul_quant(&self, w: &HostWeight, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        let (rows, cols) = (w.rows, w.cols);
        let acts: Vec<Vec<Q8Block>> = (0..n)
            .map(|t| quantize_row(&x[t * cols..(t + 1) * cols]))
            .collect();
        let ty = w.ty;
        let contract = self.contract;
        let dot = |r: usize, a: &[Q8Block]| -> f32 {
            match ty {
                GgmlType::Q4_1 => dot_q4_1(w.row(r), a, contract),
                _ => dot_q8_0(w.row(r), a),
            }
        };
        let threads = self.threads.max(1).min(rows.max(1));
        let per = rows.div_ceil(threads);
        // Each chunk of weight rows yields its outputs as [row][token].
        let chunks: Vec<Vec<f32>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let (lo, hi) = (i * per, ((i + 1) * per).min(rows));
                    let acts = &acts;
                    let dot = &dot;
                    sc.spawn(move || {
                        let mut v = Vec::with_capacity((hi.saturating_sub(lo)) * n);
                        for r in lo..hi {
                            for a in acts.iter() {
                                v.push(dot(r, a));
                            }
                        }
                        v
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (i, c) in chunks.iter().enumerate() {
            let lo = i * per;
            ensure(
                c.len() == (((i + 1) * per).min(rows).saturating_sub(lo)) * n,
                "matmul",
                || "a matmul worker failed".into(),
            )?;
            for (k, &v) in c.iter().enumerate() {
                let (r, t) = (lo + k / n, k % n);
                out[t * rows + r] = v;
            }
        }
        Ok(())
    }

    /// RMSNorm of `rows` rows: each square rounded to f32 and summed in f64, the mean narrowed
    /// to f32, `scale = 1 / sqrtf(mean + eps)`, then `(x · scale) · w`, two f32 roundings.
    fn rms_rows(x: &[f32], w: &[f32], eps: f32, rows: usize, dim: usize, out: &mut [f32]) {
        for r in 0..rows {
            let xr = &x[r * dim..(r + 1) * dim];
            let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / dim as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, &v), &wi) in out[r * dim..(r + 1) * dim].iter_mut().zip(xr).zip(w) {
                *o = (v * scale) * wi;
            }
        }
    }
}

/// The `(cos, sin)` of every rotated pair's angle at position `pos`: the angle starts at
/// `pos` (as f32) and is multiplied by `theta_scale` from one pair to the next (a running f32
/// product, not a power per pair), divided by the pair's frequency factor when there is one;
/// libm's `cosf` and `sinf` of it.
fn rope_angles(pos: u32, theta_scale: f32, freq: Option<&[f32]>, out: &mut [(f32, f32)]) {
    let mut angle = pos as f32;
    for (i, cs) in out.iter_mut().enumerate() {
        let a = freq.map_or(angle, |f| angle / f[i]);
        *cs = (a.cos(), a.sin());
        angle *= theta_scale;
    }
}

/// Rotates the pairs of one head by `angles`: pair `i` is elements `(2i, 2i + 1)` (normal
/// style) or `(i, i + n/2)` (NeoX), and becomes `(x0·cos - x1·sin, x0·sin + x1·cos)` in f32 —
/// with `contract`, `fma(x0, cos, -(x1·sin))` and `fma(x0, sin, x1·cos)`, as the compiler of a
/// native build contracts them.
fn rotate_pairs(head: &mut [f32], angles: &[(f32, f32)], style: RopeStyle, contract: bool) {
    let half = angles.len();
    for (i, &(cos, sin)) in angles.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        (head[a], head[b]) = if contract {
            (num::fma(x0, cos, -(x1 * sin)), num::fma(x0, sin, x1 * cos))
        } else {
            (x0 * cos - x1 * sin, x0 * sin + x1 * cos)
        };
    }
}

impl Backend for GgmlBackend {
    type Buf = Vec<f32>;
    type Weight = HostWeight;

    fn name(&self) -> &'static str {
        "ggml"
    }

    /// Its KV cache is f16 whatever the weights, and Q4_1/Q8_0 meet 8-bit activations.
    fn precision(&self, _weights: GgmlType) -> crate::Precision {
        crate::Precision::EightBitActivations
    }

    host_buffers!();

    fn upload_weight(&self, w: &HostWeight) -> Result<HostWeight> {
        Ok(w.clone())
    }

    fn embedding(&self, table: &HostWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        ops::embedding::reference(table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        shapes::rms_norm(x.len(), w.len(), rows, dim, out.len())?;
        Self::rms_rows(x, w, eps, rows, dim, out);
        Ok(())
    }

    fn add_rms_norm(
        &self,
        residual: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        shapes::add_rms_norm(residual.len(), x.len(), w.len(), rows, dim, out.len())?;
        for (r, &v) in residual.iter_mut().zip(x.iter()).take(rows * dim) {
            *r += v;
        }
        Self::rms_rows(residual, w, eps, rows, dim, out);
        Ok(())
    }

    fn matmul(&self, w: &HostWeight, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        shapes::matmul((w.rows, w.cols), x.len(), n, out.len())?;
        let cols = w.cols;
        match w.ty {
            GgmlType::Q4_1 | GgmlType::Q8_0 if cols.is_multiple_of(QK) => {
                self.matmul_quant(w, x, n, out)
            }
            _ => ops::matmul::reference(w, x, n, out, true),
        }
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        ops::elementwise::add_bias(x, bias, rows, dim)
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&Vec<f32>>,
    ) -> Result<()> {
        let ff = freq_factors.map(Vec::len);
        shapes::rope(x.len(), positions.len(), n_heads, head_dim, p.n_rot, ff)?;
        let half = p.n_rot / 2;
        let theta_scale = p.theta.powf(-2.0 / p.n_rot as f32);
        let freq = freq_factors.map(|f| &f[..half]);
        let mut angles = vec![(0f32, 0f32); half];
        for (t, &pos) in positions.iter().enumerate() {
            rope_angles(pos, theta_scale, freq, &mut angles);
            for h in 0..n_heads {
                let head = &mut x[(t * n_heads + h) * head_dim..][..head_dim];
                rotate_pairs(head, &angles, p.style, self.contract);
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: AttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let AttnParams {
            n_tokens,
            pos0,
            n_heads,
            n_kv_heads,
            head_dim,
            scale,
            window,
        } = p;
        shapes::attention(q.len(), k.len(), v.len(), &p, out.len())?;
        let kv_dim = n_kv_heads * head_dim;
        let n_kv = pos0 + n_tokens;
        // The cache is f16: round what is read (a no-op for what `kv_write` stored).
        let k16: Vec<f32> = k[..n_kv * kv_dim].iter().map(|&x| f16r(x)).collect();
        let v16: Vec<f32> = v[..n_kv * kv_dim].iter().map(|&x| f16r(x)).collect();
        let group = n_heads / n_kv_heads;
        for t in 0..n_tokens {
            for h in 0..n_heads {
                let off = (h / group) * head_dim;
                let row = Row {
                    q: &q[(t * n_heads + h) * head_dim..][..head_dim],
                    k_at: |j: usize| &k16[j * kv_dim + off..][..head_dim],
                    v_at: |j: usize| &v16[j * kv_dim + off..][..head_dim],
                    first: window_start(pos0 + t, window),
                    n_kv: pos0 + t + 1,
                    scale,
                };
                let o = &mut out[(t * n_heads + h) * head_dim..][..head_dim];
                if self.flash {
                    attn::flash_row(row, self.contract, self.avx512, o);
                } else {
                    attn::softmax_row(row, self.avx512, o);
                }
            }
        }
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        shapes::swiglu(gate.len(), up.len(), len, out.len())?;
        for ((o, &g), &u) in out.iter_mut().zip(gate.iter()).zip(up.iter()).take(len) {
            *o = silu(g, self.avx512) * u;
        }
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        ops::elementwise::add(x, y, len)
    }

    fn kv_write(
        &self,
        src: &Vec<f32>,
        cache: &mut Vec<f32>,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        shapes::kv_write(src.len(), cache.len(), pos0, n, kv_dim)?;
        let (off, len) = (pos0 * kv_dim, n * kv_dim);
        for (c, &s) in cache[off..off + len].iter_mut().zip(&src[..len]) {
            *c = f16r(s);
        }
        Ok(())
    }

    fn kv_write_slots(
        &self,
        src: &Vec<f32>,
        pool: &mut Vec<f32>,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        shapes::kv_write_slots(src.len(), pool.len(), slots, kv_dim)?;
        for (i, &slot) in slots.iter().enumerate() {
            let (s, d) = (i * kv_dim, slot as usize * kv_dim);
            for (c, &x) in pool[d..d + kv_dim].iter_mut().zip(&src[s..s + kv_dim]) {
                *c = f16r(x);
            }
        }
        Ok(())
    }
}
