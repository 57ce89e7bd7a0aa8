//! The AVX2 unpacking of each repacked format (see `layout.rs`), one 256-bit half (lanes
//! 0-7 or 8-15) of a group at a time: its values into unsigned bytes (Q8_0: signed), its
//! scales into per-lane f32 vectors.
//!
//! # Safety
//!
//! Every function here needs the AVX2 (and F16C) its `#[target_feature]` names (the kernels
//! that call them run only at the `Avx2` level, set after detection). Those that take a
//! pointer `p` read one group of `G` blocks of a `QWeight` in the repacked layout, `p`
//! pointing at the group's first byte, and `h` < 2 is the half (0 for `G = 1`): a function
//! reading one component (`nib`, `bits`, `two`, the scale loads) needs `p` valid for that
//! component's bytes (`Comp::bytes(G)`), and [`Fmt::unpack`] and [`Fmt::scales`] need it
//! valid for the whole group (`QFmt::group_bytes(G)`). One load reads more: [`ld_f16`] takes
//! 16 bytes where a group of fewer than 8 blocks has fewer f16 scales, up to 14 bytes past
//! the group; the rest of the row, or the 64 bytes of slack after the last row of
//! `QWeight::data`, keeps that read in bounds (the extra lanes are dropped).

use std::arch::x86_64::*;

use crate::cpu::layout::{lane_block, nvec};

/// Half `h` of a group of `g`: lane `i` takes element `EXPAND2[g][h][i]` of the
/// block-space vector loaded for that half (blocks `8h..` for g = 16, `0..` otherwise).
static EXPAND2: [[[i32; 8]; 2]; 17] = {
    let mut t = [[[0i32; 8]; 2]; 17];
    let mut g = 1;
    while g <= 16 {
        let mut h = 0;
        while h < 2 {
            let mut i = 0;
            while i < 8 {
                let base = if g == 16 { 8 * h } else { 0 };
                t[g][h][i] = match lane_block(g, 8 * h + i) {
                    Some(k) => (k - base) as i32,
                    None => 0,
                };
                i += 1;
            }
            h += 1;
        }
        g *= 2;
    }
    t
};

/// Block-space → lane-space of half `h` for a group of `G` (identity for 16).
///
/// # Safety
/// AVX2 is present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn expand<const G: usize>(v: __m256, h: usize) -> __m256 {
    if G == 16 {
        v
    } else {
        _mm256_permutevar8x32_ps(
            v,
            _mm256_loadu_si256(EXPAND2[G][h].as_ptr() as *const __m256i),
        )
    }
}

/// First block of half `h` in the block-space scale arrays.
const fn base(g: usize, h: usize) -> usize {
    if g == 16 {
        8 * h
    } else {
        0
    }
}

/// 8 f16 at `p`, of which the caller may use fewer.
///
/// # Safety
/// AVX2 and F16C are present; `p` is valid for 16 bytes of reads (module docs).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn ld_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 8 bytes at `p` as i32 lanes.
///
/// # Safety
/// AVX2 is present; `p` is valid for 8 bytes of reads.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld_u8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// The K-quant super-block scale of half `h` (one super-block per half for g = 16).
///
/// # Safety
/// AVX2 and F16C are present; `p` is valid for the `G / 4` bytes of a `DSup` or `MSup`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn sup<const G: usize>(p: *const u8, h: usize) -> __m256 {
    let i = if G == 16 { h } else { 0 };
    let v = half::f16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]).to_f32();
    _mm256_set1_ps(v)
}

/// Half `h` of a `Nib`: low nibbles → vectors `0..G/4`, high → `G/4..G/2` (ggml order for
/// `G` ≤ 2).
///
/// # Safety
/// AVX2 is present; `p` is valid for the `16 G` bytes of a `Nib` (module docs).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nib<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
    let m = _mm256_set1_epi8(15);
    if G >= 4 {
        let hh = G / 4;
        for i in 0..hh {
            let x = _mm256_loadu_si256(p.add(64 * i + 32 * h) as *const __m256i);
            w[i] = _mm256_and_si256(x, m);
            w[i + hh] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m);
        }
    } else if G == 2 {
        let x = _mm256_loadu_si256(p as *const __m256i);
        w[0] = if h == 0 {
            _mm256_and_si256(x, m)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(x), m)
        };
    } else {
        let x = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(15);
        w[0] = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(x), m),
            _mm_and_si128(x, m),
        );
    }
}

/// 32 bits → 32 bytes of 0xff (bit set) or 0.
///
/// # Safety
/// AVX2 is present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bytes_from_bits(x: u32) -> __m256i {
    let v = _mm256_set1_epi32(x as i32);
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, shuf), bit), bit)
}

/// Half `h` of a `Bits`: adds `add` to the bytes whose bit is set.
///
/// # Safety
/// AVX2 is present; `p` is valid for the `4 G` bytes of a `Bits` (module docs).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8], add: i8) {
    let a = _mm256_set1_epi8(add);
    for (v, wv) in w.iter_mut().enumerate().take(nvec(G)) {
        let k = (p.add(8 * v + 4 * h) as *const u32).read_unaligned();
        *wv = _mm256_add_epi8(*wv, _mm256_and_si256(bytes_from_bits(k), a));
    }
}

/// Half `h` of a `Two` (see `x86_512::fmt::two`).
///
/// # Safety
/// AVX2 is present; `p` is valid for the `8 G` bytes of a `Two` (module docs).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn two<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8], high: bool) {
    let m3 = _mm256_set1_epi8(3);
    let m30 = _mm256_set1_epi8(0x30);
    for pv in 0..G / 8 {
        let x = _mm256_loadu_si256(p.add(64 * pv + 32 * h) as *const __m256i);
        let o = &mut w[4 * pv..4 * pv + 4];
        if high {
            o[0] = _mm256_or_si256(o[0], _mm256_and_si256(_mm256_slli_epi16::<4>(x), m30));
            o[1] = _mm256_or_si256(o[1], _mm256_and_si256(_mm256_slli_epi16::<2>(x), m30));
            o[2] = _mm256_or_si256(o[2], _mm256_and_si256(x, m30));
            o[3] = _mm256_or_si256(o[3], _mm256_and_si256(_mm256_srli_epi16::<2>(x), m30));
        } else {
            o[0] = _mm256_and_si256(x, m3);
            o[1] = _mm256_and_si256(_mm256_srli_epi16::<2>(x), m3);
            o[2] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m3);
            o[3] = _mm256_and_si256(_mm256_srli_epi16::<6>(x), m3);
        }
    }
}

pub(super) trait Fmt {
    const SPLIT: bool;
    const K: bool;
    /// Values are signed bytes (Q8_0, the 8-bit MLX format): dot with the sign trick.
    const SIGNED: bool = false;
    /// The `mw` term is there (it is 0 for Q8_0).
    const HAS_M: bool = true;
    /// Half `h` of the group's values, in the lanes of `w`.
    ///
    /// # Safety
    /// AVX2 is present; `p` is valid for the group's bytes (module docs).
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]);
    /// `[dw_lo, mw_lo, dw_hi, mw_hi]` per lane of half `h`.
    ///
    /// # Safety
    /// AVX2 and F16C are present; `p` is valid for the group's bytes and what [`ld_f16`]
    /// reads past them (module docs).
    unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4];
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
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
                nib::<G>(p, h, w);
                if $bits {
                    bits::<G>(p.add(16 * G), h, w, 16);
                }
            }
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
                let b = 2 * base(G, h);
                let d = expand::<G>(ld_f16(p.add($d * G + b)), h);
                let m = if $m > 0 {
                    expand::<G>(ld_f16(p.add($m * G + b)), h)
                } else {
                    _mm256_mul_ps(d, _mm256_set1_ps($off))
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

/// Half `h` of a `Bytes8` as signed bytes (`u - 128`).
///
/// # Safety
/// AVX2 is present; `p` is valid for the `32 G` bytes of a `Bytes8` (module docs).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bytes8_signed<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
    let flip = _mm256_set1_epi8(-128);
    for (v, wv) in w.iter_mut().enumerate().take(nvec(G)) {
        *wv = _mm256_xor_si256(
            _mm256_loadu_si256(p.add(64 * v + 32 * h) as *const __m256i),
            flip,
        );
    }
}

pub(super) struct Q80;
impl Fmt for Q80 {
    const SPLIT: bool = false;
    const K: bool = false;
    const SIGNED: bool = true;
    const HAS_M: bool = false;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
        bytes8_signed::<G>(p, h, w);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
        let d = expand::<G>(ld_f16(p.add(32 * G + 2 * base(G, h))), h);
        let z = _mm256_setzero_ps();
        [d, z, d, z]
    }
}

macro_rules! kquant_sm {
    ($name:ident, $bits:expr) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = true;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
                nib::<G>(p, h, w);
                if $bits {
                    bits::<G>(p.add(16 * G), h, w, 16);
                }
            }
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
                let o = if $bits { 20 * G } else { 16 * G };
                let b = base(G, h);
                let sc = _mm256_cvtepi32_ps(ld_u8(p.add(o + b)));
                let mn = _mm256_cvtepi32_ps(ld_u8(p.add(o + G + b)));
                let d = sup::<G>(p.add(o + 2 * G), h);
                let dm = sup::<G>(p.add(o + 2 * G + G / 4), h);
                let dw = expand::<G>(_mm256_mul_ps(sc, d), h);
                let mw = expand::<G>(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(mn, dm)), h);
                [dw, mw, dw, mw]
            }
        }
    };
}

kquant_sm!(Q4K, false);
kquant_sm!(Q5K, true);

/// Q6_K and Q3_K: signed per-16 scales `[ScA, ScB]` at `$sc`, super scale at `$sc + 2G`.
macro_rules! kquant_signed {
    ($name:ident, $sc:expr, $off:expr, |$p:ident, $h:ident, $w:ident| $unpack:block) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = true;
            const K: bool = true;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(
                $p: *const u8,
                $h: usize,
                $w: &mut [__m256i; 8],
            ) $unpack
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
                let b = base(G, h);
                let d = sup::<G>(p.add($sc * G + 2 * G), h);
                let ld = |o: usize| {
                    let v = _mm_loadl_epi64(p.add(o + b) as *const __m128i);
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
                };
                let lo = expand::<G>(_mm256_mul_ps(ld($sc * G), d), h);
                let hi = expand::<G>(_mm256_mul_ps(ld($sc * G + G), d), h);
                let off = _mm256_set1_ps($off);
                [lo, _mm256_mul_ps(lo, off), hi, _mm256_mul_ps(hi, off)]
            }
        }
    };
}

kquant_signed!(Q6K, 24, -32.0, |p, h, w| {
    nib::<G>(p, h, w);
    two::<G>(p.add(16 * G), h, w, true);
});
kquant_signed!(Q3K, 12, -4.0, |p, h, w| {
    two::<G>(p, h, w, false);
    bits::<G>(p.add(8 * G), h, w, 4);
});

pub(super) struct Q2K;
impl Fmt for Q2K {
    const SPLIT: bool = true;
    const K: bool = true;
    /// # Safety
    /// As [`Fmt::unpack`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
        two::<G>(p, h, w, false);
    }
    /// # Safety
    /// As [`Fmt::scales`].
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
        let b = base(G, h);
        let d = sup::<G>(p.add(10 * G), h);
        let dm = _mm256_sub_ps(_mm256_setzero_ps(), sup::<G>(p.add(10 * G + G / 4), h));
        let half = |o: usize| {
            let x = ld_u8(p.add(o + b));
            let sc = _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(15)));
            let mn = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(x));
            (
                expand::<G>(_mm256_mul_ps(sc, d), h),
                expand::<G>(_mm256_mul_ps(mn, dm), h),
            )
        };
        let (dlo, mlo) = half(8 * G);
        let (dhi, mhi) = half(9 * G);
        [dlo, mlo, dhi, mhi]
    }
}

/// The f32 scales of half `h` of a `D32` or `M32` (masked: nothing past the group is read).
///
/// # Safety
/// AVX2 is present; `p` is valid for the `4 G` bytes of a `D32` or `M32` (module docs).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld_f32<const G: usize>(p: *const u8, h: usize) -> __m256 {
    let n = G.min(8) as i32;
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    _mm256_maskload_ps(p.add(4 * base(G, h)) as *const f32, mask)
}

/// The MLX affine formats: codes (`$unpack`), then `D32` and `M32` at `$d · G`; with
/// `$signed` (8 bits) the codes are unpacked as `u - 128` and `mw` takes `128 dw` back.
macro_rules! affine {
    ($name:ident, $d:expr, $signed:expr, |$p:ident, $h:ident, $w:ident| $unpack:block) => {
        pub(super) struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = false;
            const SIGNED: bool = $signed;
            /// # Safety
            /// As [`Fmt::unpack`].
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(
                $p: *const u8,
                $h: usize,
                $w: &mut [__m256i; 8],
            ) $unpack
            /// # Safety
            /// As [`Fmt::scales`].
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
                let d = expand::<G>(ld_f32::<G>(p.add($d * G), h), h);
                let mut m = expand::<G>(ld_f32::<G>(p.add($d * G + 4 * G), h), h);
                if $signed {
                    m = _mm256_fmadd_ps(d, _mm256_set1_ps(128.0), m);
                }
                [d, m, d, m]
            }
        }
    };
}

affine!(A2, 8, false, |p, h, w| {
    bits::<G>(p, h, w, 1);
    bits::<G>(p.add(4 * G), h, w, 2);
});
affine!(A3, 12, false, |p, h, w| {
    bits::<G>(p, h, w, 1);
    bits::<G>(p.add(4 * G), h, w, 2);
    bits::<G>(p.add(8 * G), h, w, 4);
});
affine!(A4, 16, false, |p, h, w| {
    nib::<G>(p, h, w);
});
affine!(A5, 20, false, |p, h, w| {
    nib::<G>(p, h, w);
    bits::<G>(p.add(16 * G), h, w, 16);
});
affine!(A6, 24, false, |p, h, w| {
    nib::<G>(p, h, w);
    bits::<G>(p.add(16 * G), h, w, 16);
    bits::<G>(p.add(20 * G), h, w, 32);
});
affine!(A8, 32, true, |p, h, w| {
    bytes8_signed::<G>(p, h, w);
});
