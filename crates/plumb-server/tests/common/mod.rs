//! A server on the default model (SmolLM2-135M-Instruct Q4_1, CPU backend) on a free loopback
//! port, and a Python suite run against it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plumb_engine::serve::EngineConfig;
use plumb_ops::CpuBackend;
use plumb_server::{load, router, serve, AppState, Loaded};

/// A running server; [`Served::stop`] shuts it down and checks that it stopped cleanly.
pub struct Served {
    pub url: String,
    pub loaded: Loaded,
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub fn serve_default_model(config: EngineConfig, max_body: usize) -> Served {
    let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let loaded = load(&path, CpuBackend::new(), config).expect("loading the model");
    let state = AppState::new(&loaded, None, max_body);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    // Port 0: the OS picks a free port, so parallel runs never collide.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let server = rt.spawn(serve(listener, router(state), shutdown));
    Served {
        url,
        loaded,
        rt,
        stop,
        server,
    }
}

impl Served {
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let done = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), self.server).await });
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "server did not shut down cleanly: {done:?}"
        );
        self.loaded.engine.shutdown();
    }
}

/// `tests/<script>` under python3 with `.deps/python` on its path (scripts/test installs
/// the packages there) and `env`; true when it exits 0 within `limit`.
pub fn run_python(script: &str, env: &[(&str, String)], limit: Duration) -> bool {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let deps = root.join("../../.deps/python");
    let path = match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", deps.display()),
        _ => deps.display().to_string(),
    };
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(&root).join("tests").join(script))
        .env("PYTHONPATH", path);
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
