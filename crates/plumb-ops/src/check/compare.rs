//! Comparing a backend's output with the reference: the error over the whole output (NMSE)
//! and the worst single element, each measured against the output's natural scale.

/// What each op allows: an NMSE over the whole output and a bound on the worst element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest Σ(got − want)² / Σ scale² allowed.
    pub nmse: f64,
    /// Largest |got − want| / scale of any one element allowed.
    pub worst: f64,
}

impl Tolerance {
    /// Bit-exact: no element may differ.
    pub const EXACT: Tolerance = Tolerance {
        nmse: 0.0,
        worst: 0.0,
    };

    pub const fn new(nmse: f64, worst: f64) -> Tolerance {
        Tolerance { nmse, worst }
    }
}

/// The scale each element's error is measured against.
#[derive(Debug, Clone, Copy)]
pub enum Scale<'a> {
    /// The root mean square of the reference output, for every element.
    Rms,
    /// Each element's own squared scale: for a dot product `Σ_k (w_k x_k)²`, which does not
    /// vanish when the result cancels to near zero.
    PerElement(&'a [f64]),
}

/// How far `got` is from `want`.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Σ(got − want)² / Σ scale² (infinite if any element is not finite).
    pub nmse: f64,
    /// Largest |got − want|.
    pub max_abs: f64,
    /// Largest |got − want| / scale of one element (infinite for a non-finite element, or an
    /// error where the scale is zero).
    pub max_rel: f64,
    /// The element of `max_rel`.
    pub worst: usize,
    /// The worst few elements as (index, got, want), worst first, for a failure report.
    pub worst_elements: Vec<(usize, f32, f32)>,
    /// Elements that are NaN or infinite in `got` but finite in `want` (unwritten, or overflow).
    pub non_finite: usize,
}

impl Comparison {
    /// Whether this is within `tol`.
    pub fn within(&self, tol: Tolerance) -> bool {
        !self.nmse.is_nan() && self.nmse <= tol.nmse && self.max_rel <= tol.worst
    }
}

/// How many of the worst elements a comparison keeps.
const REPORTED: usize = 5;

pub fn compare(got: &[f32], want: &[f32]) -> Comparison {
    compare_with(got, want, Scale::Rms)
}

/// Compares element by element against `scale`. A length mismatch compares the common
/// prefix and reports an infinite NMSE.
pub fn compare_with(got: &[f32], want: &[f32], scale: Scale<'_>) -> Comparison {
    let len = got.len().min(want.len());
    let rms = {
        let sq: f64 = want[..len].iter().map(|&w| w as f64 * w as f64).sum();
        (sq / len.max(1) as f64).sqrt()
    };
    let elem_scale = |i: usize| match scale {
        Scale::Rms => rms,
        Scale::PerElement(s) => s.get(i).map_or(0.0, |v| v.max(0.0).sqrt()),
    };
    let (mut num, mut den, mut max_abs, mut max_rel, mut non_finite) = (0f64, 0f64, 0f64, 0f64, 0);
    // (relative error, index), worst first.
    let mut worst: Vec<(f64, usize)> = Vec::with_capacity(REPORTED + 1);
    for i in 0..len {
        let (g, w) = (got[i], want[i]);
        let s = elem_scale(i);
        den += s * s;
        let rel = if !g.is_finite() && w.is_finite() {
            non_finite += 1;
            f64::INFINITY
        } else {
            let d = (g as f64 - w as f64).abs();
            if d.is_nan() {
                // Both non-finite but not the same: NaN against infinity.
                f64::INFINITY
            } else {
                num += d * d;
                max_abs = max_abs.max(d);
                if d == 0.0 {
                    0.0
                } else if s == 0.0 {
                    f64::INFINITY
                } else {
                    d / s
                }
            }
        };
        max_rel = max_rel.max(rel);
        if rel > 0.0 && (worst.len() < REPORTED || rel > worst[worst.len() - 1].0) {
            let at = worst.partition_point(|&(r, _)| r >= rel);
            worst.insert(at, (rel, i));
            worst.truncate(REPORTED);
        }
    }
    let nmse = if non_finite > 0 || got.len() != want.len() {
        f64::INFINITY
    } else if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    };
    Comparison {
        nmse,
        max_abs,
        max_rel,
        worst: worst.first().map_or(0, |&(_, i)| i),
        worst_elements: worst.iter().map(|&(_, i)| (i, got[i], want[i])).collect(),
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

    #[test]
    fn the_worst_element_is_measured_against_the_output_scale() {
        // 4,000 exact elements and one off by the output's RMS: a small NMSE, a worst
        // element of 1.
        let want: Vec<f32> = (0..4001).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
        let mut got = want.clone();
        let rms = (want.iter().map(|&w| (w * w) as f64).sum::<f64>() / want.len() as f64).sqrt();
        got[1234] += rms as f32;
        let c = compare(&got, &want);
        assert!(c.nmse < 5e-4, "{}", c.nmse);
        assert!((c.max_rel - 1.0).abs() < 1e-3, "{}", c.max_rel);
        assert_eq!(c.worst, 1234);
        assert!(!c.within(Tolerance::new(5e-4, 0.1)));
        assert!(c.within(Tolerance::new(5e-4, 1.5)));
    }

    #[test]
    fn per_element_scales_see_an_error_on_a_cancelled_result() {
        // Element 1 cancelled to 0 but its products were large: an error of 0.01 there is
        // 0.01 / 10 relative to its own scale, not infinite.
        let want = [5.0, 0.0];
        let got = [5.0, 0.01];
        let scales = [25.0, 100.0];
        let c = compare_with(&got, &want, Scale::PerElement(&scales));
        assert!((c.max_rel - 1e-3).abs() < 1e-9, "{}", c.max_rel);
        assert!((c.nmse - 1e-4 / 125.0).abs() < 1e-12);
        // A zero scale allows no error at all.
        let c = compare_with(&got, &want, Scale::PerElement(&[25.0, 0.0]));
        assert!(c.max_rel.is_infinite());
    }

    #[test]
    fn worst_elements_are_sorted_worst_first() {
        let want = vec![1.0f32; 10];
        let mut got = want.clone();
        for (i, d) in [(2, 0.1), (7, 0.5), (4, 0.3), (9, 0.2), (0, 0.05), (5, 0.4)] {
            got[i] += d;
        }
        let c = compare(&got, &want);
        let idx: Vec<usize> = c.worst_elements.iter().map(|e| e.0).collect();
        assert_eq!(idx, [7, 5, 4, 9, 2]);
        assert_eq!(c.worst, 7);
    }
}
