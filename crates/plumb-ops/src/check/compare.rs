//! Comparing a backend's output with the reference.

/// How far `got` is from `want`.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Σ(got − want)² / Σ want² (infinite if any element is not finite).
    pub nmse: f64,
    pub max_abs: f64,
    pub worst: usize,
    /// The first few mismatching elements, for a failure report.
    pub first_mismatches: Vec<(usize, f32, f32)>,
    /// Elements that are NaN or infinite in `got` but finite in `want` (unwritten, or overflow).
    pub non_finite: usize,
}

pub fn compare(got: &[f32], want: &[f32]) -> Comparison {
    compare_with_scale(got, want, None)
}

/// Like [`compare`], with the NMSE's denominator given: for a dot product the natural scale of
/// the error is Σ_k (w_k x_k)², not the (possibly cancelled) square of the result.
pub fn compare_with_scale(got: &[f32], want: &[f32], scale: Option<f64>) -> Comparison {
    let (mut num, mut den, mut max_abs, mut worst, mut non_finite) =
        (0f64, 0f64, 0f64, 0usize, 0usize);
    let mut first = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() && w.is_finite() {
            non_finite += 1;
            if first.len() < 5 {
                first.push((i, g, w));
            }
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        num += d * d;
        den += w as f64 * w as f64;
        if d > max_abs {
            max_abs = d;
            worst = i;
        }
        if d > 1e-3 * (1.0 + (w as f64).abs()) && first.len() < 5 {
            first.push((i, g, w));
        }
    }
    let den = scale.unwrap_or(den);
    let nmse = if non_finite > 0 || got.len() != want.len() {
        f64::INFINITY
    } else if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        num / den
    };
    Comparison {
        nmse,
        max_abs,
        worst,
        first_mismatches: first,
        non_finite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_length_mismatch_fail() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0]).nmse, 0.0);
        assert!(compare(&[f32::NAN, 2.0], &[1.0, 2.0]).nmse.is_infinite());
        assert!(compare(&[1.0], &[1.0, 2.0]).nmse.is_infinite());
        let c = compare(&[1.0, 2.5], &[1.0, 2.0]);
        assert!((c.nmse - 0.25 / 5.0).abs() < 1e-12);
        assert_eq!(c.worst, 1);
    }
}
