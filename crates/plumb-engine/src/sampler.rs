//! Token sampling: penalties, then top-k, top-p and min-p filtering, then temperature, then a
//! draw from the remaining distribution. Temperature 0 (or below) is greedy argmax.

use std::collections::HashMap;

use plumb_core::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// Multiplicative penalty on tokens seen in the window (1.0 disables): positive logits are
    /// divided by it, negative ones multiplied.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token seen in the window.
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a token in the window.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at (0 = all).
    pub penalty_window: usize,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// A user-facing check of the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return Err("presence and frequency penalties must be finite".into());
        }
        Ok(())
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

/// Index of the largest finite logit (the first on ties); 0 for an empty or all-NaN slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = params.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy);
        Sampler { params, rng }
    }

    /// Picks the next token from `logits` (modified in place by the penalties), given the
    /// tokens so far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalties(logits, history);
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, descending.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        // Probabilities at temperature 1 for the filters.
        let probs = softmax(&cand, 1.0);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            let keep = probs
                .iter()
                .take(cand.len())
                .take_while(|&&pr| pr >= floor)
                .count()
                .max(1);
            cand.truncate(keep);
        }
        let probs = softmax(&cand, p.temperature);
        let mut r = self.rng.next_f64();
        for (i, pr) in probs.iter().enumerate() {
            if r < *pr {
                return cand[i].0;
            }
            r -= pr;
        }
        cand[cand.len() - 1].0
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if p.repetition_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 {
            return;
        }
        let window = if p.penalty_window == 0 {
            history.len()
        } else {
            p.penalty_window.min(history.len())
        };
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &history[history.len() - window..] {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &c) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if *l > 0.0 {
                *l /= p.repetition_penalty;
            } else {
                *l *= p.repetition_penalty;
            }
            *l -= p.presence_penalty + p.frequency_penalty * c as f32;
        }
    }
}

/// Softmax of candidate logits at temperature `t`, in f64.
fn softmax(cand: &[(u32, f32)], t: f32) -> Vec<f64> {
    let max = cand[0].1 as f64;
    let e: Vec<f64> = cand
        .iter()
        .map(|(_, v)| ((*v as f64 - max) / t as f64).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(42),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
    }

    #[test]
    fn draws_follow_the_softmax() {
        // logits ln(1), ln(3): probabilities 1/4 and 3/4 at temperature 1.
        let mut s = Sampler::new(params(1.0));
        let n = 40_000;
        let ones = (0..n)
            .filter(|_| s.sample(&mut [0.0, 3f32.ln()], &[]) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.01, "{frac}");
    }

    #[test]
    fn filters_cut_the_tail() {
        let logits = [5.0f32, 4.0, 0.0, -1.0];
        let mut top_k = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0)
        });
        let mut top_p = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params(1.0)
        });
        // p(0) = e^5 / (e^5 + e^4 + 1 + e^-1) ≈ 0.727: min_p 0.5 keeps only token 0 (0.267/0.727 < 0.5).
        let mut min_p = Sampler::new(SamplingParams {
            min_p: 0.5,
            ..params(1.0)
        });
        for _ in 0..200 {
            assert_eq!(top_k.sample(&mut logits.clone(), &[]), 0);
            assert_eq!(top_p.sample(&mut logits.clone(), &[]), 0);
            assert_eq!(min_p.sample(&mut logits.clone(), &[]), 0);
        }
    }

    #[test]
    fn penalties_change_the_pick_and_seeds_reproduce() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        // Token 0 (logit 2, seen) halves to 1 < 1.5.
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
        let mut f = Sampler::new(SamplingParams {
            frequency_penalty: 0.3,
            ..params(0.0)
        });
        // 2.0 - 2×0.3 = 1.4 < 1.5.
        assert_eq!(f.sample(&mut [2.0, 1.5], &[0, 0]), 1);
        let mut pr = Sampler::new(SamplingParams {
            presence_penalty: 0.4,
            ..params(0.0)
        });
        assert_eq!(pr.sample(&mut [2.0, 1.7], &[0, 0, 0]), 1);
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..params(1.0)
            });
            (0..32)
                .map(|_| s.sample(&mut [0.0, 0.1, 0.2, 0.3], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }
}
