//! In-process servers on free loopback ports (one engine behind one or more [`AppState`]s),
//! and Python suites run against them with the packages scripts/test installs.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plumb_engine::serve::EngineConfig;
use plumb_ops::CpuBackend;
use plumb_server::{load, router, serve, AppState, Loaded};

/// Running servers; [`Served::stop`] shuts them down, checks that each stopped cleanly, then
/// stops the engine.
pub struct Served {
    /// `http://127.0.0.1:PORT` of each state, in the order given.
    pub urls: Vec<String>,
    pub loaded: Loaded,
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The default model (SmolLM2-135M-Instruct Q4_1, fetched as the CLI does) on the CPU
/// backend.
pub fn load_default_model(config: EngineConfig, backend: CpuBackend) -> Loaded {
    let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    load(&path, backend, config).expect("loading the model")
}

/// One server for each of `states` (all over `loaded`'s engine).
pub fn serve_states(loaded: Loaded, states: Vec<AppState>) -> Served {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut urls = Vec::new();
    let mut servers = Vec::new();
    for state in states {
        // Port 0: the OS picks a free port, so parallel runs never collide.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        urls.push(format!(
            "http://{}",
            listener.local_addr().expect("local addr")
        ));
        let mut stop_rx = stop_rx.clone();
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        servers.push(rt.spawn(serve(listener, router(state), shutdown)));
    }
    Served {
        urls,
        loaded,
        rt,
        stop,
        servers,
    }
}

/// One open server on the default model.
pub fn serve_default_model(config: EngineConfig, max_body: usize) -> Served {
    let loaded = load_default_model(config, CpuBackend::new());
    let state = AppState::new(&loaded, None, max_body);
    serve_states(loaded, vec![state])
}

impl Served {
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let done = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
            assert!(
                matches!(done, Ok(Ok(Ok(())))),
                "server did not shut down cleanly: {done:?}"
            );
        }
        self.loaded.engine.shutdown();
    }
}

/// `PYTHONPATH` with the workspace's `.deps/python` (where scripts/test installs the
/// clients) first.
pub fn python_path() -> String {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/python");
    let mut paths = vec![deps.display().to_string()];
    paths.extend(std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty()));
    paths.join(":")
}

/// Fails (never skips) when `module` cannot be imported.
pub fn assert_importable(module: &str) {
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

/// `tests/<script>` under python3 with [`python_path`] and `env`; true when it exits 0
/// within `limit`.
pub fn run_python(script: &str, env: &[(&str, String)], limit: Duration) -> bool {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests").join(script))
        .env("PYTHONPATH", python_path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("running python3");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for python3") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("{script} took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{script}: {:.1} s, {status}", t0.elapsed().as_secs_f64());
    status.success()
}
