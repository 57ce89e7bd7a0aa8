//! AVX-512 VNNI kernels for the repacked quantized layout (see `layout.rs`).
//!
//! Prefill (`tiles`, n ≥ 4): one weight row × `T` tokens (T ∈ {1, 2, 4}) per pass. Per group
//! the weight's values are unpacked once into up to 8 vectors of unsigned bytes, then each
//! token does `vpdpbusd` against its quantized activations (one block per lane for g = 16),
//! converts the lane sums to f32 and applies `dw * d_x` and `mw * s_x` with two FMAs. The
//! horizontal sums happen once per row, for up to four tokens together (`reduce4`).
//!
//! Both kernels do the same per-lane operations in the same order and sum lanes in
//! `reduce4`'s order, so a (token, row) result is bitwise the same from either (batch
//! invariance, see `mod.rs`).
//!
//! Decode (`rows4`, n < 4): four rows × one token, the activation vectors loaded once per
//! group for the four rows, one combined horizontal sum, and a software prefetch of the
//! rows a few blocks ahead (v1, one row at a time, reached ~32 GB/s per core; v2 ~50).

use std::arch::x86_64::*;
use std::ops::Range;

use super::layout::{lane_block, nvec, QFmt, QWeight};

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
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_f16(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p as *const i16))
}

/// `n` (≤ 16) bytes at `p` as f32 in lanes 0..n, unsigned or signed.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn ld_u8(p: *const u8, n: usize) -> __m512 {
    let m = ((1u32 << n) - 1) as u16;
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
        m,
        p as *const i8,
    )))
}

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
trait Fmt {
    /// Scales per 16 elements (separate sums for the two halves of a block).
    const SPLIT: bool;
    /// Only groups of 16 and 8 occur.
    const K: bool;
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]);
    /// `[dw_lo, mw_lo, dw_hi, mw_hi]` per lane.
    unsafe fn scales<const G: usize>(p: *const u8) -> [__m512; 4];
}

macro_rules! legacy {
    ($name:ident, $bits:expr, $d:expr, $m:expr, $off:expr) => {
        struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = false;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
                nib::<G>(p, w);
                if $bits {
                    bits::<G>(p.add(16 * G), w, 16);
                }
            }
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

struct Q80;
impl Fmt for Q80 {
    const SPLIT: bool = false;
    const K: bool = false;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        if G >= 2 {
            for (v, wv) in w.iter_mut().enumerate().take(G / 2) {
                *wv = _mm512_loadu_si512(p.add(64 * v) as *const _);
            }
        } else {
            w[0] = _mm512_zextsi256_si512(_mm256_loadu_si256(p as *const __m256i));
        }
    }
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
        struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = true;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
                nib::<G>(p, w);
                if $bits {
                    bits::<G>(p.add(16 * G), w, 16);
                }
            }
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

struct Q6K;
impl Fmt for Q6K {
    const SPLIT: bool = true;
    const K: bool = true;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        nib::<G>(p, w);
        two::<G>(p.add(16 * G), w, true);
    }
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

struct Q2K;
impl Fmt for Q2K {
    const SPLIT: bool = true;
    const K: bool = true;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        two::<G>(p, w, false);
    }
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

struct Q3K;
impl Fmt for Q3K {
    const SPLIT: bool = true;
    const K: bool = true;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn unpack<const G: usize>(p: *const u8, w: &mut [__m512i; 8]) {
        two::<G>(p, w, false);
        bits::<G>(p.add(8 * G), w, 4);
    }
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

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group<F: Fmt, const G: usize, const T: usize>(
    p: *const u8,
    a: &[*const u8; T],
    facc: &mut [__m512; T],
) {
    let mut w = [_mm512_setzero_si512(); 8];
    F::unpack::<G>(p, &mut w);
    let [dlo, mlo, dhi, mhi] = F::scales::<G>(p);
    let nv = nvec(G);
    for t in 0..T {
        let a = a[t];
        let x = |v: usize| _mm512_load_si512(a.add(64 * v) as *const _);
        let sv = |i: usize| _mm512_load_ps(a.add(64 * (nv + i)) as *const f32);
        let dx = sv(0);
        let mut f = facc[t];
        if !F::SPLIT {
            let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for v in (0..nv).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, w[v], x(v));
                if v + 1 < nv {
                    s1 = _mm512_dpbusd_epi32(s1, w[v + 1], x(v + 1));
                }
            }
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            f = _mm512_fmadd_ps(s, _mm512_mul_ps(dlo, dx), f);
            f = _mm512_fmadd_ps(mlo, sv(1), f);
        } else {
            let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for v in 0..nv / 2 {
                lo = _mm512_dpbusd_epi32(lo, w[v], x(v));
                hi = _mm512_dpbusd_epi32(hi, w[v + nv / 2], x(v + nv / 2));
            }
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(dlo, dx), f);
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(dhi, dx), f);
            f = _mm512_fmadd_ps(mlo, sv(2), f);
            f = _mm512_fmadd_ps(mhi, sv(3), f);
        }
        facc[t] = f;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<F: Fmt, const T: usize>(
    w: &QWeight,
    act: &[u8],
    t0: usize,
    rows: Range<usize>,
    out: *mut f32,
) {
    let base = w.data.as_slice().as_ptr();
    for r in rows {
        let row = base.add(r * w.row_bytes);
        let mut facc = [_mm512_setzero_ps(); T];
        for grp in &w.groups {
            let p = row.add(grp.w_off);
            let a: [*const u8; T] =
                std::array::from_fn(|t| act.as_ptr().add((t0 + t) * w.act_bytes + grp.a_off));
            match (F::K, grp.g) {
                (_, 16) => group::<F, 16, T>(p, &a, &mut facc),
                (true, _) | (false, 8) => group::<F, 8, T>(p, &a, &mut facc),
                (false, 4) => group::<F, 4, T>(p, &a, &mut facc),
                (false, 2) => group::<F, 2, T>(p, &a, &mut facc),
                (false, _) => group::<F, 1, T>(p, &a, &mut facc),
            }
        }
        // The horizontal sums in `reduce4`'s order, as the decode kernel's (`rows4`): a
        // token's result must not depend on the kernel that computed it.
        let s = reduce4(facc[0], facc[1 % T], facc[2 % T], facc[3 % T]);
        let mut v = [0f32; 4];
        _mm_storeu_ps(v.as_mut_ptr(), s);
        for (t, &v) in v.iter().enumerate().take(T) {
            *out.add((t0 + t) * w.rows + r) = v;
        }
    }
}

/// One token against `R` rows per group (decode): the activation vectors are loaded once
/// for all rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_rows<F: Fmt, const G: usize, const R: usize>(
    p: &[*const u8; R],
    a: *const u8,
    facc: &mut [__m512; R],
) {
    let nv = nvec(G);
    let mut x = [_mm512_setzero_si512(); 8];
    for (v, xv) in x.iter_mut().enumerate().take(nv) {
        *xv = _mm512_load_si512(a.add(64 * v) as *const _);
    }
    let sv = |i: usize| _mm512_load_ps(a.add(64 * (nv + i)) as *const f32);
    let dx = sv(0);
    for r in 0..R {
        let mut w = [_mm512_setzero_si512(); 8];
        F::unpack::<G>(p[r], &mut w);
        let [dlo, mlo, dhi, mhi] = F::scales::<G>(p[r]);
        let mut f = facc[r];
        if !F::SPLIT {
            let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for v in (0..nv).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, w[v], x[v]);
                if v + 1 < nv {
                    s1 = _mm512_dpbusd_epi32(s1, w[v + 1], x[v + 1]);
                }
            }
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            f = _mm512_fmadd_ps(s, _mm512_mul_ps(dlo, dx), f);
            f = _mm512_fmadd_ps(mlo, sv(1), f);
        } else {
            let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for v in 0..nv / 2 {
                lo = _mm512_dpbusd_epi32(lo, w[v], x[v]);
                hi = _mm512_dpbusd_epi32(hi, w[v + nv / 2], x[v + nv / 2]);
            }
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(dlo, dx), f);
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(dhi, dx), f);
            f = _mm512_fmadd_ps(mlo, sv(2), f);
            f = _mm512_fmadd_ps(mhi, sv(3), f);
        }
        facc[r] = f;
    }
}

/// The lane sums of four vectors: `[Σa, Σb, Σc, Σd]`. Each sum is computed in one fixed
/// order whatever the other three vectors are (lanes `i` and `i + 2` of each 128-bit quarter,
/// then the two pairs, then quarters 0 + 2 and 1 + 3, then those two), so that every
/// horizontal sum of the AVX-512 kernels, one vector or four at a time, rounds alike: see
/// [`hsum`].
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn reduce4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    let s = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(ab, cd),
        _mm512_shuffle_ps::<0xEE>(ab, cd),
    );
    let lo = _mm512_castps512_ps256(s);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
    let s = _mm256_add_ps(lo, hi);
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
}

/// The lane sum of `a` in `reduce4`'s order (bitwise equal to `reduce4(a, ..)[0]`).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn hsum(a: __m512) -> f32 {
    _mm_cvtss_f32(reduce4(a, a, a, a))
}

/// How many 4-row blocks ahead the decode kernel prefetches.
const PREFETCH_BLOCKS: usize = 4;

/// Token `t` against rows `rows` four at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4<F: Fmt>(w: &QWeight, act: &[u8], t: usize, rows: Range<usize>, out: *mut f32) {
    let base = w.data.as_slice().as_ptr();
    // Prologue: the first blocks of the range, which the running prefetch below only
    // covers from `PREFETCH_BLOCKS` blocks on (each chunk of a matvec starts cold).
    let first = base.wrapping_add(rows.start * w.row_bytes);
    let len = (rows.len().min(4 * PREFETCH_BLOCKS)) * w.row_bytes;
    let mut o = 0;
    while o < len {
        _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(o) as *const i8);
        o += 64;
    }
    let mut r = rows.start;
    while r + 4 <= rows.end {
        let row: [*const u8; 4] = std::array::from_fn(|i| base.add((r + i) * w.row_bytes));
        // The four rows are one contiguous range, read group by group (four streams the
        // hardware prefetcher follows poorly): prefetch the block `PREFETCH_BLOCKS` ahead
        // as one sequential range. (Measured on the 2-core EPYC: 30 → 50 GB/s per core.)
        let len = 4 * w.row_bytes;
        let start = row[0].wrapping_add(PREFETCH_BLOCKS * len);
        let mut o = 0;
        while o < len {
            // A prefetch never faults, past the end of the weight included.
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(o) as *const i8);
            o += 64;
        }
        let mut facc = [_mm512_setzero_ps(); 4];
        for grp in &w.groups {
            let p: [*const u8; 4] = std::array::from_fn(|i| row[i].add(grp.w_off));
            let a = act.as_ptr().add(t * w.act_bytes + grp.a_off);
            match (F::K, grp.g) {
                (_, 16) => group_rows::<F, 16, 4>(&p, a, &mut facc),
                (true, _) | (false, 8) => group_rows::<F, 8, 4>(&p, a, &mut facc),
                (false, 4) => group_rows::<F, 4, 4>(&p, a, &mut facc),
                (false, 2) => group_rows::<F, 2, 4>(&p, a, &mut facc),
                (false, _) => group_rows::<F, 1, 4>(&p, a, &mut facc),
            }
        }
        _mm_storeu_ps(
            out.add(t * w.rows + r),
            reduce4(facc[0], facc[1], facc[2], facc[3]),
        );
        r += 4;
    }
    if r < rows.end {
        self::rows::<F, 1>(w, act, t, r..rows.end, out);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tiles<F: Fmt>(w: &QWeight, act: &[u8], n: usize, rows_: Range<usize>, out: *mut f32) {
    if n < 4 {
        for t in 0..n {
            rows4::<F>(w, act, t, rows_.clone(), out);
        }
        return;
    }
    let mut t0 = 0;
    while t0 < n {
        let left = n - t0;
        let step = if left >= 4 {
            rows::<F, 4>(w, act, t0, rows_.clone(), out);
            4
        } else if left >= 2 {
            rows::<F, 2>(w, act, t0, rows_.clone(), out);
            2
        } else {
            rows::<F, 1>(w, act, t0, rows_.clone(), out);
            1
        };
        t0 += step;
    }
}

/// `out[t * w.rows + r] = W[r] · x[t]` for `r` in `rows`, `t < n`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI must be available; `act` holds `n` tokens quantized for `w` by
/// `act::quantize_token`, 64-byte aligned; `out` is valid for `n * w.rows` writes and no other
/// thread writes the same rows.
pub(crate) unsafe fn matmul_rows(
    w: &QWeight,
    act: &[u8],
    n: usize,
    rows: Range<usize>,
    out: *mut f32,
) {
    debug_assert!(act.len() >= n * w.act_bytes && (act.as_ptr() as usize).is_multiple_of(64));
    match w.fmt {
        QFmt::Q4_0 => tiles::<Q40>(w, act, n, rows, out),
        QFmt::Q4_1 => tiles::<Q41>(w, act, n, rows, out),
        QFmt::Q5_0 => tiles::<Q50>(w, act, n, rows, out),
        QFmt::Q5_1 => tiles::<Q51>(w, act, n, rows, out),
        QFmt::Q8_0 => tiles::<Q80>(w, act, n, rows, out),
        QFmt::Q2K => tiles::<Q2K>(w, act, n, rows, out),
        QFmt::Q3K => tiles::<Q3K>(w, act, n, rows, out),
        QFmt::Q4K => tiles::<Q4K>(w, act, n, rows, out),
        QFmt::Q5K => tiles::<Q5K>(w, act, n, rows, out),
        QFmt::Q6K => tiles::<Q6K>(w, act, n, rows, out),
    }
}
