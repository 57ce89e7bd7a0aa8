//! plumb-server: the OpenAI-compatible HTTP server, the only crate that knows HTTP and JSON
//! wire types.
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions` (streaming as server-sent events),
//!   `POST /v1/embeddings` (with an embedding model, [`EmbedModel`]), `GET /v1/models`,
//!   `GET /health`, `GET /metrics` (Prometheus text).
//! - `POST /v1/messages`, `POST /v1/messages/count_tokens` (Anthropic's Messages API) and
//!   `POST /v1/responses` (OpenAI's Responses API, stateless): translated into chat requests.
//! - `POST /tokenize`, `POST /detokenize` (llama-server's shape).
//! - Chat requests take `response_format` (`structured`: JSON mode, JSON schemas, plumb's
//!   grammars) and `tools` (`tools`: calls parsed by model family, forced calls constrained).
//! - [`load`] puts a GGUF model on any [`Backend`] behind a [`plumb_engine::serve`] engine;
//!   [`router`] builds the routes over an [`AppState`]; [`serve`] runs them until a shutdown
//!   future resolves; [`run`] does all three as a process that stops on SIGINT/SIGTERM.
//! - [`bench_serve`]: a minimal HTTP client that times a running server.

mod anthropic;
pub mod bench_serve;
mod embeddings;
mod error;
mod handlers;
mod prepare;
mod prom;
mod refuse;
mod respond;
mod responses;
mod run;
mod structured;
mod text_run;
mod tokenize;
mod tools;
mod wire;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use plumb_engine::constrain::{Constrainer, ConstraintError};
use plumb_engine::serve::{EngineConfig, EngineHandle};
use plumb_model::{Checkpoint, Model};
use plumb_ops::Backend;
use plumb_tokenizer::{ChatTemplate, Tokenizer};

pub use embeddings::EmbedModel;
pub use error::ApiError;
pub use run::{run, Log, ServeConfig};

/// Default request body limit (a 2 MiB body holds prompts far over any context we run).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;

/// A model loaded behind a running engine.
pub struct Loaded {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Arc<ChatTemplate>,
    /// Compiles `response_format` and forced tool calls into token masks (or why this model
    /// cannot have them).
    pub constrainer: Result<Arc<Constrainer>, ConstraintError>,
    /// The model's id on the API: the file name without `.gguf`.
    pub model_id: String,
}

/// Loads the GGUF at `path` onto `backend` and starts the engine.
pub fn load<B: Backend + 'static>(
    path: &Path,
    backend: B,
    config: EngineConfig,
) -> anyhow::Result<Loaded> {
    load_with_kv(
        path,
        backend,
        config,
        plumb_engine::serve::KvBudget::Default,
    )
}

/// [`load`] with a paged KV cache of `kv` memory.
pub fn load_with_kv<B: Backend + 'static>(
    path: &Path,
    backend: B,
    config: EngineConfig,
    kv: plumb_engine::serve::KvBudget,
) -> anyhow::Result<Loaded> {
    let ck = Checkpoint::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (tokenizer, chat_template) =
        plumb_engine::text_side(&ck).context("building the tokenizer and chat template")?;
    let model = Model::load_checkpoint(&ck, backend).context("loading the weights")?;
    let tokenizer = Arc::new(tokenizer);
    let constrainer = Constrainer::new(tokenizer.clone()).map(Arc::new);
    let engine = EngineHandle::start_with_kv(model, tokenizer.clone(), config, kv)?;
    let model_id = path
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| "plumb".into());
    Ok(Loaded {
        engine,
        tokenizer,
        chat_template: Arc::new(chat_template),
        constrainer,
        model_id,
    })
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: EngineHandle,
    tokenizer: Arc<Tokenizer>,
    chat_template: Arc<ChatTemplate>,
    constrainer: Result<Arc<Constrainer>, ConstraintError>,
    tool_format: tools::ToolFormat,
    model_id: String,
    api_key: Option<String>,
    max_body_bytes: usize,
    created: u64,
    embed: Option<EmbedModel>,
}

impl AppState {
    /// With `api_key`, every `/v1` route wants `Authorization: Bearer <api_key>`.
    pub fn new(loaded: &Loaded, api_key: Option<String>, max_body_bytes: usize) -> AppState {
        Self::with_embeddings(loaded, api_key, max_body_bytes, None)
    }

    /// [`AppState::new`], with `embed` answering `/v1/embeddings`.
    pub fn with_embeddings(
        loaded: &Loaded,
        api_key: Option<String>,
        max_body_bytes: usize,
        embed: Option<EmbedModel>,
    ) -> AppState {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        AppState {
            inner: Arc::new(Inner {
                engine: loaded.engine.clone(),
                tokenizer: loaded.tokenizer.clone(),
                chat_template: loaded.chat_template.clone(),
                constrainer: loaded.constrainer.clone(),
                tool_format: tools::ToolFormat::detect(
                    loaded.chat_template.source(),
                    &loaded.tokenizer,
                ),
                model_id: loaded.model_id.clone(),
                api_key: api_key.filter(|k| !k.is_empty()),
                max_body_bytes,
                created,
                embed,
            }),
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::fallback)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
