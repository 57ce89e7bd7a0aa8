//! Model-level check: a backend's logits against the reference backend's on the same tokens,
//! with thresholds per class of backend and a verdict.

use plumb_ops::Precision;

/// How far one run's logits are from the reference's.
#[derive(Debug, Clone, Copy)]
pub struct LogitsCheck {
    pub positions: usize,
    /// Largest |Δ| over every logit of every position.
    pub max_abs: f64,
    /// Positions whose argmax agrees.
    pub top1_agree: usize,
    /// Positions where the reference's best token leads its second by at least the margin
    /// the comparison was made with: there the backend must pick the same token.
    pub decisive: usize,
    /// Decisive positions whose argmax agrees.
    pub decisive_agree: usize,
    /// Mean over positions of KL(reference ‖ backend) of the softmax distributions, in nats.
    pub mean_kl: f64,
    /// The largest KL of one position.
    pub max_kl: f64,
}

/// What a backend of one [`Precision`] must meet on a whole model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitThresholds {
    /// Largest |Δlogit| allowed anywhere.
    pub max_abs: f64,
    /// Largest mean KL divergence (nats) allowed.
    pub mean_kl: f64,
    /// A position is decisive when the reference's top two logits differ by at least this;
    /// every decisive position must agree.
    pub decisive_margin: f32,
}

impl LogitThresholds {
    /// The documented thresholds (README, `plumb check --help`).
    ///
    /// - Accurate (f32 activations, f32 KV cache): only the order of f32 sums differs; the
    ///   CPU backend on an F16 model of SmolLM2's shape measures |Δ| < 1e-4 and a KL of 3e-13.
    /// - Eight-bit (activations quantized to 8 bits per block, or an f16 KV cache): on the
    ///   default model and the eight fixture prompts, the CPU and ggml backends measure
    ///   |Δ| ≤ 2.6, a mean KL ≤ 1.3e-2 (short prompts) and agree wherever the reference's
    ///   top two are a logit apart.
    pub fn for_precision(p: Precision) -> LogitThresholds {
        match p {
            Precision::Accurate => LogitThresholds {
                max_abs: 0.02,
                mean_kl: 1e-6,
                decisive_margin: 0.1,
            },
            Precision::EightBitActivations => LogitThresholds {
                max_abs: 4.0,
                mean_kl: 3e-2,
                decisive_margin: 1.0,
            },
        }
    }
}

/// Compares `[positions, vocab]` logits row by row; `margin` decides which positions are
/// decisive (see [`LogitsCheck::decisive`]).
pub fn compare_logits(got: &[f32], want: &[f32], vocab: usize, margin: f32) -> LogitsCheck {
    let vocab = vocab.max(1);
    let positions = want.len().min(got.len()) / vocab;
    let mut c = LogitsCheck {
        positions,
        max_abs: 0.0,
        top1_agree: 0,
        decisive: 0,
        decisive_agree: 0,
        mean_kl: 0.0,
        max_kl: 0.0,
    };
    for p in 0..positions {
        let g = &got[p * vocab..(p + 1) * vocab];
        let w = &want[p * vocab..(p + 1) * vocab];
        for (a, b) in g.iter().zip(w) {
            let d = (*a as f64 - *b as f64).abs();
            c.max_abs = if d.is_nan() {
                f64::INFINITY
            } else {
                c.max_abs.max(d)
            };
        }
        let agree = crate::sampler::argmax(g) == crate::sampler::argmax(w);
        c.top1_agree += agree as usize;
        if top_two_gap(w) >= margin {
            c.decisive += 1;
            c.decisive_agree += agree as usize;
        }
        let kl = kl_divergence(w, g);
        c.mean_kl += kl / positions as f64;
        c.max_kl = c.max_kl.max(kl);
    }
    c
}

impl LogitsCheck {
    /// What exceeds `t`, one line each; empty when the check passes.
    pub fn violations(&self, t: &LogitThresholds) -> Vec<String> {
        let mut v = Vec::new();
        if self.positions == 0 {
            v.push("no positions were compared".into());
        }
        // NaN exceeds every bound.
        if self.max_abs.is_nan() || self.max_abs > t.max_abs {
            v.push(format!(
                "max |Δlogit| {:.4} exceeds {}",
                self.max_abs, t.max_abs
            ));
        }
        if self.mean_kl.is_nan() || self.mean_kl > t.mean_kl {
            v.push(format!(
                "mean KL {:.3e} exceeds {:.0e}",
                self.mean_kl, t.mean_kl
            ));
        }
        if self.decisive_agree < self.decisive {
            v.push(format!(
                "the top token differs at {} of {} positions where the reference's top two \
                 are {} or more apart",
                self.decisive - self.decisive_agree,
                self.decisive,
                t.decisive_margin
            ));
        }
        v
    }
}

/// The reference's lead of its best logit over its second.
fn top_two_gap(x: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in x {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// KL(softmax(p) ‖ softmax(q)) in nats, in f64; infinite if `q` has a non-finite logit
/// where `p` is finite.
fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |x: &[f32]| -> Vec<f64> {
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        x.iter().map(|&v| v as f64 - lse).collect()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    let kl: f64 = lp
        .iter()
        .zip(&lq)
        .filter(|(a, _)| a.is_finite())
        .map(|(a, b)| a.exp() * (a - b))
        .sum();
    if kl.is_nan() {
        f64::INFINITY
    } else {
        kl.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_pass_and_a_flipped_decision_fails() {
        let want = [1.0f32, 5.0, 2.0, 0.0, 0.0, 3.0];
        let c = compare_logits(&want, &want, 3, 1.0);
        assert_eq!((c.positions, c.top1_agree, c.decisive), (2, 2, 2));
        assert_eq!(c.max_abs, 0.0);
        assert!(c.mean_kl.abs() < 1e-15);
        let t = LogitThresholds::for_precision(Precision::Accurate);
        assert!(c.violations(&t).is_empty());

        // Position 0's top token moves from 1 to 2: a decisive disagreement, a large Δ.
        let got = [1.0f32, 5.0, 6.0, 0.0, 0.0, 3.0];
        let c = compare_logits(&got, &want, 3, 1.0);
        assert_eq!((c.top1_agree, c.decisive_agree), (1, 1));
        assert_eq!(c.max_abs, 4.0);
        let v = c.violations(&LogitThresholds::for_precision(
            Precision::EightBitActivations,
        ));
        assert!(v.iter().any(|l| l.contains("top token differs")), "{v:?}");
        assert!(v.iter().any(|l| l.contains("mean KL")), "{v:?}");
    }

    #[test]
    fn a_near_tie_may_resolve_either_way() {
        // Reference: 5.0 vs 4.9 (a near tie at margin 1); the backend swaps them.
        let want = [5.0f32, 4.9, 0.0];
        let got = [4.9f32, 5.0, 0.0];
        let c = compare_logits(&got, &want, 3, 1.0);
        assert_eq!((c.top1_agree, c.decisive), (0, 0));
        let v = c.violations(&LogitThresholds::for_precision(
            Precision::EightBitActivations,
        ));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn kl_matches_a_hand_computed_pair() {
        // softmax([0, ln 3]) = [1/4, 3/4]; softmax([0, 0]) = [1/2, 1/2].
        let p = [0.0f32, 3f32.ln()];
        let q = [0.0f32, 0.0];
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!((kl_divergence(&p, &q) - want).abs() < 1e-7);
        assert!(kl_divergence(&p, &[f32::NAN, 0.0]).is_infinite());
    }
}
