//! `plumb check`: every op × backend × dtype × shape against the reference, or a whole model's
//! logits against the reference backend.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_ops::check::{self, CaseResult, CheckOptions, Status};
use plumb_ops::Backend;

use crate::common::{BackendKind, Choice, DeviceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only ops whose name contains this (embedding, rms_norm, add_rms_norm, matmul, add_bias,
    /// rope, attention, swiglu, add).
    #[arg(long)]
    op: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Seed of the random inputs (fresh each run when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the slowest shapes.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of the ops, run --prompt through this model (the default model when PATH is
    /// omitted) on the reference backend and on the checked one, and compare the logits at
    /// every position.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "default")]
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
    // Without --backend: every optimized CPU kernel level, or the GPU with --device cuda.
    let choices: Vec<Choice> = match (a.device.backend, a.device.cuda_ordinal()?) {
        (Some(_), _) | (None, Some(_)) => vec![a.device.choice()?],
        (None, None) => vec![a.device.choice_with(Some(BackendKind::Cpu))?],
    };
    let mut all = Vec::new();
    for choice in &choices {
        match choice {
            Choice::Cpu { threads } => {
                // Every SIMD level this machine has, so the fallbacks are proven too.
                for level in plumb_ops::cpu::SimdLevel::available() {
                    let b = crate::common::cpu_backend(*threads)?.with_level(level)?;
                    eprintln!(
                        "plumb: cpu backend, {level:?} kernels, {} threads",
                        b.threads()
                    );
                    all.extend(run(&b, &opts, a.json));
                }
            }
            Choice::Cuda {
                ordinal,
                variants,
                autotune: false,
            } if variants.is_empty() => {
                // Every variant of every op, one at a time on top of the defaults.
                let b = crate::common::cuda_backend(*ordinal, &[])?;
                all.extend(run(&b, &opts, a.json));
                for op in ["matvec", "prefill", "attention"] {
                    let default = b.variant(op);
                    for v in plumb_cuda::variants(op) {
                        if Some(v) == default {
                            continue;
                        }
                        b.set_variant(op, v)?;
                        eprintln!("plumb: cuda with {op}={v}");
                        let only = CheckOptions {
                            op: Some(a.op.clone().unwrap_or_else(|| cuda_op(op).into())),
                            ..opts.clone()
                        };
                        all.extend(run(&b, &only, a.json));
                    }
                    if let Some(d) = default {
                        b.set_variant(op, d)?;
                    }
                }
            }
            c => all.extend(crate::common::with_backend!(c, |b| run(&b, &opts, a.json))),
        }
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
    // `--model` alone checks the default model.
    let explicit = (model.as_os_str() != "default").then_some(model);
    let path = crate::common::model_path(explicit)?;
    let choice = a.device.choice()?;
    let kind = choice.kind();
    let mut reference =
        plumb_engine::Session::load(&path, plumb_ops::ReferenceBackend::default(), 512)
            .with_context(|| format!("loading {}", path.display()))?;
    let ids = reference.encode(&a.prompt)?;
    let want = reference.logits_all(&ids)?;
    let got = crate::common::with_backend!(&choice, |b| {
        let mut s = plumb_engine::Session::load(&path, b, 512)?;
        s.logits_all(&ids)?
    });
    let vocab = reference.model.config.vocab_size;
    let c = plumb_engine::check::compare_logits(&got, &want, vocab);
    println!(
        "model check ({} vs reference, {} positions): max |Δlogit| {:.4}, top-1 agreement {}/{} ({:.1}%)",
        kind.name(),
        c.positions,
        c.max_abs,
        c.top1_agree,
        c.positions,
        100.0 * c.top1_agree as f64 / c.positions as f64
    );
    Ok(())
}

/// The check-harness op a CUDA variant family implements.
fn cuda_op(family: &str) -> &'static str {
    match family {
        "attention" => "attention",
        _ => "matmul",
    }
}
