//! `plumb check`: every op × backend × dtype × shape against the reference, or a whole model's
//! logits against the reference backend.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_ops::check::{self, CaseResult, CheckOptions, Status};
use plumb_ops::Backend;

use crate::common::BackendKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only ops whose name contains this (embedding, rms_norm, add_rms_norm, matmul, add_bias,
    /// rope, attention, swiglu, add).
    #[arg(long)]
    op: Option<String>,
    /// Backend to check (default: every non-reference backend this build has).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Seed of the random inputs (fresh each run when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the slowest shapes.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of the ops, run PROMPT through this model on the reference backend and on the
    /// checked one and compare the logits at every position.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    model: Option<PathBuf>,
    /// The prompt of the model-level check.
    #[arg(
        long,
        default_value = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein"
    )]
    prompt: String,
}

pub fn main(a: Args) -> Result<()> {
    if let Some(m) = &a.model {
        return model_check(&a, m);
    }
    let seed = a
        .seed
        .unwrap_or_else(|| plumb_core::rng::Rng::from_entropy().next_u64());
    let opts = CheckOptions {
        op: a.op.clone(),
        seed,
        quick: a.quick,
    };
    eprintln!("plumb: check seed {seed} (repeat with --seed {seed})");
    let backends = match a.backend {
        Some(b) => vec![b],
        None => BackendKind::checked(),
    };
    let mut all = Vec::new();
    for kind in backends {
        let results = match kind {
            BackendKind::Reference => run(&plumb_ops::ReferenceBackend::default(), &opts, a.json),
        };
        all.extend(results);
    }
    let (pass, fail, skip) = check::summarize(&all);
    eprintln!("plumb: {pass} passed, {fail} failed, {skip} skipped");
    if fail > 0 {
        bail!("{fail} case(s) failed");
    }
    if pass == 0 {
        bail!("no case ran (filter {:?})", a.op);
    }
    Ok(())
}

fn run<B: Backend>(b: &B, opts: &CheckOptions, json: bool) -> Vec<CaseResult> {
    if !json {
        println!(
            "{:<13} {:<10} {:<6} {:<44} {:<5} {:>10} {:>10}",
            "op", "backend", "dtype", "shape", "", "nmse", "max|Δ|"
        );
    }
    check::run(b, opts, &mut |r| {
        if json {
            let v = serde_json::json!({
                "op": r.op, "backend": r.backend, "dtype": r.dtype, "shape": r.shape,
                "status": r.status.as_str(), "nmse": finite(r.nmse), "tolerance": r.tolerance,
                "max_abs": finite(r.max_abs), "detail": r.detail,
            });
            println!("{v}");
        } else {
            println!(
                "{:<13} {:<10} {:<6} {:<44} {:<5} {:>10.2e} {:>10.2e}",
                r.op,
                r.backend,
                r.dtype,
                r.shape,
                r.status.as_str(),
                r.nmse,
                r.max_abs
            );
            if r.status != Status::Pass {
                println!("    {}", r.detail);
            }
        }
    })
}

fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

fn model_check(a: &Args, model: &std::path::Path) -> Result<()> {
    let explicit = (!model.as_os_str().is_empty()).then_some(model);
    let path = crate::common::model_path(explicit)?;
    let kind = a.backend.unwrap_or(BackendKind::default_backend());
    let reference = plumb_engine::Session::load(&path, plumb_ops::ReferenceBackend::default(), 512)
        .with_context(|| format!("loading {}", path.display()))?;
    let ids = reference.encode(&a.prompt)?;
    let mut reference = reference;
    let want = reference.logits_all(&ids)?;
    let got = match kind {
        BackendKind::Reference => want.clone(),
    };
    let vocab = reference.model.config.vocab_size;
    let c = plumb_engine::check::compare_logits(&got, &want, vocab);
    println!(
        "model check ({} vs reference, {} positions): max |Δlogit| {:.4}, top-1 agreement {}/{} ({:.1}%)",
        format!("{kind:?}").to_lowercase(),
        c.positions,
        c.max_abs,
        c.top1_agree,
        c.positions,
        100.0 * c.top1_agree as f64 / c.positions as f64
    );
    Ok(())
}
