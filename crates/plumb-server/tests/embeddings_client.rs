//! `POST /v1/embeddings` against the official `openai` Python client (embeddings_suite.py):
//! an in-process server with the default model and all-MiniLM-L6-v2 behind it, its vectors
//! held to sentence-transformers' (the fixture) at a cosine of 0.9999, and one without an
//! encoder, which answers 404. The client is
//! installed with pip when missing; this test fails, never skips, if it cannot be imported.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use plumb_engine::serve::EngineConfig;
use plumb_engine::Embedder;
use plumb_ops::CpuBackend;
use plumb_server::{load, router, serve, AppState, EmbedModel};

fn ensure_openai() {
    let has = || {
        Command::new("python3")
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "openai>=1.40,<3"])
            .status();
        eprintln!("pip install openai: {status:?}");
    }
    assert!(has(), "the `openai` Python package cannot be imported");
}

#[test]
fn openai_client_embeddings() {
    ensure_openai();
    let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let dir = plumb_model::store::resolve_embedding_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching all-MiniLM-L6-v2");
    let config = EngineConfig {
        max_batch: 2,
        ctx: 256,
        max_queue: 4,
        max_step_tokens: 64,
    };
    let loaded = load(&path, CpuBackend::with_threads(1), config).expect("loading the model");
    let embed = EmbedModel::new(Embedder::load(&dir, CpuBackend::new()).expect("the encoder"));
    let id = embed.id.clone();
    let with = AppState::with_embeddings(&loaded, None, 1 << 20, Some(embed));
    // A server without an encoder answers /v1/embeddings with a 404 that says so.
    let without = AppState::new(&loaded, None, 1 << 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for state in [with, without] {
        // Port 0: the OS picks a free port, so parallel runs never collide.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        addrs.push(listener.local_addr().expect("local addr"));
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        servers.push(rt.spawn(serve(listener, router(state), shutdown)));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let t0 = Instant::now();
    let mut child = Command::new("python3")
        .arg(root.join("tests/embeddings_suite.py"))
        .env("PLUMB_URL", format!("http://{}", addrs[0]))
        .env("PLUMB_URL_WITHOUT", format!("http://{}", addrs[1]))
        .env("PLUMB_EMBED_MODEL", &id)
        .env(
            "PLUMB_FIXTURE",
            root.join("../../fixtures/all-minilm-l6-v2/embeddings.json"),
        )
        .spawn()
        .expect("running python3");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for python3") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the suite took over 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("embeddings suite: {:.1} s", t0.elapsed().as_secs_f64());
    let _ = stop_tx.send(true);
    for server in servers {
        let done =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "server did not shut down cleanly: {done:?}"
        );
    }
    loaded.engine.shutdown();
    assert!(status.success(), "embeddings_suite.py failed: {status}");
}
