//! `plumb serve`: arguments and the entry point. The CLI calls [`main`] with parsed [`Args`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use plumb_engine::serve::EngineConfig;
use plumb_ops::Backend;

use crate::{
    load_with_kv, router, serve, shutdown_signal, AppState, Loaded, DEFAULT_MAX_BODY_BYTES,
};

/// How long open requests may run on after SIGINT/SIGTERM before they are cancelled.
const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1, fetched on first use]
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Address to listen on (loopback by default; use 0.0.0.0 to listen on every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on the /v1 routes.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Most sequences decoding at once (a request with n choices takes n).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_batch: usize,
    /// Context size: prompt + max_tokens of a request must fit in it.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub ctx: usize,
    /// Most requests waiting for a batch slot; more are answered 429.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_queue: usize,
    /// Most prompt tokens prefilled per scheduler step (long prompts go in chunks).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub prefill_chunk: usize,
    /// Tokens the paged KV cache holds over all sequences, in blocks of 16 [default: max-batch ×
    /// ctx]; when they run out the youngest request is preempted and recomputed later.
    #[arg(long, value_name = "N")]
    pub kv_tokens: Option<usize>,
    /// Largest request body accepted, in bytes (larger ones are answered 413).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

impl Args {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_batch: self.max_batch,
            ctx: self.ctx,
            max_queue: self.max_queue,
            prefill_chunk: self.prefill_chunk,
        }
    }
}

/// Loads the model onto `backend`, serves until SIGINT/SIGTERM, lets open requests finish,
/// stops the engine. The caller (the CLI) chooses the backend.
pub fn main<B: Backend + 'static>(args: Args, backend: B) -> Result<()> {
    if args.max_batch == 0 || args.ctx == 0 || args.prefill_chunk == 0 {
        bail!("--max-batch, --ctx and --prefill-chunk must be at least 1");
    }
    let path =
        plumb_model::store::resolve_model(args.model.as_deref(), &mut |m| eprintln!("plumb: {m}"))
            .context("no model to load")?;
    let t0 = std::time::Instant::now();
    let config = args.engine_config();
    let kv = match args.kv_tokens {
        Some(n) => plumb_engine::serve::KvBudget::Tokens(n),
        None => plumb_engine::serve::KvBudget::Default,
    };
    let loaded: Loaded = load_with_kv(&path, backend, config, kv)
        .with_context(|| format!("loading {}", path.display()))?;
    eprintln!(
        "plumb: loaded {} in {:.2} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
    let state = AppState::new(&loaded, args.api_key.clone(), args.max_body_bytes);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .with_context(|| format!("--host {:?} is not an IP address", args.host))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "plumb: serving {} on http://{} (max batch {}, context {}{})",
            loaded.model_id,
            listener.local_addr().unwrap_or(addr),
            args.max_batch,
            args.ctx,
            if state_has_key(&args) {
                ", API key required"
            } else {
                ""
            },
        );
        // First signal: stop accepting and let open requests finish; after GRACE or a second
        // signal, cancel them (their streams end) so the server can return.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let engine = loaded.engine.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!(
                "plumb: shutting down: finishing open requests for up to {} s (signal again to stop now)",
                GRACE.as_secs()
            );
            let _ = stop_tx.send(true);
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = tokio::time::sleep(GRACE) => {},
            }
            eprintln!("plumb: cancelling open requests");
            let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        });
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        serve(listener, router(state), shutdown)
            .await
            .context("serving")
    })?;
    loaded.engine.shutdown();
    eprintln!("plumb: stopped");
    Ok(())
}

fn state_has_key(args: &Args) -> bool {
    args.api_key.as_deref().is_some_and(|k| !k.is_empty())
}
