//! Structured output and tool calls against the official `openai` Python client, with
//! `jsonschema` validating what comes back: `structured_suite.py` against a server on the
//! default model (the only real chat model here). It also measures what constrained decoding
//! costs, alone and for an unconstrained neighbour in the same batch.

mod common;

use std::time::Duration;

use plumb_engine::serve::EngineConfig;

#[test]
fn structured_output_and_tool_calls_suite() {
    let config = EngineConfig {
        max_batch: 8,
        ctx: 2048,
        max_queue: 32,
        max_step_tokens: 256,
    };
    let served = common::serve_default_model(config, 1 << 20);
    let ok = common::run_python(
        "structured_suite.py",
        &[
            ("PLUMB_URL", served.urls[0].clone()),
            ("PLUMB_MODEL", served.loaded.model_id.clone()),
        ],
        Duration::from_secs(600),
    );
    served.stop();
    assert!(ok, "structured_suite.py failed");
}
