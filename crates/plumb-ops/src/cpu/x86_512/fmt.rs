//! The AVX-512 unpacking of each repacked format (see `layout.rs`): a group's values into
//! unsigned bytes, its scales into per-lane f32 vectors.
//!
//! # Safety
//!
//! Every function here needs the AVX-512 F/BW/VL its `#[target_feature]` names (the kernels
//! that call them run only at the `Avx512` level, set after detection). Those that take a
//! pointer `p` read the bytes of one group of `G` blocks of a `QWeight` in the repacked
//! layout, `p` pointing at the group's first byte: a function reading one component (`nib`,
//! `bits`, `two`, the scale loads) needs `p` valid for that component's bytes
//! (`Comp::bytes(G)`), and [`Fmt::unpack`] and [`Fmt::scales`] need it valid for the whole
//! group (`QFmt::group_bytes(G)`). Masked loads do not touch the masked-off bytes.

use std::arch::x86_64::*;

use crate::cpu::layout::{lane_block, nvec};

/// Lane `l` of an expanded vector takes element `EXPAND[g][l]` of the block-space vector.
static EXPAND: [[i32; 16]; 17] = {
    let mut t = [[0i32; 16]; 17];
    let mut g = 1;
    while g <= 16 {
        let mut l = 0;
        while l < 16 {
            t[g][l] = match lane_block(g, l) {
                Some(k) => k as i32,
                None => 0,
            };
            l += 1;
        }
        g *= 2;
    }
    t
};

/// Block-space → lane-space for a group of `G` (identity for 16).
///
/// # Safety
/// AVX-512 F is present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn expand<const G: usize>(v: __m512) -> __m512 {
    if G == 16 {
        v
    } else {
        _mm512_permutexvar_ps(_mm512_loadu_si512(EXPAND[G].as_ptr() as *const _), v)
    }
}

/// `n` (≤ 16) f16 values at `p` into lanes 0..n (the rest 0).
///
/// # Safety
/// AVX-512 F/BW/VL are present; `p` is valid for `2 n` bytes of reads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_f16(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p as *const i16))
}

/// `n` (≤ 16) bytes at `p` as f32 in lanes 0..n, unsigned or signed.
///
/// # Safety
/// AVX-512 F/BW/VL are present; `p` is valid for `n` bytes of reads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_u8(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
        m,
        p as *const i8,
    )))
}

/// `n` (≤ 16) signed bytes at `p` as f32 in lanes 0..n.
///
/// # Safety
/// AVX-512 F/BW/VL are present; `p` is valid for `n` bytes of reads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_i8(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(
        m,
        p as *const i8,
    )))
}

/// The K-quant super-block scale at `p` for each block lane (block k uses scale k / 8).
///
/// # Safety
/// AVX-512 F/BW/VL are present; `p` is valid for the `G / 4` bytes of a `DSup` or `MSup`
/// (module docs).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_sup<const G: usize>(p: *const u8) -> __m512 {
    let v = ld_f16(p, G / 8);
    _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        v,
    )
}

/// Low nibbles → vectors `0..h`, high nibbles → `h..2h` (h = g / 4), or ggml order for g ≤ 2.
///
/// # Safety
/// AVX-512 F/BW/VL are present; `p` is valid for the `16 G` bytes of a `Nib` (module docs).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn nib<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
    let m = _mm512_set1_epi8(15);
    if G >= 4 {
        let h = G / 4;
        for i in 0..h {
            let x = _mm512_loadu_si512(p.add(64 * i) as *const _);
            w[i] = _mm512_and_si512(x, m);
            w[i + h] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m);
        }
    } else if G == 2 {
        let x = _mm256_loadu_si256(p as *const __m256i);
        let m = _mm256_set1_epi8(15);
        let lo = _mm256_and_si256(x, m);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m);
        w[0] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    } else {
        let x = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(15);
        let lo = _mm_and_si128(x, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m);
        w[0] = _mm512_zextsi256_si512(_mm256_set_m128i(hi, lo));
    }
}

/// Adds `add` to the bytes whose bit is set in the group's 64-bit masks.
///
/// # Safety
/// AVX-512 F/BW are present; `p` is valid for the `4 G` bytes of a `Bits` (module docs).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn bits<const G: usize>(p: *const u8, w: &mut [__m512i; 8], add: i8) {
    let a = _mm512_set1_epi8(add);
    for (v, wv) in w.iter_mut().enumerate().take(nvec(G)) {
        let k: u64 = if G >= 2 {
            (p.add(8 * v) as *const u64).read_unaligned()
        } else {
            (p as *const u32).read_unaligned() as u64
        };
        *wv = _mm512_mask_add_epi8(*wv, k, *wv, a);
    }
}

/// 2-bit fields: vector `v` is bits `2 (v % 4)` of packed vector `v / 4`; stored into `w`
/// (`high == false`) or or-ed in at bits 4..6 (`high == true`, Q6_K).
///
/// # Safety
/// AVX-512 F/BW are present; `p` is valid for the `8 G` bytes of a `Two` (module docs).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn two<const G: usize>(p: *const u8, w: &mut [__m512i; 8], high: bool) {
    let m3 = _mm512_set1_epi8(3);
    let m30 = _mm512_set1_epi8(0x30);
    for pv in 0..G / 8 {
        let x = _mm512_loadu_si512(p.add(64 * pv) as *const _);
        let o = &mut w[4 * pv..4 * pv + 4];
        if high {
            o[0] = _mm512_or_si512(o[0], _mm512_and_si512(_mm512_slli_epi16::<4>(x), m30));
            o[1] = _mm512_or_si512(o[1], _mm512_and_si512(_mm512_slli_epi16::<2>(x), m30));
            o[2] = _mm512_or_si512(o[2], _mm512_and_si512(x, m30));
            o[3] = _mm512_or_si512(o[3], _mm512_and_si512(_mm512_srli_epi16::<2>(x), m30));
        } else {
            o[0] = _mm512_and_si512(x, m3);
            o[1] = _mm512_and_si512(_mm512_srli_epi16::<2>(x), m3);
            o[2] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m3);
            o[3] = _mm512_and_si512(_mm512_srli_epi16::<6>(x), m3);
        }
    }
}

/// A format's unpacking and scales, for groups of `G` blocks.
pub(super) trait Fmt {
    /// Scales per 16 elements (separate sums for the two halves of a block).
    const SPLIT: bool;
    /// Only groups of 16 and 8 occur.
    const K: bool;
    /// The group's values as unsigned bytes, in the lanes of `w`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL are present; `p` is valid for the group's bytes (module docs).
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]);
    /// `[dw_lo, mw_lo, dw_hi, mw_hi]` per lane.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL are present; `p` is valid for the group's bytes (module docs).
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4];
}

macro_rules! legacy {
    ($name:ident, $bits:expr, $d:expr, $m:expr, $off:expr) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = false;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
                nib::<G>(p, w);
                if $bits {
                    bits::<G>(p.add(16 * G), w, 16);
                }
            }
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
                let d = expand::<G>(ld_f16(p.add($d * G), G));
                let m = if $m > 0 {
                    expand::<G>(ld_f16(p.add($m * G), G))
                } else {
                    _mm512_mul_ps(d, _mm512_set1_ps($off))
                };
                [d, m, d, m]
            }
        }
    };
}

legacy!(Q40, false, 16, 0, -8.0);
legacy!(Q41, false, 16, 18, 0.0);
legacy!(Q50, true, 20, 0, -16.0);
legacy!(Q51, true, 20, 22, 0.0);

pub(super) struct Q80;
impl Fmt for Q80 {
    const SPLIT: bool = false;
    const K: bool = false;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        bytes8::<G>(p, w);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
        let d = expand::<G>(ld_f16(p.add(32 * G), G));
        let m = _mm512_mul_ps(d, _mm512_set1_ps(-128.0));
        [d, m, d, m]
    }
}

/// Q4_K and Q5_K: `[Nib, (Bits(4)), ScA, ScB, DSup, MSup]`.
macro_rules! kquant_sm {
    ($name:ident, $bits:expr) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = true;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
                nib::<G>(p, w);
                if $bits {
                    bits::<G>(p.add(16 * G), w, 16);
                }
            }
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
                let o = if $bits { 20 * G } else { 16 * G };
                let sc = ld_u8(p.add(o), G);
                let mn = ld_u8(p.add(o + G), G);
                let d = ld_sup::<G>(p.add(o + 2 * G));
                let dm = ld_sup::<G>(p.add(o + 2 * G + G / 4));
                let dw = expand::<G>(_mm512_mul_ps(sc, d));
                let mw = expand::<G>(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(mn, dm)));
                [dw, mw, dw, mw]
            }
        }
    };
}

kquant_sm!(Q4K, false);
kquant_sm!(Q5K, true);

pub(super) struct Q6K;
impl Fmt for Q6K {
    const SPLIT: bool = true;
    const K: bool = true;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        nib::<G>(p, w);
        two::<G>(p.add(16 * G), w, true);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
        let d = ld_sup::<G>(p.add(26 * G));
        let lo = expand::<G>(_mm512_mul_ps(ld_i8(p.add(24 * G), G), d));
        let hi = expand::<G>(_mm512_mul_ps(ld_i8(p.add(25 * G), G), d));
        let off = _mm512_set1_ps(-32.0);
        [lo, _mm512_mul_ps(lo, off), hi, _mm512_mul_ps(hi, off)]
    }
}

pub(super) struct Q2K;
impl Fmt for Q2K {
    const SPLIT: bool = true;
    const K: bool = true;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        two::<G>(p, w, false);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
        let m = ((1u32 << G) - 1) as u16;
        let d = ld_sup::<G>(p.add(10 * G));
        let dm = _mm512_sub_ps(_mm512_setzero_ps(), ld_sup::<G>(p.add(10 * G + G / 4)));
        let half = |o: usize| {
            let b = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p.add(o) as *const i8));
            let sc = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
            let mn = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b));
            (
                expand::<G>(_mm512_mul_ps(sc, d)),
                expand::<G>(_mm512_mul_ps(mn, dm)),
            )
        };
        let (dlo, mlo) = half(8 * G);
        let (dhi, mhi) = half(9 * G);
        [dlo, mlo, dhi, mhi]
    }
}

pub(super) struct Q3K;
impl Fmt for Q3K {
    const SPLIT: bool = true;
    const K: bool = true;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        two::<G>(p, w, false);
        bits::<G>(p.add(8 * G), w, 4);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
        let d = ld_sup::<G>(p.add(14 * G));
        let lo = expand::<G>(_mm512_mul_ps(ld_i8(p.add(12 * G), G), d));
        let hi = expand::<G>(_mm512_mul_ps(ld_i8(p.add(13 * G), G), d));
        let off = _mm512_set1_ps(-4.0);
        [lo, _mm512_mul_ps(lo, off), hi, _mm512_mul_ps(hi, off)]
    }
}

/// `n` (≤ 16) f32 values at `p` into lanes 0..n (the rest 0).
///
/// # Safety
/// AVX-512 F is present; `p` is valid for `4 n` bytes of reads.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn ld_f32(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_maskz_loadu_ps(m, p as *const f32)
}

/// The 8-bit values of a `Bytes8`.
///
/// # Safety
/// AVX-512 F is present; `p` is valid for the `32 G` bytes of a `Bytes8` (module docs).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bytes8<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
    if G >= 2 {
        for (v, wv) in w.iter_mut().enumerate().take(G / 2) {
            *wv = _mm512_loadu_si512(p.add(64 * v) as *const _);
        }
    } else {
        w[0] = _mm512_zextsi256_si512(_mm256_loadu_si256(p as *const __m256i));
    }
}

/// The MLX affine formats: unsigned codes (`$unpack`), then `D32` and `M32` at `$d · G`.
macro_rules! affine {
    ($name:ident, $d:expr, |$p:ident, $w:ident| $unpack:block) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = false;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn unpack<const G: usize>($p: *const u8, $w: &mut [__m512i; 8]) $unpack
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4] {
                let d = expand::<G>(ld_f32(p.add($d * G), G));
                let m = expand::<G>(ld_f32(p.add($d * G + 4 * G), G));
                [d, m, d, m]
            }
        }
    };
}

affine!(A2, 8, |p, w| {
    bits::<G>(p, w, 1);
    bits::<G>(p.add(4 * G), w, 2);
});
affine!(A3, 12, |p, w| {
    bits::<G>(p, w, 1);
    bits::<G>(p.add(4 * G), w, 2);
    bits::<G>(p.add(8 * G), w, 4);
});
affine!(A4, 16, |p, w| {
    nib::<G>(p, w);
});
affine!(A5, 20, |p, w| {
    nib::<G>(p, w);
    bits::<G>(p.add(16 * G), w, 16);
});
affine!(A6, 24, |p, w| {
    nib::<G>(p, w);
    bits::<G>(p.add(16 * G), w, 16);
    bits::<G>(p.add(20 * G), w, 32);
});
affine!(A8, 32, |p, w| {
    bytes8::<G>(p, w);
});
