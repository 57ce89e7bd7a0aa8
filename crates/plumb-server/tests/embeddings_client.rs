//! `POST /v1/embeddings` against the official `openai` Python client (embeddings_suite.py):
//! an in-process server with the default model and all-MiniLM-L6-v2 behind it, its vectors
//! held to sentence-transformers' (the fixture) at a cosine of 0.9999, and one without an
//! encoder, which answers 404. The client
//! comes from `.deps/python` (scripts/test installs it); this test fails, never skips, if it
//! cannot be imported.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use plumb_engine::serve::EngineConfig;
use plumb_engine::Embedder;
use plumb_ops::CpuBackend;
use plumb_server::{AppState, EmbedModel};

#[test]
fn openai_client_embeddings() {
    common::assert_importable("openai");
    let dir = plumb_model::store::resolve_embedding_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching all-MiniLM-L6-v2");
    let config = EngineConfig {
        max_batch: 2,
        ctx: 256,
        max_queue: 4,
        max_step_tokens: 64,
    };
    let loaded = common::load_default_model(config, CpuBackend::with_threads(1));
    let embed = EmbedModel::new(Embedder::load(&dir, CpuBackend::new()).expect("the encoder"));
    let id = embed.id.clone();
    let with = AppState::with_embeddings(&loaded, None, 1 << 20, Some(embed));
    // A server without an encoder answers /v1/embeddings with a 404 that says so.
    let without = AppState::new(&loaded, None, 1 << 20);
    let served = common::serve_states(loaded, vec![with, without]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let env = [
        ("PLUMB_URL", served.urls[0].clone()),
        ("PLUMB_URL_WITHOUT", served.urls[1].clone()),
        ("PLUMB_EMBED_MODEL", id),
        (
            "PLUMB_FIXTURE",
            root.join("../../fixtures/all-minilm-l6-v2/embeddings.json")
                .display()
                .to_string(),
        ),
    ];
    let ok = common::run_python("embeddings_suite.py", &env, Duration::from_secs(300));
    served.stop();
    assert!(ok, "embeddings_suite.py failed");
}
