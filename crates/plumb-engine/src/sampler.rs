//! Token sampling: penalties and logit biases, then top-k, top-p and min-p filtering, then
//! temperature, then a draw from the remaining distribution. Temperature 0 (or below) is greedy
//! argmax.

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
    /// Added to these tokens' logits after the penalties, before any filter (ids past the
    /// logits are ignored).
    pub logit_bias: Vec<(u32, f32)>,
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
            logit_bias: Vec::new(),
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
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(format!(
                "the logit bias of token {id} must be finite, got {b}"
            ));
        }
        Ok(())
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
    /// Scratch of the whole-vocabulary draw, kept between tokens.
    weights: Vec<f32>,
}

/// Index of the first largest logit (NaN never wins; 0 for an empty or all-NaN slice).
pub fn argmax(logits: &[f32]) -> u32 {
    plumb_ops::backend::argmax_host(logits)
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = params.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy);
        Sampler {
            params,
            rng,
            weights: Vec::new(),
        }
    }

    /// Picks the next token from `logits` (modified in place by the penalties), given the
    /// tokens so far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalties(logits, history);
        for &(id, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let filters = p.top_p < 1.0 || p.min_p > 0.0;
        if p.top_k == 0 && !filters {
            return self.draw_all(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        // Candidates best first: logit descending, then id, a total order. Only a sorted
        // prefix is ever used, so the top k are selected in O(vocab) and then sorted, and
        // with top-k off the sorted prefix grows until the top-p / min-p cut falls inside it
        // (a 128k vocabulary is never sorted whole).
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, order);
            cand.truncate(p.top_k);
        }
        let keep = if !filters {
            // Temperature alone: every candidate, in their (deterministic) current order.
            cand.len()
        } else if cand.len() <= PREFIX {
            cand.sort_by(order);
            // Probabilities at temperature 1 for the filters.
            cut(&softmax(&cand, 1.0), p.top_p, p.min_p)
        } else {
            // Probabilities at temperature 1 over every candidate, from one pass.
            let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = cand.iter().map(|c| (c.1 as f64 - max).exp()).sum();
            let mut m = PREFIX;
            loop {
                let m_now = m.min(cand.len());
                if m_now < cand.len() {
                    cand.select_nth_unstable_by(m_now - 1, order);
                }
                cand[..m_now].sort_by(order);
                let probs: Vec<f64> = cand[..m_now]
                    .iter()
                    .map(|c| (c.1 as f64 - max).exp() / z)
                    .collect();
                let keep = cut(&probs, p.top_p, p.min_p);
                // The cut is final when it falls short of the prefix's end, or the prefix is
                // everything.
                if keep < m_now || m_now == cand.len() {
                    break keep;
                }
                m *= 4;
            }
        };
        cand.truncate(keep);
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

    /// Temperature alone over the whole vocabulary, in id order, without building a
    /// candidate list: the weights once into a kept buffer (non-finite logits weigh 0), then
    /// the walk to the drawn mass.
    fn draw_all(&mut self, logits: &[f32]) -> u32 {
        let t = self.params.temperature;
        let Some(max) = logits
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f32::max)
        else {
            return 0;
        };
        let w = &mut self.weights;
        w.clear();
        let mut z = 0f64;
        let mut last = 0;
        for (i, &v) in logits.iter().enumerate() {
            let x = if v.is_finite() {
                last = i;
                ((v - max) / t).exp()
            } else {
                0.0
            };
            z += x as f64;
            w.push(x);
        }
        let mut r = self.rng.next_f64() * z;
        for (i, &x) in w.iter().enumerate() {
            if r < x as f64 {
                return i as u32;
            }
            r -= x as f64;
        }
        last as u32
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

/// The sorted prefix the sampler starts from when top-k leaves more candidates.
const PREFIX: usize = 64;

/// How many of the best-first candidates with temperature-1 probabilities `probs` (a prefix
/// of them, normalized over all) survive top-p (the shortest prefix reaching `top_p`) and
/// min-p (those at least `min_p` times the best); at least one. Equal to `probs.len()` when
/// neither cut falls inside the prefix.
fn cut(probs: &[f64], top_p: f32, min_p: f32) -> usize {
    let mut keep = probs.len();
    if top_p < 1.0 {
        let mut cum = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            cum += pr;
            if cum >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if min_p > 0.0 {
        let floor = probs[0] * min_p as f64;
        let n = probs
            .iter()
            .take(keep)
            .take_while(|&&pr| pr >= floor)
            .count();
        keep = keep.min(n);
    }
    keep.max(1)
}

/// Softmax of candidate logits at temperature `t`, in f64.
fn softmax(cand: &[(u32, f32)], t: f32) -> Vec<f64> {
    // The first when sorted best first; candidates in any order work too.
    let max = cand.iter().map(|c| c.1).fold(cand[0].1, f32::max) as f64;
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

    /// Top-k by selection keeps exactly the candidates (and order) of a full sort: the drawn
    /// tokens equal those of a sampler that sorts the whole vocabulary first.
    #[test]
    fn top_k_selection_equals_a_full_sort() {
        let mut rng = Rng::new(7);
        for seed in 0..40u64 {
            // Coarse values so that ties (broken by id) are common.
            let logits: Vec<f32> = (0..3000)
                .map(|_| (rng.next_f64() * 40.0).floor() as f32 / 4.0)
                .collect();
            let params = SamplingParams {
                top_k: 1 + (seed as usize * 37) % 200,
                seed: Some(seed),
                ..SamplingParams::default()
            };
            let got = Sampler::new(params.clone()).sample(&mut logits.clone(), &[]);
            // The full sort, then the same filters and draw.
            let mut cand: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v))
                .collect();
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(params.top_k);
            let probs = softmax(&cand, 1.0);
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cum += p;
                    cum >= params.top_p as f64
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep);
            let floor = probs[0] * params.min_p as f64;
            let keep = probs
                .iter()
                .take(cand.len())
                .take_while(|&&p| p >= floor)
                .count();
            cand.truncate(keep.max(1));
            let probs = softmax(&cand, params.temperature);
            let mut r = Rng::new(seed).next_f64();
            let mut want = cand[cand.len() - 1].0;
            for (i, p) in probs.iter().enumerate() {
                if r < *p {
                    want = cand[i].0;
                    break;
                }
                r -= p;
            }
            assert_eq!(got, want, "seed {seed}, top_k {}", params.top_k);
        }
    }

    /// Without top-k, a 128k vocabulary: the candidates kept are the same as after a full
    /// sort (the best tokens, best first), checked through the draws of many seeds against
    /// the set a full sort keeps.
    #[test]
    fn top_p_without_top_k_keeps_the_full_sort_prefix() {
        let mut rng = Rng::new(11);
        let logits: Vec<f32> = rng.normals(128_256, 2.0);
        let mut sorted: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (top_p, min_p) in [(0.5f32, 0.0f32), (1.0, 0.2), (0.9, 0.01)] {
            let probs = softmax(&sorted, 1.0);
            let keep = cut(&probs, top_p, min_p);
            let allowed: std::collections::HashSet<u32> =
                sorted[..keep].iter().map(|c| c.0).collect();
            let mut seen = std::collections::HashSet::new();
            for seed in 0..200 {
                let params = SamplingParams {
                    top_k: 0,
                    top_p,
                    min_p,
                    temperature: 1.5,
                    seed: Some(seed),
                    ..SamplingParams::default()
                };
                let id = Sampler::new(params).sample(&mut logits.clone(), &[]);
                assert!(
                    allowed.contains(&id),
                    "top_p {top_p} min_p {min_p}: {id} not kept"
                );
                seen.insert(id);
            }
            assert!(seen.len() > 1.min(keep), "draws vary");
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

    /// Without filters the whole vocabulary is drawn from in one pass; non-finite logits
    /// never win, and the temperature sharpens.
    #[test]
    fn whole_vocabulary_draws_skip_non_finite_logits() {
        let logits = [f32::NAN, 0.0, f32::NEG_INFINITY, 3f32.ln(), f32::INFINITY];
        for (t, want) in [(1.0f32, 0.75f64), (0.5, 0.9)] {
            let mut s = Sampler::new(params(t));
            let n = 40_000;
            let mut counts = [0usize; 5];
            for _ in 0..n {
                counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
            }
            assert_eq!(counts[0] + counts[2] + counts[4], 0, "{counts:?}");
            let frac = counts[3] as f64 / n as f64;
            assert!((frac - want).abs() < 0.01, "t {t}: {frac}");
        }
        let mut s = Sampler::new(params(1.0));
        assert_eq!(s.sample(&mut [f32::NAN, f32::NEG_INFINITY], &[]), 0);
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
    fn logit_bias_moves_the_pick() {
        let bias = |logit_bias: Vec<(u32, f32)>| SamplingParams {
            logit_bias,
            ..params(0.0)
        };
        let logits = [2.0f32, 1.0, 0.5];
        assert_eq!(
            Sampler::new(bias(vec![])).sample(&mut logits.clone(), &[]),
            0
        );
        // -100 bans the best token, +100 forces a poor one; an id past the logits is ignored.
        let mut ban = Sampler::new(bias(vec![(0, -100.0), (7, 100.0)]));
        assert_eq!(ban.sample(&mut logits.clone(), &[]), 1);
        let mut force = Sampler::new(bias(vec![(2, 100.0)]));
        assert_eq!(force.sample(&mut logits.clone(), &[]), 2);
        // Sampled at temperature 1, a banned token is never drawn.
        let mut drawn = Sampler::new(SamplingParams {
            logit_bias: vec![(0, -100.0)],
            ..params(1.0)
        });
        assert!((0..500).all(|_| drawn.sample(&mut logits.clone(), &[]) != 0));
        assert!(bias(vec![(1, f32::NAN)]).validate().is_err());
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
