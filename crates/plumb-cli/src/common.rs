//! Options shared by the commands that load a model, and the backend dispatch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use plumb_engine::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The frozen reference ops: slow, obviously correct.
    Reference,
}

impl BackendKind {
    /// What runs when --backend is not given.
    pub fn default_backend() -> BackendKind {
        BackendKind::Reference
    }

    /// The backends `plumb check` checks by default.
    pub fn checked() -> Vec<BackendKind> {
        vec![BackendKind::Reference]
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1, fetched on first use]
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Which implementation runs the ops.
    #[arg(long, value_enum, default_value_t = BackendKind::Reference)]
    pub backend: BackendKind,
}

/// The model path, fetching the default model (with messages on stderr) when none is given.
pub fn model_path(model: Option<&Path>) -> Result<PathBuf> {
    store::resolve_model(model, &mut |msg| eprintln!("plumb: {msg}")).context("no model to load")
}

/// Loads a session on the chosen backend and runs `$body` with it bound to `$s`.
macro_rules! with_session {
    ($args:expr, $ctx:expr, |$s:ident| $body:expr) => {{
        let path = $crate::common::model_path($args.model.as_deref())?;
        let t0 = std::time::Instant::now();
        match $args.backend {
            $crate::common::BackendKind::Reference => {
                #[allow(unused_mut)]
                let mut $s = anyhow::Context::with_context(
                    plumb_engine::Session::load(
                        &path,
                        plumb_ops::ReferenceBackend::default(),
                        $ctx,
                    ),
                    || format!("loading {}", path.display()),
                )?;
                $crate::common::loaded(&path, t0);
                $body
            }
        }
    }};
}
pub(crate) use with_session;

pub fn loaded(path: &Path, t0: std::time::Instant) {
    eprintln!(
        "plumb: loaded {} in {:.2} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
}

/// Sampling options shared by `run` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (always the most likely token).
    #[arg(long = "temp", default_value_t = 0.8, value_name = "T")]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    pub top_p: f32,
    /// Drop tokens less likely than P × the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub repeat_penalty: f32,
    /// Subtracted from the logit of every token already seen.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time it was seen.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties consider (0 = all).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub repeat_last_n: usize,
    /// Seed for reproducible sampling (default: from the clock).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<plumb_engine::SamplingParams> {
        let p = plumb_engine::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_window: self.repeat_last_n,
            seed: self.seed,
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

/// Builds the chosen backend and evaluates `$body` with it bound to `$b` (any `Backend`).
macro_rules! dispatch_backend {
    ($kind:expr, $threads:expr, |$b:ident| $body:expr) => {{
        let _threads: Option<usize> = $threads;
        match $kind {
            $crate::common::BackendKind::Reference => {
                let $b = plumb_ops::ReferenceBackend::default();
                $body
            }
        }
    }};
}
pub(crate) use dispatch_backend;
