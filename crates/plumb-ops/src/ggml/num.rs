//! Scalar building blocks with the rounding of ggml's x86 kernels: a single-rounding FMA, f16
//! storage, the orders in which vector lanes are summed, the f16 dot product and the vectorized
//! exponential. Every vector lane is computed independently in those kernels, so a function of
//! one lane here gives the bits of the vector code.

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

/// The sum of `N` lanes (a power of two) by folding: the upper half of the lanes is added
/// onto the lower half, lane `i` with lane `i + N/2`, until one lane is left. For 8 lanes
/// that is `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
///
/// This is the order of ggml's 8-lane float sum (the upper 128 bits onto the lower, then the
/// upper pair onto the lower pair, then the two lanes) and of the 16-lane sum that GCC emits
/// for AVX-512 (256-bit halves first, then as for 8 lanes).
#[inline]
pub fn sum_by_halves<const N: usize>(lanes: [f32; N]) -> f32 {
    const { assert!(N.is_power_of_two()) };
    let mut v = lanes;
    let mut len = N;
    while len > 1 {
        len /= 2;
        for i in 0..len {
            v[i] += v[i + len];
        }
    }
    v[0]
}

/// The 8-lane sum that ends ggml's f32 and f16 dot products on AVX: the upper four lanes are
/// added onto the lower four, then neighbouring lanes are added pairwise twice (two
/// horizontal adds), so with `t = a[0..4] + a[4..8]` the result is `(t0 + t1) + (t2 + t3)`.
#[inline]
pub fn sum_halves_then_neighbours(a: [f32; 8]) -> f32 {
    let t: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// The dot product of ggml's vectorized f16 kernels, for a vector of `W` f32 lanes. `x` and
/// `y` hold f16 values (as f32), so every product is exact and only the additions round.
///
/// Elements go in steps of `4·W` into four accumulators of `W` lanes: element `k` of a step
/// belongs to accumulator `k / W`, lane `k % W`, and is added there with one FMA. After the
/// last whole step the accumulators are combined lane by lane as `(acc0 + acc2) + (acc1 +
/// acc3)` and the lanes summed by `lane_sum`. That f32 sum is widened to f64, the elements past
/// the last whole step are added to it one at a time (each product rounded to f32, then
/// widened), and the total is narrowed to f32.
fn dot_f16_lanes<const W: usize>(x: &[f32], y: &[f32], lane_sum: fn([f32; W]) -> f32) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [[0f32; W]; 4];
    let steps = x.chunks_exact(4 * W).zip(y.chunks_exact(4 * W));
    for (xs, ys) in steps {
        for (k, (&a, &b)) in xs.iter().zip(ys).enumerate() {
            let lane = &mut acc[k / W][k % W];
            *lane = fma(a, b, *lane);
        }
    }
    let combined: [f32; W] =
        std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let whole = n - n % (4 * W);
    let total = x[whole..]
        .iter()
        .zip(&y[whole..])
        .fold(lane_sum(combined) as f64, |s, (&a, &b)| s + (a * b) as f64);
    total as f32
}

/// The f16 dot product of an AVX2 + F16C build: 8 lanes, [`sum_halves_then_neighbours`].
pub fn dot_f16_avx2(x: &[f32], y: &[f32]) -> f32 {
    dot_f16_lanes::<8>(x, y, sum_halves_then_neighbours)
}

/// The f16 dot product of an AVX-512 build: 16 lanes, [`sum_by_halves`].
pub fn dot_f16_avx512(x: &[f32], y: &[f32]) -> f32 {
    dot_f16_lanes::<16>(x, y, sum_by_halves::<16>)
}

// The exponential of ggml's vectorized kernels: exp(x) = 2^n · exp(r) with x = n·ln 2 + r,
// exp(r) from a polynomial of degree 5, then scaled by 2^n.

/// `1.5 · 2^23`: adding it to a value of magnitude below 2^22 leaves an f32 whose spacing is
/// 1, so the sum is that value rounded to an integer (ties to even).
const ROUND_SHIFT: f32 = f32::from_bits(0x4b40_0000);
/// log2(e) rounded to f32 (0x1.715476p+0).
const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b);
/// ln 2 split in two: a head with few significant bits (0x1.62e4p-1), whose product with any
/// `n` in range is exact, and a tail (0x1.7f7d1cp-20) holding the next bits of ln 2.
const LN2_HEAD: f32 = f32::from_bits(0x3f31_7200);
const LN2_TAIL: f32 = f32::from_bits(0x35bf_be8e);
/// The coefficients of `exp(r) - 1 ≈ C1·r + C2·r² + C3·r³ + C4·r⁴ + C5·r⁵` (close to
/// `1/k!`, fitted for the reduced range).
const C1: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
const C2: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
const C3: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
const C4: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
const C5: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7

/// Range reduction: `(n, r)` with `x = n·ln 2 + r`, `n` the integer nearest to `x·log2(e)`
/// (an integer-valued f32; huge or infinite when `x` is) and `|r|` about `ln 2 / 2` at most.
///
/// `n` costs no rounding instruction: `x·log2(e) + ROUND_SHIFT` is one FMA, rounded to an
/// integer by the magnitude of the shift, and subtracting the shift again is exact. `r` is
/// `x - n·head - n·tail` in two FMAs (the head first), so it keeps the bits of ln 2 that one
/// f32 could not hold.
#[inline]
fn reduce(x: f32) -> (f32, f32) {
    let n = fma(x, LOG2_E, ROUND_SHIFT) - ROUND_SHIFT;
    let r = fma(-n, LN2_TAIL, fma(-n, LN2_HEAD, x));
    (n, r)
}

/// The degree-5 polynomial in the reduced argument, evaluated by pairs of coefficients: with
/// `r2 = r·r`, `((C5·r + C4)·r2 + (C3·r + C2))·r2 + low`, every `·+` one FMA. `low` is the
/// rest of the polynomial, supplied by the caller: `C1·r` when the scaling adds the constant
/// 1, or `C1·r + 1` (one FMA) when the polynomial is to include it.
#[inline]
fn poly5(r: f32, low: f32) -> f32 {
    let r2 = r * r;
    let high = fma(fma(C5, r, C4), r2, fma(C3, r, C2));
    fma(high, r2, low)
}

/// `2^k` for an integer `k` in the normal range `-126..=127`, built from its exponent field.
#[inline]
fn pow2(k: i32) -> f32 {
    debug_assert!((-126..=127).contains(&k));
    f32::from_bits(((k + 127) as u32) << 23)
}

/// The last step of the AVX2 exponential: `(1 + p)·2^n` for `p ≈ exp(r) - 1`.
///
/// For `|n| ≤ 126`, `2^n` is a normal f32 and the result is the single FMA `p·2^n + 2^n`.
/// Beyond, `2^n` is not a normal f32 (it overflows above 2^127 and is subnormal below
/// 2^-126), so it is split into two powers of two: a normal factor `a` that takes part in the
/// FMA — `2^(n-127)` for positive `n`, `2^(n+125)` for negative — and the constant rest `b`
/// (`2^127` or `2^-125`), applied by a final multiplication. That product is where a result
/// overflows to infinity or lands among the subnormals (rounded a second time there). For
/// `|n| > 192` the result is `b·b`: infinity for positive `n`, 0 for negative. A NaN `n` takes
/// the first path, where `p` is NaN too.
#[inline]
fn scale_split(p: f32, n: f32) -> f32 {
    if n.abs() > 192.0 {
        return if n > 0.0 { f32::INFINITY } else { 0.0 };
    }
    if n.abs() > 126.0 {
        let k = n as i32;
        let (a, b) = if k > 0 {
            (pow2(k - 127), pow2(127))
        } else {
            (pow2(k + 125), pow2(-125))
        };
        return fma(p, a, a) * b;
    }
    let s = pow2(n as i32);
    fma(p, s, s)
}

/// The last step of the AVX-512 exponential: `p·2^n` rounded once, as `vscalefps` computes
/// it (so a subnormal result is rounded only once); for `|n| > 192` infinity (positive `n`)
/// or 0 (negative `n`).
#[inline]
fn scale_exact(p: f32, n: f32) -> f32 {
    if n.abs() > 192.0 {
        return if n > 0.0 { f32::INFINITY } else { 0.0 };
    }
    (p as f64 * 2f64.powi(n as i32)) as f32
}

/// `exp(x)` as ggml's AVX2 + FMA kernels compute it: [`reduce`], the polynomial without its
/// constant term, [`scale_split`]. Within 1.96 ulp of `exp` (the polynomial's 1.45 ulp and
/// the final rounding); 0 below about -103.97 and infinity above about 88.72, where `exp`
/// leaves the f32 range.
pub fn exp_avx2(x: f32) -> f32 {
    let (n, r) = reduce(x);
    scale_split(poly5(r, C1 * r), n)
}

/// `exp(x)` as ggml's AVX-512 (F + DQ) kernels compute it: [`reduce`], the polynomial with its
/// constant 1, [`scale_exact`]. Rounding `1 + C1·r` before the higher terms are added costs up
/// to 0.5 ulp more than [`exp_avx2`] (within 2.24 ulp of `exp`); the same range.
pub fn exp_avx512(x: f32) -> f32 {
    let (n, r) = reduce(x);
    scale_exact(poly5(r, fma(C1, r, 1.0)), n)
}

/// ggml's vectorized SiLU, `x / (1 + exp(0 - x))` with [`exp_avx512`] or [`exp_avx2`]; the
/// negation is the subtraction `0 - x` (so `-0.0` gives `+0.0`), each step rounded to f32.
pub fn silu(x: f32, avx512: bool) -> f32 {
    let neg = 0.0 - x;
    let e = if avx512 {
        exp_avx512(neg)
    } else {
        exp_avx2(neg)
    };
    x / (1.0 + e)
}
