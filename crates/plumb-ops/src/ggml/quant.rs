//! 8-bit activation blocks and the block dot products of ggml's x86 (AVX2) kernels.

use super::num::{f16r, fma, hsum8};

/// Elements per block (Q4_1, Q8_0, Q8_1).
pub const QK: usize = 32;

/// One activation block as ggml's AVX2 quantizer writes it: `d` and `s` are already rounded
/// to f16 (held as the f32 they decode to); `s = d · Σq` is only used against Q4_1 weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub q: [i8; QK],
}

/// `quantize_row_q8_0` / `quantize_row_q8_1` on AVX2: `amax = max|x|`, `d = amax / 127`,
/// `id = 127 / amax` (0 when `amax` is 0), `q = round_half_even(x · id)`, `d` stored as f16,
/// and `s = f16(d · Σq)` with the f32 `d` (not the rounded one).
pub fn quantize_block(x: &[f32]) -> Q8Block {
    debug_assert_eq!(x.len(), QK);
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; QK];
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-128.0, 127.0) as i32;
        sum += r;
        *o = r as i8;
    }
    Q8Block {
        d: f16r(d),
        s: f16r(d * sum as f32),
        q,
    }
}

/// Quantizes a row (`x.len()` a multiple of [`QK`]) into blocks.
pub fn quantize_row(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(QK).map(quantize_block).collect()
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Bytes of one Q4_1 block: `d`, `m` (f16), 16 bytes of nibbles.
pub const Q4_1_BYTES: usize = 20;
/// Bytes of one Q8_0 block: `d` (f16), 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;

/// `ggml_vec_dot_q4_1_q8_1` on AVX2. Per block, the integer products of the nibbles (0..15,
/// element `j < 16` in the low nibble of byte `j`, element `j + 16` in its high nibble) with
/// the 8-bit activations are summed four at a time into 8 lanes, converted to float and
/// accumulated as `acc = fma(d_w · d_x, lane, acc)`; the offsets go into a separate scalar
/// `Σ m_w · s_x`. Result: [`hsum8`] of the lanes plus that sum. `contract` fuses the scalar
/// `summs += m · s` into an FMA, as a compiler contracting floating-point expressions does.
pub fn dot_q4_1(w: &[u8], x: &[Q8Block], contract: bool) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (wb, xb) in w.chunks_exact(Q4_1_BYTES).zip(x) {
        let d0 = f16_at(wb, 0);
        let m = f16_at(wb, 2);
        summs = if contract {
            fma(m, xb.s, summs)
        } else {
            summs + m * xb.s
        };
        let d0d1 = d0 * xb.d;
        let qs = &wb[4..20];
        for (lane, a) in acc.iter_mut().enumerate() {
            let mut s = 0i32;
            for j in 4 * lane..4 * lane + 4 {
                let nib = if j < 16 {
                    qs[j] & 0x0f
                } else {
                    qs[j - 16] >> 4
                };
                s += nib as i32 * xb.q[j] as i32;
            }
            *a = fma(d0d1, s as f32, *a);
        }
    }
    hsum8(&acc) + summs
}

/// `ggml_vec_dot_q8_0_q8_0` on AVX2 (and llamafile's tinyBLAS Q8_0 kernel, which has the
/// same arithmetic): per block `d = d_w · d_x`, 8 lanes of four products each,
/// `acc = fma(d, lane, acc)`, then [`hsum8`].
pub fn dot_q8_0(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, xb) in w.chunks_exact(Q8_0_BYTES).zip(x) {
        let d = f16_at(wb, 0) * xb.d;
        let qs = &wb[2..34];
        for (lane, a) in acc.iter_mut().enumerate() {
            let (lo, hi) = (4 * lane, 4 * lane + 4);
            let s: i32 = qs[lo..hi]
                .iter()
                .zip(&xb.q[lo..hi])
                .map(|(&w, &x)| w as i8 as i32 * x as i32)
                .sum();
            *a = fma(d, s as f32, *a);
        }
    }
    hsum8(&acc)
}
