//! Quantization of activations into the interleaved layout of [`super::layout`].
//!
//! Per token, per group of `g` blocks: `nvec(g)` vectors of 64 bytes (the 8-bit values,
//! placed as the weights' values are, see [`dword_pos`]), then four 16-lane f32 vectors:
//! `d` of each lane's block, and `s`, `s_lo`, `s_hi` (`d Σ q` over the block, its first and
//! its second half) divided by the lanes the block spans, so that a lane-wise
//! `mw * s` summed over all lanes counts each block once (the division is by a power of two
//! and exact).

use super::layout::{dword_pos, lane_block, lanes_per_block, nvec, Group};
use super::scalar::quant_block;
use super::SimdLevel;

/// Quantizes one token (`x`: the row's `cols` values) into `dst` (its `act_bytes`).
pub(crate) fn quantize_token(level: SimdLevel, groups: &[Group], x: &[f32], dst: &mut [u8]) {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => {
            // SAFETY: the level is only ever Avx512 after detection of AVX-512 F/BW/VL.
            unsafe { x86::quantize_token_512(groups, x, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            // SAFETY: the level is only ever Avx2 after detection of AVX2.
            unsafe { x86::quantize_token_avx2(groups, x, dst) }
        }
        _ => quantize_token_with(groups, x, dst, quant_block),
    }
}

#[inline(always)]
fn quantize_token_with(
    groups: &[Group],
    x: &[f32],
    dst: &mut [u8],
    qb: impl Fn(&[f32]) -> ([i8; 32], f32, i32, i32),
) {
    for grp in groups {
        let g = grp.g;
        let nv = nvec(g);
        let out = &mut dst[grp.a_off..grp.a_off + nv * 64 + 256];
        // Per block: d, s, s_lo, s_hi (already divided among the block's lanes).
        let mut blk = [[0f32; 4]; 16];
        let inv_l = 1.0 / lanes_per_block(g) as f32;
        for (k, bk) in blk.iter_mut().enumerate().take(g) {
            let b = grp.block0 + k;
            let (q, dk, lo, hi) = qb(&x[32 * b..32 * b + 32]);
            for (dw, q4) in q.chunks_exact(4).enumerate() {
                let (v, l) = dword_pos(g, k, dw);
                let o = 64 * v + 4 * l;
                out[o..o + 4].copy_from_slice(&[
                    q4[0] as u8,
                    q4[1] as u8,
                    q4[2] as u8,
                    q4[3] as u8,
                ]);
            }
            let (slo, shi) = (dk * lo as f32 * inv_l, dk * hi as f32 * inv_l);
            *bk = [dk, slo + shi, slo, shi];
        }
        if g == 1 {
            out[32..64].fill(0);
        }
        let sv = &mut out[nv * 64..];
        for l in 0..16 {
            let vals = match lane_block(g, l) {
                Some(k) => blk[k],
                None => [0.0; 4],
            };
            for (i, v) in vals.iter().enumerate() {
                sv[64 * i + 4 * l..64 * i + 4 * l + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::quantize_token_with;
    use crate::cpu::layout::Group;

    /// # Safety
    /// AVX-512 F/BW/VL are present. Nothing else: `x` and `dst` are slices, indexed with
    /// bounds checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(crate) unsafe fn quantize_token_512(groups: &[Group], x: &[f32], dst: &mut [u8]) {
        quantize_token_with(groups, x, dst, |c| {
            // SAFETY: AVX-512 F/BW/VL are present (this function's contract); `block_512`
            // asserts that `c` holds 32 values.
            unsafe { block_512(c) }
        })
    }

    /// # Safety
    /// AVX2 is present. Nothing else: `x` and `dst` are slices, indexed with bounds checks.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn quantize_token_avx2(groups: &[Group], x: &[f32], dst: &mut [u8]) {
        quantize_token_with(groups, x, dst, |c| {
            // SAFETY: AVX2 is present (this function's contract); `block_avx2` asserts that
            // `c` holds 32 values.
            unsafe { block_avx2(c) }
        })
    }

    /// One block of 32 values quantized: (values, `d`, sum of the first 16, of the last 16).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL are present; the 32 values read are asserted to be in `c`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn block_512(c: &[f32]) -> ([i8; 32], f32, i32, i32) {
        assert!(c.len() >= 32);
        let a = _mm512_loadu_ps(c.as_ptr());
        let b = _mm512_loadu_ps(c.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        // Round to nearest even (the default MXCSR mode).
        let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, id));
        let qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, id));
        let mut q = [0i8; 32];
        _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(
            q.as_mut_ptr().add(16) as *mut __m128i,
            _mm512_cvtepi32_epi8(qb),
        );
        (
            q,
            d,
            _mm512_reduce_add_epi32(qa),
            _mm512_reduce_add_epi32(qb),
        )
    }

    /// # Safety
    /// AVX2 is present.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        _mm_cvtss_f32(m)
    }

    /// # Safety
    /// AVX2 is present.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// As [`block_512`].
    ///
    /// # Safety
    /// AVX2 is present; the 32 values read are asserted to be in `c`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_avx2(c: &[f32]) -> ([i8; 32], f32, i32, i32) {
        assert!(c.len() >= 32);
        let p = c.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for x in v {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
        }
        let amax = hmax(m);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let qi = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, id)));
        let lo = hsum_i32(_mm256_add_epi32(qi[0], qi[1]));
        let hi = hsum_i32(_mm256_add_epi32(qi[2], qi[3]));
        // Pack i32 -> i16 -> i8 (saturating; values are within ±127), then undo the
        // lane interleave of the 256-bit packs.
        let w01 = _mm256_packs_epi32(qi[0], qi[1]);
        let w23 = _mm256_packs_epi32(qi[2], qi[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut q = [0i8; 32];
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
        (q, d, lo, hi)
    }
}
