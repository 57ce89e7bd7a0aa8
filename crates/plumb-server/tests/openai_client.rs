//! The server against the official `openai` Python client: two in-process servers on free
//! loopback ports share one engine with the default model (SmolLM2-135M-Instruct Q4_1), one
//! open and one that wants an API key; `openai_suite.py` runs against both. The client is
//! installed with pip when missing; this test fails, never skips, if it cannot be imported.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use plumb_engine::serve::EngineConfig;
use plumb_ops::CpuBackend;
use plumb_server::{load, router, serve, AppState};

const API_KEY: &str = "plumb-test-key";
/// Small enough that the suite's 413 case is cheap to send.
const MAX_BODY: usize = 1 << 20;
/// The whole suite's budget (it takes a few minutes with the reference backend on 2 cores).
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);

fn python_has_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_openai() {
    if python_has_openai() {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "openai>=1.40,<3"])
        .status();
    eprintln!("pip install openai: {status:?}");
    assert!(
        python_has_openai(),
        "the `openai` Python package cannot be imported, even after `python3 -m pip install 'openai>=1.40,<3'`"
    );
}

#[test]
fn openai_python_client_suite() {
    ensure_openai();
    let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let config = EngineConfig {
        max_batch: 16,
        ctx: 2048,
        max_queue: 64,
        max_step_tokens: 256,
    };
    let loaded = load(&path, CpuBackend::new(), config).expect("loading the model");
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

    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_suite.py");
    let t0 = Instant::now();
    let mut child = Command::new("python3")
        .arg(&suite)
        .env("PLUMB_URL", format!("http://{}", addrs[0]))
        .env("PLUMB_KEYED_URL", format!("http://{}", addrs[1]))
        .env("PLUMB_API_KEY", API_KEY)
        .env("PLUMB_MODEL", &loaded.model_id)
        .env("PLUMB_MAX_BODY", MAX_BODY.to_string())
        .env("PLUMB_CTX", "2048")
        .spawn()
        .expect("running python3");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for python3") {
            break s;
        }
        if t0.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            panic!("the suite took over {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("openai suite: {:.1} s", t0.elapsed().as_secs_f64());

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
    assert!(status.success(), "openai_suite.py failed: {status}");
}
