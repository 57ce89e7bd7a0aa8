//! `plumb check`: every op × backend × variant × dtype × shape against the reference, the
//! harness's own self-test, or a whole model's logits against the reference backend.

use std::path::PathBuf;

use anyhow::{bail, Result};
use plumb_ops::check::{self, CaseResult, CheckOptions, Status};
use plumb_ops::Backend;

use crate::common::{BackendKind, Choice, DeviceArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
A case PASSes when both its NMSE and its worst element (relative to the output's scale) are within \
the op's bounds; SKIP means the backend cannot run it, never that it passed. With --device cuda, \
every variant of every registered family is checked on top of the defaults, and the variants that \
pass are recorded for this GPU: an explicit --variant elsewhere is refused until it has passed here. \
With --device wgpu, the cases run once per combination of the wgpu variants the adapter can run \
(reduce=subgroup|workgroup, dot=native|soft), or only on the --variant given.

--model compares a whole model's logits at every position of --prompt with the reference \
backend's, and fails (exit status 1) beyond the thresholds of the backend's precision:
  accurate (f32 activations):   max |Δlogit| 0.02, mean KL 1e-6, the same top token wherever the \
reference's top two are 0.1 apart
  8-bit activations or f16 KV:  max |Δlogit| 4.0, mean KL 3e-2, the same top token wherever they \
are 1.0 apart
--max-dlogit, --max-kl and --margin override them.

Examples:
  plumb check                         every CPU SIMD level
  plumb check --device cuda           every CUDA kernel and variant
  plumb check --device wgpu           every WGSL shader and variant on the first wgpu adapter
  plumb check --op matmul --device cuda --variant batch=mma
  plumb check --self-test             prove the harness fails planted faults
  plumb check --model --backend ggml")]
pub struct Args {
    /// Only ops whose name contains this (embedding, rms_norm, add_rms_norm, matmul, add_bias,
    /// rope, attention, attention_paged, swiglu, add, argmax).
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
    /// Plant faults (a wrong element, a wrong row, a transposed output, a stale region, an
    /// unsupported op) in each op of the backend and show that every one is caught.
    #[arg(long, conflicts_with = "model")]
    self_test: bool,
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
    /// Model check: the largest |Δlogit| allowed [default: by the backend's precision].
    #[arg(long, value_name = "X")]
    max_dlogit: Option<f64>,
    /// Model check: the largest mean KL divergence (nats) allowed [default: by precision].
    #[arg(long, value_name = "X")]
    max_kl: Option<f64>,
    /// Model check: positions where the reference's top two logits are this far apart must
    /// agree on the top token [default: by precision].
    #[arg(long, value_name = "X")]
    margin: Option<f32>,
}

pub fn main(a: Args) -> Result<()> {
    if let Some(m) = &a.model {
        return super::check_model::main(&a.device, m, &a.prompt, a.thresholds(), a.json);
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
    if a.self_test {
        let choice = a.device.choice()?;
        return crate::common::with_backend!(&choice, |b| self_test(&b, seed));
    }
    // Without --backend: every optimized CPU kernel level, or the GPU of --device.
    let choice = match (a.device.backend, a.device.gpu()?) {
        (Some(_), _) | (None, Some(_)) => a.device.choice()?,
        (None, None) => a.device.choice_with(Some(BackendKind::Cpu))?,
    };
    let all = match &choice {
        Choice::Cpu { threads } => {
            let mut all = Vec::new();
            // Every SIMD level this machine has, so the fallbacks are proven too.
            for level in plumb_ops::cpu::SimdLevel::available() {
                let b = crate::common::cpu_backend(*threads)?.with_level(level)?;
                eprintln!(
                    "plumb: cpu backend, {level:?} kernels, {} threads",
                    b.threads()
                );
                all.extend(run(&b, &opts, a.json));
            }
            all
        }
        Choice::Cuda {
            ordinal, variants, ..
        } => super::check_cuda::main(*ordinal, variants, &opts, a.json)?,
        Choice::Wgpu {
            ordinal, variants, ..
        } => super::check_wgpu::main(*ordinal, variants, &opts, a.json)?,
        c => crate::common::with_backend!(c, |b| run(&b, &opts, a.json)),
    };
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

impl Args {
    /// The explicit model-check thresholds, each overriding the precision's default.
    fn thresholds(&self) -> super::check_model::Overrides {
        super::check_model::Overrides {
            max_abs: self.max_dlogit,
            mean_kl: self.max_kl,
            margin: self.margin,
        }
    }
}

/// Runs the selected cases on `b`, printing each as it finishes.
pub(crate) fn run<B: Backend>(b: &B, opts: &CheckOptions, json: bool) -> Vec<CaseResult> {
    if !json {
        println!(
            "{:<15} {:<10} {:<6} {:<44} {:<5} {:>9} {:>9} {:>9}",
            "op", "backend", "dtype", "shape", "", "nmse", "worst", "max|Δ|"
        );
    }
    check::run(b, opts, &mut |r| print_case(r, json))
}

fn print_case(r: &CaseResult, json: bool) {
    if json {
        let v = serde_json::json!({
            "op": r.op, "backend": r.backend, "dtype": r.dtype, "shape": r.shape,
            "status": r.status.as_str(), "nmse": finite(r.nmse), "worst": finite(r.max_rel),
            "tolerance": {"nmse": r.tolerance.nmse, "worst": r.tolerance.worst},
            "max_abs": finite(r.max_abs), "detail": r.detail,
        });
        println!("{v}");
        return;
    }
    println!(
        "{:<15} {:<10} {:<6} {:<44} {:<5} {:>9.2e} {:>9.2e} {:>9.2e}",
        r.op,
        r.backend,
        r.dtype,
        r.shape,
        r.status.as_str(),
        r.nmse,
        r.max_rel,
        r.max_abs
    );
    if r.status != Status::Pass {
        println!("    {}", r.detail);
    }
}

fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// `--self-test`: every planted fault must be caught on `b`.
fn self_test<B: Backend>(b: &B, seed: u64) -> Result<()> {
    println!(
        "{:<28} {:<16} {:>6} {:>8} {:>7}  verdict",
        "planted fault", "op", "cases", "planted", "caught"
    );
    let rows = check::self_test(b, seed);
    for r in &rows {
        println!(
            "{:<28} {:<16} {:>6} {:>8} {:>7}  {}",
            r.fault.name(),
            r.op,
            r.cases,
            r.faulted,
            r.caught,
            match (r.ok(), r.other_failures) {
                (true, _) => "ok".to_string(),
                (false, 0) => "MISSED".to_string(),
                (false, n) => format!("{n} unplanted case(s) failed"),
            }
        );
    }
    let missed = rows.iter().filter(|r| !r.ok()).count();
    let planted: usize = rows.iter().map(|r| r.faulted).sum();
    if missed > 0 {
        bail!("the harness missed planted faults in {missed} op(s)");
    }
    eprintln!(
        "plumb: {} backend: all {planted} planted faults caught",
        b.name()
    );
    Ok(())
}
