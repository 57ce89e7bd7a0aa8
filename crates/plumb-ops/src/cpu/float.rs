//! Matmul against F32, F16 and BF16 weights: f32 FMA, one weight row × up to 4 tokens per
//! pass (each weight vector is loaded and converted once per tile).

use super::SimdLevel;

/// Weight rows in a float format, row-major with `cols` per row.
#[derive(Clone, Copy)]
pub(crate) enum FloatRows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    BF16(&'a [u16]),
}

/// Where results go: `out[t * stride + row0 + i]` for local row `i` and token `t`.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    pub ptr: *mut f32,
    pub stride: usize,
    pub row0: usize,
}

/// For each local row `i < nrows` of `w` and token `t < n`: `out[t, row0 + i] = w[i] · x[t]`.
///
/// # Safety
/// `level` is supported by this machine (its features are present); `out.ptr` is valid for
/// writes at `t * out.stride + out.row0 + i` for every `t < n` and `i < nrows`, and no other
/// thread accesses those elements during the call. (The lengths of `w` and `x` are asserted.)
pub(crate) unsafe fn matmul_rows(
    level: SimdLevel,
    w: FloatRows<'_>,
    cols: usize,
    x: &[f32],
    n: usize,
    nrows: usize,
    out: OutPtr,
) {
    let len = match w {
        FloatRows::F32(v) => v.len(),
        FloatRows::F16(v) | FloatRows::BF16(v) => v.len(),
    };
    assert!(len >= nrows * cols && x.len() >= n * cols);
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => x86::rows_512(w, cols, x, n, nrows, out),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => x86::rows_avx2(w, cols, x, n, nrows, out),
        _ => rows_scalar(w, cols, x, n, nrows, out),
    }
}

/// The portable [`matmul_rows`].
///
/// # Safety
/// `out` as for [`matmul_rows`]; `w` and `x` are indexed with bounds checks.
unsafe fn rows_scalar(
    w: FloatRows<'_>,
    cols: usize,
    x: &[f32],
    n: usize,
    nrows: usize,
    out: OutPtr,
) {
    let mut row = vec![0f32; cols];
    for i in 0..nrows {
        let wr: &[f32] = match w {
            FloatRows::F32(v) => &v[i * cols..(i + 1) * cols],
            FloatRows::F16(v) => {
                for (o, h) in row.iter_mut().zip(&v[i * cols..(i + 1) * cols]) {
                    *o = half::f16::from_bits(*h).to_f32();
                }
                &row
            }
            FloatRows::BF16(v) => {
                for (o, h) in row.iter_mut().zip(&v[i * cols..(i + 1) * cols]) {
                    *o = f32::from_bits((*h as u32) << 16);
                }
                &row
            }
        };
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            // Eight partial sums: vectorizable and a shorter rounding chain.
            let mut acc = [0f32; 8];
            let mut wc = wr.chunks_exact(8);
            let mut xc = xt.chunks_exact(8);
            for (a, b) in (&mut wc).zip(&mut xc) {
                for k in 0..8 {
                    acc[k] += a[k] * b[k];
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
                s += a * b;
            }
            *out.ptr.add(t * out.stride + out.row0 + i) = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::hsum256 as x86_hsum256;

/// The AVX-512 and AVX2 kernels.
///
/// # Safety
///
/// Besides its target features, every kernel here has one pointer contract, that of
/// [`matmul_rows`] for the tokens it covers: `w` is valid for `nrows * cols` weight reads, `x`
/// holds `cols` values for each token read, and `out.ptr` is valid for the writes of those
/// tokens and rows, which no other thread accesses during the call.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{FloatRows, OutPtr};

    /// Loads 16 (AVX-512) or 8 (AVX2) weights as f32.
    trait Elem: Copy {
        /// The elements of `p` whose bit is set in `m` (the others read as 0).
        ///
        /// # Safety
        /// AVX-512 F/BW/VL are present; `p` is valid for reads of the elements selected by
        /// `m` (masked-off elements are not accessed and cannot fault).
        unsafe fn ld512(p: *const Self, m: __mmask16) -> __m512;
        /// # Safety
        /// AVX2 and F16C are present; `p` is valid for 8 element reads.
        unsafe fn ld256(p: *const Self) -> __m256;
        fn f32(self) -> f32;
    }
    impl Elem for f32 {
        /// # Safety
        /// As [`Elem::ld512`].
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn ld512(p: *const f32, m: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(m, p)
        }
        /// # Safety
        /// As [`Elem::ld256`].
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn ld256(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        fn f32(self) -> f32 {
            self
        }
    }
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    struct F16(u16);
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    struct BF16(u16);
    impl Elem for F16 {
        /// # Safety
        /// As [`Elem::ld512`].
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn ld512(p: *const F16, m: __mmask16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p as *const i16))
        }
        /// # Safety
        /// As [`Elem::ld256`].
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn ld256(p: *const F16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
        fn f32(self) -> f32 {
            half::f16::from_bits(self.0).to_f32()
        }
    }
    impl Elem for BF16 {
        /// # Safety
        /// As [`Elem::ld512`].
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn ld512(p: *const BF16, m: __mmask16) -> __m512 {
            let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        /// # Safety
        /// As [`Elem::ld256`].
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn ld256(p: *const BF16) -> __m256 {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        fn f32(self) -> f32 {
            f32::from_bits((self.0 as u32) << 16)
        }
    }

    /// # Safety
    /// AVX-512 F/BW/VL and F16C are present; the module's pointer contract for all `n` tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn rows_512(
        w: FloatRows<'_>,
        cols: usize,
        x: &[f32],
        n: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        match w {
            FloatRows::F32(v) => tiles_512(v.as_ptr(), cols, x, n, nrows, out),
            FloatRows::F16(v) => tiles_512(v.as_ptr() as *const F16, cols, x, n, nrows, out),
            FloatRows::BF16(v) => tiles_512(v.as_ptr() as *const BF16, cols, x, n, nrows, out),
        }
    }

    /// # Safety
    /// As [`rows_512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn tiles_512<E: Elem>(
        w: *const E,
        cols: usize,
        x: &[f32],
        n: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        let mut t0 = 0;
        while t0 < n {
            let step = if n - t0 >= 4 {
                tile_512::<E, 4>(w, cols, x, t0, nrows, out);
                4
            } else if n - t0 >= 2 {
                tile_512::<E, 2>(w, cols, x, t0, nrows, out);
                2
            } else {
                tile_512::<E, 1>(w, cols, x, t0, nrows, out);
                1
            };
            t0 += step;
        }
    }

    /// Tokens `t0 .. t0 + T` against the `nrows` rows.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and F16C are present; the module's pointer contract for tokens
    /// `t0 .. t0 + T`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn tile_512<E: Elem, const T: usize>(
        w: *const E,
        cols: usize,
        x: &[f32],
        t0: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        let xp = x.as_ptr().add(t0 * cols);
        let main = cols / 32 * 32;
        for i in 0..nrows {
            let wr = w.add(i * cols);
            if T == 1 {
                // Decode streams the weight: prefetch 8 rows ahead (never faults).
                let ahead = wr.wrapping_add(8 * cols) as *const u8;
                let mut o = 0;
                while o < cols * std::mem::size_of::<E>() {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
                    o += 64;
                }
            }
            // Two accumulators per token: two independent FMA chains.
            let mut acc = [[_mm512_setzero_ps(); 2]; T];
            let mut c = 0;
            while c < main {
                let w0 = E::ld512(wr.add(c), 0xffff);
                let w1 = E::ld512(wr.add(c + 16), 0xffff);
                for (t, a) in acc.iter_mut().enumerate() {
                    let x = xp.add(t * cols + c);
                    a[0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), a[0]);
                    a[1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x.add(16)), a[1]);
                }
                c += 32;
            }
            while c < cols {
                let m: __mmask16 = if cols - c >= 16 {
                    0xffff
                } else {
                    ((1u32 << (cols - c)) - 1) as u16
                };
                let wv = E::ld512(wr.add(c), m);
                for (t, a) in acc.iter_mut().enumerate() {
                    a[0] =
                        _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, xp.add(t * cols + c)), a[0]);
                }
                c += 16;
            }
            // One fixed summation order for every tile size (see `x86_512::reduce4`).
            let s: [__m512; T] = std::array::from_fn(|t| _mm512_add_ps(acc[t][0], acc[t][1]));
            let r = crate::cpu::x86_512::reduce4(s[0], s[1 % T], s[2 % T], s[3 % T]);
            let mut v = [0f32; 4];
            _mm_storeu_ps(v.as_mut_ptr(), r);
            for (t, &v) in v.iter().enumerate().take(T) {
                *out.ptr.add((t0 + t) * out.stride + out.row0 + i) = v;
            }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C are present; the module's pointer contract for all `n` tokens.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx2(
        w: FloatRows<'_>,
        cols: usize,
        x: &[f32],
        n: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        match w {
            FloatRows::F32(v) => tiles_avx2(v.as_ptr(), cols, x, n, nrows, out),
            FloatRows::F16(v) => tiles_avx2(v.as_ptr() as *const F16, cols, x, n, nrows, out),
            FloatRows::BF16(v) => tiles_avx2(v.as_ptr() as *const BF16, cols, x, n, nrows, out),
        }
    }

    /// # Safety
    /// As [`rows_avx2`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiles_avx2<E: Elem>(
        w: *const E,
        cols: usize,
        x: &[f32],
        n: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        let mut t0 = 0;
        while t0 < n {
            let step = if n - t0 >= 4 {
                tile_avx2::<E, 4>(w, cols, x, t0, nrows, out);
                4
            } else {
                tile_avx2::<E, 1>(w, cols, x, t0, nrows, out);
                1
            };
            t0 += step;
        }
    }

    /// The lane sum of `v` (halves, then pairs, then the last two).
    ///
    /// # Safety
    /// AVX2 and FMA are present.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// As [`tile_512`].
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; the module's pointer contract for tokens `t0 .. t0 + T`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_avx2<E: Elem, const T: usize>(
        w: *const E,
        cols: usize,
        x: &[f32],
        t0: usize,
        nrows: usize,
        out: OutPtr,
    ) {
        let xp = x.as_ptr().add(t0 * cols);
        let main = cols / 8 * 8;
        for i in 0..nrows {
            let wr = w.add(i * cols);
            let mut acc = [_mm256_setzero_ps(); T];
            let mut c = 0;
            while c < main {
                let wv = E::ld256(wr.add(c));
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(t * cols + c)), *a);
                }
                c += 8;
            }
            for (t, a) in acc.iter().enumerate() {
                let mut s = hsum256(*a);
                for k in main..cols {
                    s += (*wr.add(k)).f32() * *xp.add(t * cols + k);
                }
                *out.ptr.add((t0 + t) * out.stride + out.row0 + i) = s;
            }
        }
    }
}
