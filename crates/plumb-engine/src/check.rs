//! Model-level comparison of two runs' logits (a backend against the reference).

#[derive(Debug, Clone, Copy)]
pub struct LogitsCheck {
    pub positions: usize,
    /// Largest |Δ| over every logit of every position.
    pub max_abs: f64,
    /// Positions whose argmax agrees.
    pub top1_agree: usize,
}

/// Compares `[positions, vocab]` logits row by row.
pub fn compare_logits(got: &[f32], want: &[f32], vocab: usize) -> LogitsCheck {
    let positions = want.len() / vocab.max(1);
    let mut max_abs = 0f64;
    let mut top1_agree = 0;
    for p in 0..positions {
        let (g, w) = (
            &got[p * vocab..(p + 1) * vocab],
            &want[p * vocab..(p + 1) * vocab],
        );
        for (a, b) in g.iter().zip(w) {
            let d = (*a as f64 - *b as f64).abs();
            max_abs = if d.is_nan() {
                f64::INFINITY
            } else {
                max_abs.max(d)
            };
        }
        if crate::sampler::argmax(g) == crate::sampler::argmax(w) {
            top1_agree += 1;
        }
    }
    LogitsCheck {
        positions,
        max_abs,
        top1_agree,
    }
}
