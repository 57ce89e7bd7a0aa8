//! Scalar building blocks with ggml's rounding: fused multiply-add, f16 storage, the horizontal
//! sums of its x86 kernels, its vectorized `expf`, and its f16 dot product.

/// `a * b + c` rounded once, as an FMA instruction computes it.
///
/// Done in f64 so that it is exact without target features: the product of two f32 is exact
/// in f64, the sum is rounded once to f64 and its error is recovered exactly (two-sum). The
/// narrowing to f32 can only round differently from a single rounding when the f64 sum lies
/// exactly halfway between two f32 values; then the sign of the recovered error decides.
#[inline]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64;
    let cd = c as f64;
    let s = p + cd;
    let r = s as f32;
    if !r.is_finite() {
        return r;
    }
    let bb = s - p;
    let err = (p - (s - bb)) + (cd - bb);
    let rd = r as f64;
    if err == 0.0 || rd == s {
        return r;
    }
    let other = if s > rd { r.next_up() } else { r.next_down() };
    let od = other as f64;
    if (od - s).abs() != (s - rd).abs() {
        return r;
    }
    // Exactly halfway in f64: the true value lies on the side of the error.
    if err > 0.0 {
        r.max(other)
    } else {
        r.min(other)
    }
}

/// `x` rounded to f16 (nearest, ties to even) and read back, as F16C's `vcvtps2ph` with
/// rounding mode 0 and `vcvtph2ps` do.
#[inline]
pub fn f16r(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// ggml's `hsum_float_8`: the upper four lanes are added to the lower four, then lanes
/// `{0,2}` and `{1,3}` pair up, then the two halves.
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let t = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// The reduction of ggml's four 8-lane f32 accumulators on AVX (`GGML_F32x8_REDUCE`):
/// accumulators `i` and `i + 2` are added, then the two results; then the 8 lanes: upper
/// half onto lower half and two horizontal adds.
#[inline]
pub fn reduce4x8(x: &[[f32; 8]; 4]) -> f32 {
    let mut a = [0f32; 8];
    let mut b = [0f32; 8];
    for l in 0..8 {
        a[l] = x[0][l] + x[2][l];
        b[l] = x[1][l] + x[3][l];
    }
    for l in 0..8 {
        a[l] += b[l];
    }
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// ggml's `ggml_vec_dot_f16` on AVX2 + F16C: `x` and `y` hold f16 values (as f32). Elements
/// go in steps of 32 into four 8-lane accumulators with FMA, are reduced by [`reduce4x8`],
/// and the elements past the last whole step are added in double.
pub fn dot_f16(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * j;
            for l in 0..8 {
                a[l] = fma(x[o + l], y[o + l], a[l]);
            }
        }
        i += 32;
    }
    let mut sum = reduce4x8(&acc) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// `_mm512_reduce_add_ps` as GCC expands it: upper 8 lanes onto lower 8, upper 4 onto
/// lower 4, then lanes `{0,2}` and `{1,3}`, then the two.
#[inline]
pub fn reduce16(a: &[f32; 16]) -> f32 {
    let mut t8 = [0f32; 8];
    for i in 0..8 {
        t8[i] = a[i + 8] + a[i];
    }
    let t4 = [t8[4] + t8[0], t8[5] + t8[1], t8[6] + t8[2], t8[7] + t8[3]];
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// `ggml_vec_dot_f16` on AVX-512: steps of 64 into four 16-lane accumulators, accumulators
/// `i` and `i + 2` added, then the two, then [`reduce16`]; the rest added in double.
pub fn dot_f16_512(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !63;
    let mut acc = [[0f32; 16]; 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            let o = i + 16 * j;
            for l in 0..16 {
                a[l] = fma(x[o + l], y[o + l], a[l]);
            }
        }
        i += 64;
    }
    let mut a = [0f32; 16];
    for l in 0..16 {
        a[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = reduce16(&a) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// A hexadecimal float literal `0x1.fffp-e`: `m` is all hex digits (leading 1 included) and
/// `e` the binary exponent already reduced by 4 per fraction digit.
fn hexf(m: u64, e: i32) -> f32 {
    (m as f64 * 2f64.powi(e)) as f32
}

/// The constants of ggml's vectorized `expf` (a polynomial after range reduction by
/// `n = round(x / ln 2)`).
struct ExpConsts {
    shift: f32,
    log2e: f32,
    ln2_hi: f32,
    ln2_lo: f32,
    c: [f32; 5],
}

fn exp_consts() -> &'static ExpConsts {
    static C: std::sync::OnceLock<ExpConsts> = std::sync::OnceLock::new();
    C.get_or_init(|| ExpConsts {
        shift: hexf(0x18, 19),
        log2e: hexf(0x1715476, -24),
        ln2_hi: hexf(0x162e4, -17),
        ln2_lo: hexf(0x17f7d1c, -44),
        c: [
            hexf(0x10e4020, -31),
            hexf(0x1573e2e, -29),
            hexf(0x1555e66, -27),
            hexf(0x1fffdb6, -26),
            hexf(0x1ffffec, -25),
        ],
    })
}

/// ggml's `ggml_v_expf` for AVX2 + FMA, one lane at a time (every lane is computed
/// independently there too). About 1.5 ulp from `exp`; flushes to 0 below about -104 and to
/// infinity above about 88.4.
pub fn v_expf(x: f32) -> f32 {
    let k = exp_consts();
    let z = fma(x, k.log2e, k.shift);
    let n = z - k.shift;
    let b = fma(-n, k.ln2_lo, fma(-n, k.ln2_hi, x));
    let e = z.to_bits().wrapping_shl(23);
    let scale = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let big = n.abs() > 126.0;
    let u = b * b;
    let j = fma(
        fma(fma(k.c[0], b, k.c[1]), u, fma(k.c[2], b, k.c[3])),
        u,
        k.c[4] * b,
    );
    if !big {
        return fma(j, scale, scale);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        fma(s2, j, s2) * s1
    }
}

/// ggml's `ggml_v_expf` for AVX-512 (F + DQ): the same reduction and polynomial, but the
/// polynomial includes the `+ 1` and the result is scaled by `2^n` exactly (`vscalefps`);
/// `|n| > 192` gives zero (n ≤ 0) or infinity.
pub fn v_expf_512(x: f32) -> f32 {
    let k = exp_consts();
    let z = fma(x, k.log2e, k.shift);
    let n = z - k.shift;
    let b = fma(-n, k.ln2_lo, fma(-n, k.ln2_hi, x));
    let u = b * b;
    let j = fma(
        fma(fma(k.c[0], b, k.c[1]), u, fma(k.c[2], b, k.c[3])),
        u,
        fma(k.c[4], b, 1.0),
    );
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    (j as f64 * 2f64.powi(n as i32)) as f32
}

/// ggml's vectorized SiLU: `x / (1 + v_expf(-x))`, with the AVX2 or the AVX-512 `expf`.
pub fn v_silu(x: f32, avx512: bool) -> f32 {
    let e = if avx512 {
        v_expf_512(0.0 - x)
    } else {
        v_expf(0.0 - x)
    };
    x / (1.0 + e)
}
