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
//!
//! # Safety
//!
//! Every kernel here needs AVX-512 F/BW/VL/VNNI (`reduce4` and `hsum` only F) and runs only
//! at the `Avx512` level, set after those were detected. The kernels of one (weight, tokens)
//! call share one memory contract, that of [`matmul_rows`]:
//! - `w` is a repacked weight and the rows asked for lie in `0 .. w.rows`; a weight pointer
//!   `p` addresses one group of a row, valid for its bytes (see `fmt.rs`);
//! - `act` holds, for every token asked for, its `w.act_bytes` of activations quantized for
//!   `w` by `act::quantize_token`, and is 64-byte aligned; an activation pointer `a`
//!   addresses one group of one token (`act_group_bytes(G)` bytes, read with aligned loads);
//! - `out` is valid for writes at `t * w.rows + r` for every token `t` and row `r` asked for,
//!   and no other thread accesses those elements during the call.
//!
//! Prefetches may point past the weight: they never fault.

use std::arch::x86_64::*;
use std::ops::Range;

use super::layout::{nvec, QFmt, QWeight};

mod fmt;

use fmt::{Fmt, A2, A3, A4, A5, A6, A8, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80};

/// One group of `G` blocks of a weight row against `T` tokens, accumulated into `facc`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI are present; `p` and the `T` pointers of `a` address the group in
/// the weight row and in each token's activations (module docs).
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

/// Rows `rows` of `w` against tokens `t0 .. t0 + T`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI are present; the module's memory contract for those rows and tokens.
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
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI are present; the `R` pointers of `p` and `a` address the group in
/// each weight row and in the token's activations (module docs).
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
///
/// # Safety
/// AVX-512 F is present.
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
///
/// # Safety
/// AVX-512 F is present.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn hsum(a: __m512) -> f32 {
    _mm_cvtss_f32(reduce4(a, a, a, a))
}

/// How many 4-row blocks ahead the decode kernel prefetches.
const PREFETCH_BLOCKS: usize = 4;

/// Token `t` against rows `rows` four at a time.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI are present; the module's memory contract for token `t` and rows `rows`.
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

/// Rows `rows_` of `w` against tokens `0 .. n`: four rows per pass for `n < 4`, else `T`
/// tokens per pass.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI are present; the module's memory contract for those rows and tokens.
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
/// AVX-512 F/BW/VL/VNNI are present; `rows` lies in `0 .. w.rows`; `act` holds `n` tokens
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
