//! `plumb serve`: the OpenAI-compatible HTTP server (in plumb-server) on the chosen backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use plumb_engine::serve::{EngineConfig, KvBudget};
use plumb_ops::Backend;
use plumb_server::ServeConfig;

use crate::common::DeviceArgs;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Endpoints: POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings \
(with --embedding-model), GET /v1/models, GET /health, GET /metrics.\nExample: plumb serve --port 8080 --max-batch 16, then point any OpenAI \
client at http://127.0.0.1:8080/v1"
)]
pub struct Args {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1, fetched on first use]
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// Address to listen on (loopback by default; use 0.0.0.0 to listen on every interface).
    #[arg(long, default_value_t = ServeConfig::default().addr.ip().to_string())]
    host: String,
    #[arg(long, default_value_t = ServeConfig::default().addr.port())]
    port: u16,
    /// Require `Authorization: Bearer KEY` on the /v1 routes.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Most sequences decoding at once (a request with n choices takes n).
    #[arg(long, default_value_t = EngineConfig::default().max_batch, value_name = "N")]
    max_batch: usize,
    /// Context size: prompt + max_tokens of a request must fit in it.
    #[arg(long, default_value_t = EngineConfig::default().ctx, value_name = "N")]
    ctx: usize,
    /// Most requests waiting for a batch slot; more are answered 429.
    #[arg(long, default_value_t = EngineConfig::default().max_queue, value_name = "N")]
    max_queue: usize,
    /// Most tokens one scheduler step runs: a token of every decoding sequence, then chunks
    /// of the prompts being prefilled (at least --max-batch).
    #[arg(long, default_value_t = EngineConfig::default().max_step_tokens, value_name = "N")]
    max_step_tokens: usize,
    /// Tokens the paged KV cache holds over all sequences, in blocks of 16 [default: max-batch ×
    /// ctx]; when they run out the youngest request is preempted and recomputed later.
    #[arg(long, value_name = "N")]
    kv_tokens: Option<usize>,
    /// Largest request body accepted, in bytes (larger ones are answered 413).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Serve POST /v1/embeddings with this sentence encoder (a Hugging Face directory, or
    /// `all-minilm-l6-v2`, fetched on first use); it runs on the CPU.
    #[arg(long, value_name = "DIR|NAME")]
    embedding_model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main(a: Args) -> Result<()> {
    let choice = a.device.choice()?;
    crate::common::with_backend!(&choice, |b| serve_on(&a, b))
}

/// Serves on `backend` until SIGINT/SIGTERM, the server's messages on stderr.
fn serve_on<B: Backend + 'static>(a: &Args, backend: B) -> Result<()> {
    if a.max_batch == 0 || a.ctx == 0 || a.max_step_tokens < a.max_batch {
        bail!(
            "--max-batch and --ctx must be at least 1, and --max-step-tokens at least --max-batch"
        );
    }
    let path = crate::common::model_path(a.model.as_deref())?;
    let mut config = a.config()?;
    if let Some(m) = &a.embedding_model {
        let dir = plumb_engine::store::resolve_embedding_model(Some(m), &mut |msg| {
            eprintln!("plumb: {msg}")
        })?;
        config.embedding_model = Some(dir);
    }
    plumb_server::run(
        &path,
        &config,
        backend,
        Arc::new(|m| eprintln!("plumb: {m}")),
    )
}

impl Args {
    fn config(&self) -> Result<ServeConfig> {
        let addr: SocketAddr = format!("{}:{}", self.host, self.port)
            .parse()
            .or_else(|_| format!("[{}]:{}", self.host, self.port).parse())
            .with_context(|| format!("--host {:?} is not an IP address", self.host))?;
        Ok(ServeConfig {
            addr,
            api_key: self.api_key.clone(),
            engine: EngineConfig {
                max_batch: self.max_batch,
                ctx: self.ctx,
                max_queue: self.max_queue,
                max_step_tokens: self.max_step_tokens,
            },
            kv: self.kv_tokens.map_or(KvBudget::Default, KvBudget::Tokens),
            max_body_bytes: self.max_body_bytes,
            embedding_model: None,
        })
    }
}
