//! AVX2 kernels for the repacked quantized layout (see `layout.rs`): the 512-bit group
//! vectors are processed as two 256-bit halves (lanes 0-7 and 8-15), with `maddubs` +
//! `madd` for the u8 × i8 dot products. Q8_0 values are turned back to signed bytes and
//! multiplied with the sign trick (`maddubs(|w|, x · sign(w))`), since `q + 128` times a byte
//! can overflow the i16 pair sums.
//!
//! # Safety
//!
//! Every kernel here needs AVX2, FMA and F16C and runs only at the `Avx2` level, set after
//! those were detected. The memory contract is that of the AVX-512 kernels (`x86_512`'s module
//! docs): rows asked for in `0 .. w.rows`, `act` 64-byte aligned with `w.act_bytes` per token
//! asked for, `out` valid for their writes and not accessed by another thread meanwhile. The
//! weight pointers may be read up to 14 bytes past a group (see `fmt.rs`).

use std::arch::x86_64::*;
use std::ops::Range;

use super::layout::{nvec, QFmt, QWeight};
use crate::cpu::float::x86_hsum256 as hsum;

mod fmt;

use fmt::{Fmt, A2, A3, A4, A5, A6, A8, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80};

/// Σ over pairs of `w` (u8, or i8 when `signed`) × `x` (i8) into i32 lanes.
///
/// # Safety
/// AVX2 is present.
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

/// One group of `G` blocks of a weight row against `T` tokens, half by half, accumulated
/// into `facc`.
///
/// # Safety
/// AVX2, FMA and F16C are present; `p` and the `T` pointers of `a` address the group in the
/// weight row and in each token's activations (module docs).
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
                if F::HAS_M {
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

/// Rows `rows` of `w` against tokens `t0 .. t0 + T`.
///
/// # Safety
/// AVX2, FMA and F16C are present; the module's memory contract for those rows and tokens.
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

/// Rows `rows_` of `w` against tokens `0 .. n`, two at a time.
///
/// # Safety
/// AVX2, FMA and F16C are present; the module's memory contract for those rows and tokens.
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
/// AVX2, FMA and F16C are present; `rows` lies in `0 .. w.rows`; `act` holds `n` tokens
/// quantized for `w` by `act::quantize_token` (`n * w.act_bytes` bytes), 64-byte aligned;
/// `out` is valid for `n * w.rows` writes and no other thread accesses rows `rows` of it
/// during the call.
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
        QFmt::A2 => tiles::<A2>(w, act, n, rows, out),
        QFmt::A3 => tiles::<A3>(w, act, n, rows, out),
        QFmt::A4 => tiles::<A4>(w, act, n, rows, out),
        QFmt::A5 => tiles::<A5>(w, act, n, rows, out),
        QFmt::A6 => tiles::<A6>(w, act, n, rows, out),
        QFmt::A8 => tiles::<A8>(w, act, n, rows, out),
    }
}
