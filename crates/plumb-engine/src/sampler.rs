//! Token sampling: the request's parameters, its seeded generator and its penalty window around
//! the sampling reference (`plumb_ops::ops::sample`: penalties, the allow-mask, temperature,
//! logit biases, top-k, top-p, min-p and the draw), which a backend's `sample_rows` runs on the
//! device.
//! Temperature 0 (or below) is greedy argmax.

use plumb_core::rng::Rng;
use plumb_ops::ops::sample;
use plumb_ops::{SampleParams, SampleRow, Sampled};

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
    /// Added to these tokens' logits after the penalties, before any filter: distinct ids in
    /// increasing order (ids past the logits are ignored).
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
        if self.logit_bias.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("logit biases need distinct token ids in increasing order".into());
        }
        Ok(())
    }

    /// The parameters of one row of the sampling op.
    pub fn op_params(&self, top_logprobs: Option<usize>) -> SampleParams {
        SampleParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            top_logprobs,
        }
    }

    /// The last `penalty_window` tokens of `history` (all of it when the window is 0).
    pub fn window<'a>(&self, history: &'a [u32]) -> &'a [u32] {
        match self.penalty_window {
            0 => history,
            w => &history[history.len().saturating_sub(w)..],
        }
    }
}

/// A request's sampler: its parameters, its generator (seeded when the request has a seed) and
/// its penalty window. Every token takes one uniform from the generator, greedy or not, so that
/// a seeded request draws the same tokens whether the host or a device samples it.
pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

/// Index of the first largest logit (NaN never wins; 0 for an empty or all-NaN slice).
pub fn argmax(logits: &[f32]) -> u32 {
    plumb_ops::backend::argmax_host(logits)
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = params.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy);
        Sampler { params, rng }
    }

    /// The next token's row for `Backend::sample_rows`: the parameters, the penalty window of
    /// `history` (prompt and generated tokens; empty when no penalty is on) and a fresh
    /// uniform, with the request's logit biases. The caller may set its allow-mask.
    pub fn next_row<'a>(
        &'a mut self,
        history: &'a [u32],
        top_logprobs: Option<usize>,
    ) -> SampleRow<'a> {
        let params = self.params.op_params(top_logprobs);
        let history = if params.penalizes() {
            self.params.window(history)
        } else {
            &[]
        };
        let u = self.rng.next_f64();
        SampleRow {
            params,
            history,
            mask: None,
            bias: &self.params.logit_bias,
            u,
        }
    }

    /// Picks the next token from `logits` (modified in place by the penalties), given the
    /// tokens so far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.sample_logprobs(logits, history, None).id
    }

    /// [`Sampler::sample`] with the chosen token's log-probability and the `top_logprobs`
    /// most likely tokens, when asked.
    pub fn sample_logprobs(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        top_logprobs: Option<usize>,
    ) -> Sampled {
        let row = self.next_row(history, top_logprobs);
        sample::sample_row(logits, &row)
    }
}

#[cfg(test)]
mod tests {
    use plumb_ops::{Backend, CpuBackend};

    use super::*;

    fn seeded(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    /// The same seed draws the same tokens run to run; another seed draws others.
    #[test]
    fn seeds_reproduce() {
        let mut rng = Rng::new(1);
        let logits = rng.normals(5000, 1.0);
        let draw = |seed| {
            let mut s = Sampler::new(seeded(seed));
            let mut history = vec![1u32, 2, 3];
            for _ in 0..64 {
                let id = s.sample(&mut logits.clone(), &history);
                history.push(id);
            }
            history
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    /// The penalties see only the window: a token seen before it is not penalized.
    #[test]
    fn the_penalty_window_is_the_last_tokens() {
        let params = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            penalty_window: 2,
            ..seeded(0)
        };
        let mut s = Sampler::new(params);
        assert_eq!(s.next_row(&[0, 1, 2, 3], None).history, [2, 3]);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0, 1, 1]), 0);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[1, 0, 2]), 1);
        let mut plain = Sampler::new(seeded(0));
        let off = plain.next_row(&[0, 1, 2], None);
        assert!(off.history.is_empty(), "no penalty, no window to upload");
    }

    /// Sampling through a backend's `sample_rows` with the rows of one sampler draws what the
    /// same seed draws on the host, token for token, with the same logprobs.
    #[test]
    fn a_backend_draws_what_the_host_sampler_draws() {
        let b = CpuBackend::with_threads(1);
        let vocab = 3000;
        let mut rng = Rng::new(9);
        let params = SamplingParams {
            temperature: 0.9,
            repetition_penalty: 1.3,
            logit_bias: vec![(10, 3.0), (20, -2.0), (2999, 1.5)],
            ..seeded(77)
        };
        let (mut host, mut dev) = (Sampler::new(params.clone()), Sampler::new(params));
        let mut history = vec![5u32, 6];
        for _ in 0..40 {
            let logits = rng.normals(vocab, 2.0);
            let want = host.sample_logprobs(&mut logits.clone(), &history, Some(2));
            let row = dev.next_row(&history, Some(2));
            let buf = b.upload(&logits).unwrap();
            let got = b.sample_rows(&buf, vocab, &[row]).unwrap();
            assert_eq!(got, std::slice::from_ref(&want));
            history.push(want.id);
        }
    }

    /// A bias moves greedy and sampled picks; a token biased by −100 is never drawn.
    #[test]
    fn logit_bias_moves_the_pick() {
        let bias = |logit_bias: Vec<(u32, f32)>, temperature| SamplingParams {
            logit_bias,
            temperature,
            ..seeded(3)
        };
        let logits = [2.0f32, 1.0, 0.5];
        let pick = |p| Sampler::new(p).sample(&mut logits.clone(), &[]);
        assert_eq!(pick(bias(vec![], 0.0)), 0);
        assert_eq!(pick(bias(vec![(0, -100.0)], 0.0)), 1);
        assert_eq!(pick(bias(vec![(2, 100.0)], 0.0)), 2);
        let mut drawn = Sampler::new(bias(vec![(0, -100.0)], 1.0));
        assert!((0..500).all(|_| drawn.sample(&mut logits.clone(), &[]) != 0));
        assert!(bias(vec![(1, f32::NAN)], 0.0).validate().is_err());
        assert!(bias(vec![(2, 1.0), (1, 1.0)], 0.0).validate().is_err());
    }
}
