//! Function multiversioning for the plain loops (norms, elementwise, attention).
//!
//! `multiversion!` turns a function body written as plain Rust (fixed-width accumulator
//! arrays, no branches in the inner loops) into three compiled versions: one with AVX-512
//! enabled, one with AVX2 + FMA, and the portable one; the caller picks by
//! [`SimdLevel`](super::SimdLevel). LLVM vectorizes the body for each. Only code with exact lane semantics goes here (no
//! reassociation is assumed: reductions use explicit lane arrays).

/// Defines `fn name(level: SimdLevel, args...) -> ret` from a plain body (see module docs).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::cpu::SimdLevel, $($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($a: $t),*) $(-> $r)? $body

            /// # Safety
            /// AVX-512 F/BW/VL, AVX2, FMA and F16C are present (the body is safe code).
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v512($($a: $t),*) $(-> $r)? {
                inner($($a),*)
            }

            /// # Safety
            /// AVX2, FMA and F16C are present (the body is safe code).
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v256($($a: $t),*) $(-> $r)? {
                inner($($a),*)
            }

            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the level is Avx512 only after the features were detected.
                $crate::cpu::SimdLevel::Avx512 => unsafe { v512($($a),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the level is Avx2 only after the features were detected.
                $crate::cpu::SimdLevel::Avx2 => unsafe { v256($($a),*) },
                _ => inner($($a),*),
            }
        }
    };
}

pub(crate) use multiversion;

/// `e^x` to about 2 ulp for x in [-87, 88] (clamped outside): Cephes' `expf` polynomial,
/// branch-free so that it vectorizes.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 · 2^23 trick (no libm call on targets without a rounding
    // instruction); |x · log2 e| < 2^22 after the clamp.
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = super::exp(x) as f64;
            let r = (x as f64).exp();
            worst = worst.max(((e - r) / r).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(super::exp(-1000.0) < 1e-37 && super::exp(1000.0).is_finite());
    }
}
