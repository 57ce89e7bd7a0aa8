//! Running the server as a process: load a model, listen, serve until SIGINT/SIGTERM, let open
//! requests finish, stop the engine. What it has to say goes to a [`Log`] the caller installs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use plumb_engine::serve::{EngineConfig, EngineHandle, KvBudget};
use plumb_ops::Backend;

use crate::{load_with_kv, router, serve, shutdown_signal, AppState, DEFAULT_MAX_BODY_BYTES};

/// How long open requests may run on after SIGINT/SIGTERM before they are cancelled.
const GRACE: Duration = Duration::from_secs(30);

/// Receives the server's messages (loaded, listening, shutting down), one line each.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// How [`run`] serves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (loopback port 8080 by default).
    pub addr: SocketAddr,
    /// With a key, every `/v1` route wants `Authorization: Bearer <key>` (an empty key is none).
    pub api_key: Option<String>,
    /// The engine's limits: batch, context, queue, tokens per step.
    pub engine: EngineConfig,
    /// The paged KV cache's size.
    pub kv: KvBudget,
    /// Largest request body accepted, in bytes (larger ones are answered 413).
    pub max_body_bytes: usize,
    /// A sentence encoder's directory for `/v1/embeddings` (run on the CPU backend).
    pub embedding_model: Option<std::path::PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            api_key: None,
            engine: EngineConfig::default(),
            kv: KvBudget::Default,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            embedding_model: None,
        }
    }
}

/// Loads the GGUF at `model` onto `backend`, serves it until SIGINT/SIGTERM, lets open
/// requests finish (for up to [`GRACE`], or until a second signal), stops the engine.
pub fn run<B: Backend + 'static>(
    model: &Path,
    config: &ServeConfig,
    backend: B,
    log: Log,
) -> Result<()> {
    let t0 = Instant::now();
    let loaded = load_with_kv(model, backend, config.engine.clone(), config.kv)
        .with_context(|| format!("loading {}", model.display()))?;
    log(&format!(
        "loaded {} in {:.2} s",
        model.display(),
        t0.elapsed().as_secs_f64()
    ));
    let embed = match &config.embedding_model {
        Some(dir) => {
            let e = plumb_engine::Embedder::load(dir, plumb_ops::CpuBackend::new())
                .with_context(|| format!("loading the embedding model {}", dir.display()))?;
            log(&format!(
                "embedding model {} ({} dimensions)",
                e.name,
                e.dim()
            ));
            Some(crate::EmbedModel::new(e))
        }
        None => None,
    };
    let state = AppState::with_embeddings(
        &loaded,
        config.api_key.clone(),
        config.max_body_bytes,
        embed,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let keyed = config.api_key.as_deref().is_some_and(|k| !k.is_empty());
        log(&format!(
            "serving {} on http://{} (max batch {}, context {}{})",
            loaded.model_id,
            listener.local_addr().unwrap_or(config.addr),
            config.engine.max_batch,
            config.engine.ctx,
            if keyed { ", API key required" } else { "" },
        ));
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(drain_on_signal(stop_tx, loaded.engine.clone(), log.clone()));
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        serve(listener, router(state), shutdown)
            .await
            .context("serving")
    })?;
    loaded.engine.shutdown();
    log("stopped");
    Ok(())
}

/// First signal: tell the server to stop accepting and let open requests finish; after
/// [`GRACE`] or a second signal, cancel them (their streams end) so the server can return.
async fn drain_on_signal(stop: tokio::sync::watch::Sender<bool>, engine: EngineHandle, log: Log) {
    shutdown_signal().await;
    log(&format!(
        "shutting down: finishing open requests for up to {} s (signal again to stop now)",
        GRACE.as_secs()
    ));
    let _ = stop.send(true);
    tokio::select! {
        _ = shutdown_signal() => {},
        _ = tokio::time::sleep(GRACE) => {},
    }
    log("cancelling open requests");
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
}
