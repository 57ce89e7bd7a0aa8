//! A small f32 vector abstraction for the kernels LLVM does not vectorize well on its own
//! (reductions: dot products, sums of squares, softmax).
//!
//! Code is written once as an `#[inline(always)]` function generic over [`Simd`] and
//! instantiated inside a `#[target_feature]` wrapper per level, where the trait's methods
//! (themselves `#[target_feature]` + `#[inline]`) inline. [`Scalar`] (one lane) is the
//! portable version.
//!
//! # Safety
//!
//! The methods of [`Simd`] are `unsafe` because each is compiled for its level's instruction
//! set and may only run where that set is present: AVX-512 F for `V512`, AVX2 and FMA for
//! `V256`, nothing for [`Scalar`]. Generic kernels call them inside the `#[target_feature]`
//! wrappers that [`simd_fn!`] defines, which run only at the matching [`SimdLevel`] (a level is
//! only ever set after its features were detected). `load` and `store` also need a pointer
//! valid for `N` f32 reads or writes, at any alignment.
//!
//! [`SimdLevel`]: super::SimdLevel

/// An f32 vector of `N` lanes and the operations the kernels need (contract: module docs).
pub(crate) trait Simd {
    type V: Copy;
    /// Lanes per vector.
    const N: usize;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn zero() -> Self::V;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn splat(x: f32) -> Self::V;
    /// `N` values at `p` (unaligned).
    ///
    /// # Safety
    /// `p` is valid for `N` f32 reads; the level's features are present (module docs).
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p` is valid for `N` f32 writes; the level's features are present (module docs).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`.
    ///
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `1 / a` (exact division).
    ///
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn recip(a: Self::V) -> Self::V;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn sum(v: Self::V) -> f32;
    /// `[sum(a), sum(b), sum(c), sum(d)]`.
    ///
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn sum4(a: Self::V, b: Self::V, c: Self::V, d: Self::V) -> [f32; 4];
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn hmax(v: Self::V) -> f32;
    /// # Safety
    /// The level's features are present (module docs).
    unsafe fn exp(v: Self::V) -> Self::V;
}

pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const N: usize = 1;
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn zero() -> f32 {
        0.0
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    /// # Safety
    /// `p` is valid for one f32 read (module docs).
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    /// # Safety
    /// `p` is valid for one f32 write (module docs).
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn recip(a: f32) -> f32 {
        1.0 / a
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn sum(v: f32) -> f32 {
        v
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn sum4(a: f32, b: f32, c: f32, d: f32) -> [f32; 4] {
        [a, b, c, d]
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn hmax(v: f32) -> f32 {
        v
    }
    /// # Safety
    /// None: the portable level needs no feature (module docs).
    unsafe fn exp(v: f32) -> f32 {
        super::mv::exp(v)
    }
}

/// `Σ a[i] b[i]` over `n` values.
///
/// # Safety
/// `a` and `b` are valid for `n` f32 reads; `S`'s features are present (module docs).
#[inline(always)]
pub(crate) unsafe fn dot<S: Simd>(a: *const f32, b: *const f32, n: usize) -> f32 {
    let (mut s0, mut s1) = (S::zero(), S::zero());
    let mut i = 0;
    while i + 2 * S::N <= n {
        s0 = S::fmadd(S::load(a.add(i)), S::load(b.add(i)), s0);
        s1 = S::fmadd(S::load(a.add(i + S::N)), S::load(b.add(i + S::N)), s1);
        i += 2 * S::N;
    }
    if i + S::N <= n {
        s0 = S::fmadd(S::load(a.add(i)), S::load(b.add(i)), s0);
        i += S::N;
    }
    let mut s = S::sum(S::add(s0, s1));
    while i < n {
        s += *a.add(i) * *b.add(i);
        i += 1;
    }
    s
}

/// `y[i] = y[i] * c + p * x[i]` over `n` values.
///
/// # Safety
/// `x` is valid for `n` f32 reads and `y` for `n` reads and writes (`y` may be `x`: each
/// element is read before it is written); `S`'s features are present (module docs).
#[inline(always)]
pub(crate) unsafe fn scale_axpy<S: Simd>(y: *mut f32, c: f32, p: f32, x: *const f32, n: usize) {
    let (cv, pv) = (S::splat(c), S::splat(p));
    let mut i = 0;
    while i + S::N <= n {
        let v = S::fmadd(S::load(x.add(i)), pv, S::mul(S::load(y.add(i)), cv));
        S::store(y.add(i), v);
        i += S::N;
    }
    while i < n {
        *y.add(i) = *y.add(i) * c + p * *x.add(i);
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{V256, V512};

/// Defines `fn name(level, args...)` running the `#[inline(always)] unsafe fn generic<S:
/// Simd>(args...)` compiled for the level's instruction set.
///
/// The function defined is safe, so `generic` may require nothing but `S`'s features: it
/// takes slices and checks their lengths itself (every generic passed here does).
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident = $generic:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)?) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::cpu::SimdLevel, $($a: $t),*) $(-> $r)? {
            /// # Safety
            /// AVX-512 F/BW/VL, AVX2, FMA and F16C are present.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v512($($a: $t),*) $(-> $r)? {
                $generic::<$crate::cpu::simd::V512>($($a),*)
            }
            /// # Safety
            /// AVX2, FMA and F16C are present.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v256($($a: $t),*) $(-> $r)? {
                $generic::<$crate::cpu::simd::V256>($($a),*)
            }
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the level is Avx512 only after its features (a superset of v512's)
                // were detected; `generic` needs nothing else (see the macro's docs).
                $crate::cpu::SimdLevel::Avx512 => unsafe { v512($($a),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for Avx2 and v256's features.
                $crate::cpu::SimdLevel::Avx2 => unsafe { v256($($a),*) },
                // SAFETY: `Scalar` needs no feature; `generic` needs nothing else.
                _ => unsafe { $generic::<$crate::cpu::simd::Scalar>($($a),*) },
            }
        }
    };
}

pub(crate) use simd_fn;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Simd;

    pub(crate) struct V512;
    pub(crate) struct V256;

    impl Simd for V512 {
        type V = __m512;
        const N: usize = 16;
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        /// # Safety
        /// AVX-512 F is present; `p` is valid for 16 unaligned f32 reads (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        /// # Safety
        /// AVX-512 F is present; `p` is valid for 16 unaligned f32 writes (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn recip(a: __m512) -> __m512 {
            _mm512_div_ps(_mm512_set1_ps(1.0), a)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn sum(v: __m512) -> f32 {
            // `sum4`'s order (not the intrinsic's, whose order is the compiler's choice).
            crate::cpu::x86_512::hsum(v)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn sum4(a: __m512, b: __m512, c: __m512, d: __m512) -> [f32; 4] {
            let mut r = [0f32; 4];
            _mm_storeu_ps(r.as_mut_ptr(), crate::cpu::x86_512::reduce4(a, b, c, d));
            r
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn hmax(v: __m512) -> f32 {
            _mm512_reduce_max_ps(v)
        }
        /// # Safety
        /// AVX-512 F is present (module docs).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn exp(x: __m512) -> __m512 {
            // As `mv::exp`; `scalef` applies 2^n.
            let x = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
                _mm512_set1_ps(88.0),
            );
            let n = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
            ));
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
            let mut p = _mm512_set1_ps(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
            }
            let y = _mm512_add_ps(
                _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
                _mm512_set1_ps(1.0),
            );
            _mm512_scalef_ps(y, n)
        }
    }

    impl Simd for V256 {
        type V = __m256;
        const N: usize = 8;
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        /// # Safety
        /// AVX2 and FMA are present; `p` is valid for 8 unaligned f32 reads (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        /// # Safety
        /// AVX2 and FMA are present; `p` is valid for 8 unaligned f32 writes (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn recip(a: __m256) -> __m256 {
            _mm256_div_ps(_mm256_set1_ps(1.0), a)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sum(v: __m256) -> f32 {
            crate::cpu::float::x86_hsum256(v)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sum4(a: __m256, b: __m256, c: __m256, d: __m256) -> [f32; 4] {
            let abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
            let s = _mm_add_ps(
                _mm256_castps256_ps128(abcd),
                _mm256_extractf128_ps::<1>(abcd),
            );
            let mut r = [0f32; 4];
            _mm_storeu_ps(r.as_mut_ptr(), s);
            r
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn hmax(v: __m256) -> f32 {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            _mm_cvtss_f32(m)
        }
        /// # Safety
        /// AVX2 and FMA are present (module docs).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn exp(x: __m256) -> __m256 {
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
                _mm256_set1_ps(88.0),
            );
            let n =
                _mm256_round_ps::<0x08>(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)));
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let mut p = _mm256_set1_ps(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            let y = _mm256_add_ps(
                _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
                _mm256_set1_ps(1.0),
            );
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_mul_ps(y, _mm256_castsi256_ps(e))
        }
    }
}
