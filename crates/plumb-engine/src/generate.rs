//! Generation: a loaded model with its tokenizer and a KV cache, turning prompts into
//! streamed completions with sampling, stop strings, EOS and a token budget.

use std::path::Path;
use std::time::{Duration, Instant};

use plumb_model::quantize::{Recipe, Requantized};
use plumb_model::{Checkpoint, KvCache, Logits, Model};
use plumb_ops::Backend;
use plumb_tokenizer::{ChatMessage, ChatTemplate, StreamDecoder, Tokenizer};

use crate::error::{EngineError, Result};
use crate::sampler::{Sampler, SamplingParams};
use crate::text::StopMatcher;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these; the stop string is not returned.
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens that were already in the KV cache and were not recomputed.
    pub cached_tokens: usize,
    pub finish_reason: FinishReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

/// The tokenizer and chat template of a checkpoint: from GGUF metadata, or from a model
/// directory's `tokenizer.json` and `tokenizer_config.json`.
pub fn text_side(ck: &Checkpoint) -> Result<(Tokenizer, ChatTemplate)> {
    match ck {
        Checkpoint::Gguf(file) => Ok((
            Tokenizer::from_gguf(file)?,
            ChatTemplate::from_gguf_metadata(|k| file.get(k))?,
        )),
        Checkpoint::Dir(d) => {
            let tok = Tokenizer::from_model_dir(&d.dir)?;
            let template = tok.chat_template()?;
            Ok((tok, template))
        }
    }
}

/// A model ready to generate: weights on a backend, tokenizer, chat template and KV cache.
pub struct Session<B: Backend> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub chat_template: ChatTemplate,
    cache: KvCache<B>,
    /// The tokens whose keys and values are in `cache`, in order.
    cached: Vec<u32>,
}

impl<B: Backend> Session<B> {
    /// Loads a model (a GGUF file, a Hugging Face or MLX directory) onto `backend` with a
    /// context of `ctx` tokens (0 = the model's trained context, capped at 4096).
    pub fn load(path: &Path, backend: B, ctx: usize) -> Result<Session<B>> {
        Self::load_quantized(path, backend, ctx, None)
    }

    /// [`Session::load`], with the matrices re-encoded by `quantize` as they are read
    /// (in-situ quantization: an f16 checkpoint runs as Q4_K without writing a file).
    pub fn load_quantized(
        path: &Path,
        backend: B,
        ctx: usize,
        quantize: Option<Recipe>,
    ) -> Result<Session<B>> {
        let ck = Checkpoint::open(path)?;
        let (tokenizer, chat_template) = text_side(&ck)?;
        let model = match quantize {
            None => Model::load_checkpoint(&ck, backend)?,
            Some(r) => {
                let config = ck.config()?;
                let source = Requantized::new(ck.tensors(), r, &config)?;
                let weights = plumb_model::Weights::load(&source, &config, &backend)?;
                Model::new(config, backend, weights)
            }
        };
        Self::from_parts(model, tokenizer, chat_template, ctx)
    }

    /// A session over a loaded model and a tokenizer (`ctx` as in [`Session::load`]).
    pub fn from_parts(
        model: Model<B>,
        tokenizer: Tokenizer,
        chat_template: ChatTemplate,
        ctx: usize,
    ) -> Result<Session<B>> {
        let ctx = if ctx == 0 {
            model.config.n_ctx_train.clamp(1, 4096)
        } else {
            ctx
        };
        let cache = model.new_cache(ctx)?;
        Ok(Session {
            model,
            tokenizer,
            chat_template,
            cache,
            cached: Vec::new(),
        })
    }

    pub fn context_size(&self) -> usize {
        self.cache.capacity
    }

    /// Forgets the KV cache.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.cached.clear();
    }

    /// Tokenizes raw text (special tokens written in it are recognized; BOS as the model asks).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, self.tokenizer.add_bos_default(), true)?)
    }

    /// Renders a conversation with the model's chat template and tokenizes it.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.chat_template.render(messages, true)?;
        // The template writes BOS itself where the model wants one.
        Ok(self.tokenizer.encode(&text, false, true)?)
    }

    /// Logits for every position of `tokens`, from an empty cache (perplexity, checks).
    pub fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        if tokens.len() > self.cache.capacity {
            return Err(EngineError::PromptTooLong {
                tokens: tokens.len(),
                ctx: self.cache.capacity,
            });
        }
        let out = self.model.forward(tokens, &mut self.cache, Logits::All)?;
        self.cache.clear();
        Ok(out)
    }

    /// Generates a continuation of `prompt`. `on_text` receives text as it becomes final (never
    /// half a character, never part of a stop string) and returns `false` to cancel.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= self.cache.capacity {
            return Err(EngineError::PromptTooLong {
                tokens: prompt.len(),
                ctx: self.cache.capacity,
            });
        }
        params
            .sampling
            .validate()
            .map_err(EngineError::BadRequest)?;
        let mut sampler = Sampler::new(params.sampling.clone());

        // Reuse the longest cached prefix, but always run at least one prompt token.
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.cache.truncate(common);
        self.cached.truncate(common);

        let t0 = Instant::now();
        let mut logits = self
            .model
            .forward(&prompt[common..], &mut self.cache, Logits::Last)?;
        self.cached.extend_from_slice(&prompt[common..]);
        let prefill_time = t0.elapsed();

        let t1 = Instant::now();
        let mut history = prompt.to_vec();
        let mut out_ids = Vec::new();
        let mut decoder = StreamDecoder::new(&self.tokenizer);
        let mut stops = StopMatcher::new(&params.stop);
        let mut text = String::new();
        let stop_tokens = self.tokenizer.stop_tokens().to_vec();
        let mut finish = FinishReason::Length;
        while out_ids.len() < params.max_tokens {
            let id = sampler.sample(&mut logits, &history);
            if !params.ignore_eos && stop_tokens.contains(&id) {
                finish = FinishReason::Stop;
                break;
            }
            out_ids.push(id);
            history.push(id);
            let piece = decoder.push(id);
            let (emit, hit) = stops.push(&piece);
            text.push_str(&emit);
            if !emit.is_empty() && !on_text(&emit) {
                finish = FinishReason::Cancelled;
                break;
            }
            if hit {
                finish = FinishReason::Stop;
                break;
            }
            if out_ids.len() >= params.max_tokens || self.cache.len >= self.cache.capacity {
                break;
            }
            logits = self.model.forward(&[id], &mut self.cache, Logits::Last)?;
            self.cached.push(id);
        }
        if finish == FinishReason::Length {
            let (emit, hit) = stops.push(&decoder.finish());
            let tail = if hit { emit } else { emit + &stops.finish() };
            text.push_str(&tail);
            if !tail.is_empty() {
                on_text(&tail);
            }
        }
        Ok(Generation {
            text,
            token_ids: out_ids,
            prompt_tokens: prompt.len(),
            cached_tokens: common,
            finish_reason: finish,
            prefill_time,
            decode_time: t1.elapsed(),
        })
    }
}
