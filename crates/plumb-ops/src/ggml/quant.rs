//! 8-bit activation blocks and the block dot products of ggml's x86 (AVX2) kernels.

use super::num::{f16r, fma, sum_by_halves};

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

/// Quantizes 32 activations into one 8-bit block (Q8_0, and Q8_1 with its sum), as ggml's
/// AVX2 row quantizer does:
///
/// 1. `amax`, the largest magnitude (exact, whatever the order);
/// 2. the step `d = amax / 127` and, separately, its reciprocal `127 / amax` (both rounded
///    once; the values are multiplied by the reciprocal, never divided by the step); both are
///    0 for an all-zero block;
/// 3. each value times the reciprocal, rounded to the nearest integer with ties to even (no
///    value exceeds 127 in magnitude, since none exceeds `amax`);
/// 4. `d` stored as f16, and `s` the f16 of the f32 product of the *unrounded* step and the
///    sum of the 32 integers.
pub fn quantize_block(x: &[f32]) -> Q8Block {
    debug_assert_eq!(x.len(), QK);
    let amax = x.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let step = amax / 127.0;
    let inv_step = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    let mut q = [0i8; QK];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (v * inv_step).round_ties_even() as i8;
    }
    let total: i32 = q.iter().map(|&v| i32::from(v)).sum();
    Q8Block {
        d: f16r(step),
        s: f16r(step * total as f32),
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

/// The 32 weights (0..=15) of a 4-bit block in element order: element `i < 16` is the low
/// nibble of byte `i`, element `i + 16` its high nibble.
fn unpack_nibbles(packed: &[u8]) -> [i8; QK] {
    std::array::from_fn(|i| {
        let byte = packed[i % 16];
        (if i < 16 { byte & 0x0f } else { byte >> 4 }) as i8
    })
}

/// The 32 weights of a Q8_0 block, read as signed bytes.
fn signed_bytes(bytes: &[u8]) -> [i8; QK] {
    std::array::from_fn(|i| bytes[i] as i8)
}

/// The integer products of a block grouped as the x86 kernels group them: eight partial
/// sums, sum `k` over elements `4k .. 4k+4` (byte pairs multiplied and added, then pairs of
/// those). Exact: with weights and activations in -127..=127 (or nibbles in 0..=15) no 16-bit
/// pair sum of the instructions saturates, and every sum fits in an f32 exactly.
fn lane_sums(w: &[i8; QK], x: &[i8; QK]) -> [i32; 8] {
    std::array::from_fn(|k| {
        (4 * k..4 * k + 4)
            .map(|i| i32::from(w[i]) * i32::from(x[i]))
            .sum()
    })
}

/// Adds one block into the eight f32 accumulators: `acc[k] = fma(scale, sums[k], acc[k])`,
/// with `scale = d_w · d_x` rounded to f32 once by the caller.
fn accumulate(acc: &mut [f32; 8], scale: f32, sums: [i32; 8]) {
    for (a, s) in acc.iter_mut().zip(sums) {
        *a = fma(scale, s as f32, *a);
    }
}

/// The dot product of a Q4_1 weight row (`w = d·q + m` per block) with Q8_1 activations, as
/// ggml's AVX2 kernel computes it. Per block, the nibbles times the activation bytes give
/// [`lane_sums`], added into eight f32 accumulators with the scale `d · d_x` ([`accumulate`]);
/// the offsets are a separate f32 running sum of `m · s_x`, which uses the block's stored
/// `s_x` instead of `d_x · Σq_x`. The result is the [`sum_by_halves`] of the accumulators plus
/// the offset sum. `contract` computes the offset step as one FMA, as a C compiler that
/// contracts floating-point expressions emits it; otherwise the product and the sum each
/// round.
pub fn dot_q4_1(w: &[u8], x: &[Q8Block], contract: bool) -> f32 {
    let mut acc = [0f32; 8];
    let mut offsets = 0f32;
    for (block, act) in w.chunks_exact(Q4_1_BYTES).zip(x) {
        let (d, m) = (f16_at(block, 0), f16_at(block, 2));
        offsets = if contract {
            fma(m, act.s, offsets)
        } else {
            offsets + m * act.s
        };
        let sums = lane_sums(&unpack_nibbles(&block[4..]), &act.q);
        accumulate(&mut acc, d * act.d, sums);
    }
    sum_by_halves(acc) + offsets
}

/// The dot product of a Q8_0 weight row with Q8_0 activations, as ggml's AVX2 kernel (and
/// llamafile's Q8_0 matrix kernel, whose arithmetic is the same) computes it: per block
/// [`lane_sums`] of the signed bytes, [`accumulate`] with `d_w · d_x`, then [`sum_by_halves`].
pub fn dot_q8_0(w: &[u8], x: &[Q8Block]) -> f32 {
    let mut acc = [0f32; 8];
    for (block, act) in w.chunks_exact(Q8_0_BYTES).zip(x) {
        let sums = lane_sums(&signed_bytes(&block[2..]), &act.q);
        accumulate(&mut acc, f16_at(block, 0) * act.d, sums);
    }
    sum_by_halves(acc)
}
