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

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use plumb_engine::serve::EngineConfig;
use plumb_ops::CpuBackend;
use plumb_server::AppState;

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

/// Runs `suite` against the open and the keyed server and asserts that it passed.
fn run_suite(suite: &str, served: &common::Served, config: &EngineConfig) {
    let env = [
        ("PLUMB_URL", served.urls[0].clone()),
        ("PLUMB_KEYED_URL", served.urls[1].clone()),
        ("PLUMB_API_KEY", API_KEY.to_string()),
        ("PLUMB_MODEL", served.loaded.model_id.clone()),
        ("PLUMB_MAX_BODY", MAX_BODY.to_string()),
        ("PLUMB_CTX", config.ctx.to_string()),
        ("PLUMB_MAX_BATCH", config.max_batch.to_string()),
    ];
    assert!(
        common::run_python(suite, &env, SUITE_TIMEOUT),
        "{suite} failed"
    );
}

#[test]
fn python_client_suites() {
    for module in ["openai", "anthropic", "jsonschema"] {
        common::assert_importable(module);
    }
    let config = EngineConfig {
        max_batch: 16,
        ctx: 2048,
        max_queue: 64,
        max_step_tokens: 256,
    };
    let loaded = common::load_default_model(config.clone(), CpuBackend::new());
    let open = AppState::new(&loaded, None, MAX_BODY);
    let keyed = AppState::new(&loaded, Some(API_KEY.to_string()), MAX_BODY);
    let served = common::serve_states(loaded, vec![open, keyed]);

    // Every suite runs, then the first failure (if any) is reported.
    let outcomes: Vec<_> = SUITES
        .iter()
        .map(|suite| {
            // The suites only read the servers' addresses and settings.
            std::panic::catch_unwind(AssertUnwindSafe(|| run_suite(suite, &served, &config)))
        })
        .collect();

    // Graceful shutdown: the servers stop accepting and return, then the engine stops.
    served.stop();
    for outcome in outcomes {
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
