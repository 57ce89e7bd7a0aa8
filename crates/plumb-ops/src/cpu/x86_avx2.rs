//! AVX2 kernels for the repacked quantized layout (see `layout.rs`): the 512-bit group
//! vectors are processed as two 256-bit halves (lanes 0-7 and 8-15), with `maddubs` +
//! `madd` for the u8 × i8 dot products. Q8_0 values are turned back to signed bytes and
//! multiplied with the sign trick (`maddubs(|w|, x · sign(w))`), since `q + 128` times a byte
//! can overflow the i16 pair sums.

use std::arch::x86_64::*;
use std::ops::Range;

use super::float::x86_hsum256 as hsum;
use super::layout::{lane_block, nvec, QFmt, QWeight};

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

/// 8 f16 at `p` (may over-read: callers' buffers carry slack, unused lanes are dropped).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn ld_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld_u8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// The K-quant super-block scale of half `h` (one super-block per half for g = 16).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn sup<const G: usize>(p: *const u8, h: usize) -> __m256 {
    let i = if G == 16 { h } else { 0 };
    let v = half::f16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]).to_f32();
    _mm256_set1_ps(v)
}

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

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8], add: i8) {
    let a = _mm256_set1_epi8(add);
    for (v, wv) in w.iter_mut().enumerate().take(nvec(G)) {
        let k = (p.add(8 * v + 4 * h) as *const u32).read_unaligned();
        *wv = _mm256_add_epi8(*wv, _mm256_and_si256(bytes_from_bits(k), a));
    }
}

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

trait Fmt {
    const SPLIT: bool;
    const K: bool;
    /// Values are signed bytes (Q8_0): dot with the sign trick, `mw` is 0.
    const SIGNED: bool = false;
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]);
    unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4];
}

macro_rules! legacy {
    ($name:ident, $bits:expr, $d:expr, $m:expr, $off:expr) => {
        struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = false;
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
                nib::<G>(p, h, w);
                if $bits {
                    bits::<G>(p.add(16 * G), h, w, 16);
                }
            }
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

struct Q80;
impl Fmt for Q80 {
    const SPLIT: bool = false;
    const K: bool = false;
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
        let flip = _mm256_set1_epi8(-128);
        for (v, wv) in w.iter_mut().enumerate().take(nvec(G)) {
            *wv = _mm256_xor_si256(
                _mm256_loadu_si256(p.add(64 * v + 32 * h) as *const __m256i),
                flip,
            );
        }
    }
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
        struct $name;
        impl Fmt for $name {
            const SPLIT: bool = false;
            const K: bool = true;
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
                nib::<G>(p, h, w);
                if $bits {
                    bits::<G>(p.add(16 * G), h, w, 16);
                }
            }
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
        struct $name;
        impl Fmt for $name {
            const SPLIT: bool = true;
            const K: bool = true;
            #[inline]
            #[target_feature(enable = "avx2")]
            unsafe fn unpack<const G: usize>($p: *const u8, $h: usize, $w: &mut [__m256i; 8]) $unpack
            #[inline]
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn scales<const G: usize>(p: *const u8, h: usize) -> [__m256; 4] {
                let b = base(G, h);
                let d = sup::<G>(p.add($sc * G + 2 * G), h);
                let ld = |o: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(o + b) as *const __m128i)));
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

struct Q2K;
impl Fmt for Q2K {
    const SPLIT: bool = true;
    const K: bool = true;
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack<const G: usize>(p: *const u8, h: usize, w: &mut [__m256i; 8]) {
        two::<G>(p, h, w, false);
    }
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

/// Σ over pairs of `w` (u8, or i8 when `signed`) × `x` (i8) into i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot2(w0: __m256i, x0: __m256i, w1: __m256i, x1: __m256i, signed: bool) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    if signed {
        let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(x0, w0));
        let p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(x1, w1));
        _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones))
    } else {
        // At most 6-bit values: two pair sums stay below 2 · 2 · 63 · 127 < 2^15.
        let p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0), _mm256_maddubs_epi16(w1, x1));
        _mm256_madd_epi16(p, ones)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<F: Fmt, const G: usize, const T: usize>(
    p: *const u8,
    a: &[*const u8; T],
    facc: &mut [__m256; T],
) {
    let nv = nvec(G);
    let halves = if G == 1 { 1 } else { 2 };
    for h in 0..halves {
        let mut w = [_mm256_setzero_si256(); 8];
        F::unpack::<G>(p, h, &mut w);
        let [dlo, mlo, dhi, mhi] = F::scales::<G>(p, h);
        for t in 0..T {
            let a = a[t];
            let x = |v: usize| _mm256_load_si256(a.add(64 * v + 32 * h) as *const __m256i);
            let sv = |i: usize| _mm256_load_ps(a.add(64 * (nv + i) + 32 * h) as *const f32);
            let dx = sv(0);
            let mut f = facc[t];
            if !F::SPLIT {
                let mut s = _mm256_setzero_si256();
                let mut v = 0;
                while v + 1 < nv {
                    s = _mm256_add_epi32(s, dot2(w[v], x(v), w[v + 1], x(v + 1), F::SIGNED));
                    v += 2;
                }
                if v < nv {
                    s = _mm256_add_epi32(
                        s,
                        dot2(
                            w[v],
                            x(v),
                            _mm256_setzero_si256(),
                            _mm256_setzero_si256(),
                            F::SIGNED,
                        ),
                    );
                }
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dlo, dx), f);
                if !F::SIGNED {
                    f = _mm256_fmadd_ps(mlo, sv(1), f);
                }
            } else {
                let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                let half = nv / 2;
                for v in (0..half).step_by(2) {
                    lo = _mm256_add_epi32(lo, dot2(w[v], x(v), w[v + 1], x(v + 1), false));
                    hi = _mm256_add_epi32(
                        hi,
                        dot2(
                            w[half + v],
                            x(half + v),
                            w[half + v + 1],
                            x(half + v + 1),
                            false,
                        ),
                    );
                }
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(dlo, dx), f);
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(dhi, dx), f);
                f = _mm256_fmadd_ps(mlo, sv(2), f);
                f = _mm256_fmadd_ps(mhi, sv(3), f);
            }
            facc[t] = f;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
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
        if T == 1 {
            // Decode streams the weight once: prefetch 16 rows ahead (a prefetch never
            // faults, past the end of the weight included).
            let start = row.wrapping_add(16 * w.row_bytes);
            let mut o = 0;
            while o < w.row_bytes {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(o) as *const i8);
                o += 64;
            }
        }
        let mut facc = [_mm256_setzero_ps(); T];
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
        for (t, f) in facc.iter().enumerate() {
            *out.add((t0 + t) * w.rows + r) = hsum(*f);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiles<F: Fmt>(w: &QWeight, act: &[u8], n: usize, rows_: Range<usize>, out: *mut f32) {
    let mut t0 = 0;
    while t0 < n {
        if n - t0 >= 2 {
            rows::<F, 2>(w, act, t0, rows_.clone(), out);
            t0 += 2;
        } else {
            rows::<F, 1>(w, act, t0, rows_.clone(), out);
            t0 += 1;
        }
    }
}

/// As `x86_512::matmul_rows`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; otherwise as `x86_512::matmul_rows`.
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
