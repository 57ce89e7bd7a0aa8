//! The server against the official Python clients: two in-process servers on free loopback
//! ports share one engine with the default model (SmolLM2-135M-Instruct Q4_1), one open and
//! one that wants an API key; each suite runs against both:
//!
//! - `openai_suite.py`: chat and completions with the `openai` client;
//! - `anthropic_suite.py`: the Messages API with the `anthropic` client (tool use and JSON
//!   schemas checked with `jsonschema`);
//! - `responses_suite.py`: the Responses API with the `openai` client, tokenize/detokenize.
//!
//! The clients come from `.deps/python` (scripts/test installs them there) or the `PYTHONPATH`
//! given; this test fails, never skips, when one cannot be imported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plumb_engine::serve::EngineConfig;
use plumb_ops::CpuBackend;
use plumb_server::{load, router, serve, AppState};

const API_KEY: &str = "plumb-test-key";
/// Small enough that the suite's 413 case is cheap to send.
const MAX_BODY: usize = 1 << 20;
/// Each suite's budget (the longest takes a few minutes with the CPU backend on 2 cores).
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);
const SUITES: [&str; 3] = [
    "openai_suite.py",
    "anthropic_suite.py",
    "responses_suite.py",
];

/// `PYTHONPATH` with the workspace's `.deps/python` first.
fn python_path() -> String {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/python");
    let mut paths = vec![deps.display().to_string()];
    paths.extend(std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty()));
    paths.join(":")
}

fn assert_importable(module: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .env("PYTHONPATH", python_path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the `{module}` Python package cannot be imported: run scripts/test once (it installs \
         the clients into .deps/python) or put it on PYTHONPATH"
    );
}

/// Runs `suite` against the servers and asserts that it passed.
fn run_suite(suite: &str, addrs: &[std::net::SocketAddr], model_id: &str, config: &EngineConfig) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(suite);
    let t0 = Instant::now();
    let mut child = Command::new("python3")
        .arg(&path)
        .env("PYTHONPATH", python_path())
        .env("PLUMB_URL", format!("http://{}", addrs[0]))
        .env("PLUMB_KEYED_URL", format!("http://{}", addrs[1]))
        .env("PLUMB_API_KEY", API_KEY)
        .env("PLUMB_MODEL", model_id)
        .env("PLUMB_MAX_BODY", MAX_BODY.to_string())
        .env("PLUMB_CTX", config.ctx.to_string())
        .env("PLUMB_MAX_BATCH", config.max_batch.to_string())
        .spawn()
        .expect("running python3");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for python3") {
            break s;
        }
        if t0.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            panic!("{suite} took over {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{suite}: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(status.success(), "{suite} failed: {status}");
}

#[test]
fn python_client_suites() {
    for module in ["openai", "anthropic", "jsonschema"] {
        assert_importable(module);
    }
    let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let config = EngineConfig {
        max_batch: 16,
        ctx: 2048,
        max_queue: 64,
        max_step_tokens: 256,
    };
    let loaded = load(&path, CpuBackend::new(), config.clone()).expect("loading the model");
    let open = AppState::new(&loaded, None, MAX_BODY);
    let keyed = AppState::new(&loaded, Some(API_KEY.to_string()), MAX_BODY);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for state in [open, keyed] {
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

    // Every suite runs, then the first failure (if any) is reported.
    let outcomes: Vec<_> = SUITES
        .iter()
        .map(|suite| {
            std::panic::catch_unwind(|| run_suite(suite, &addrs, &loaded.model_id, &config))
        })
        .collect();

    // Graceful shutdown: the servers stop accepting and return, then the engine stops.
    let _ = stop_tx.send(true);
    for s in servers {
        let done = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), s).await });
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "server did not shut down cleanly: {done:?}"
        );
    }
    loaded.engine.shutdown();
    for outcome in outcomes {
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
