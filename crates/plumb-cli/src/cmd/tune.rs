//! `plumb tune`: times every kernel variant that passes the check on this GPU over a model's
//! shapes and keeps the fastest per op family in a cache file per GPU name and plumb version;
//! `--autotune` on any command applies it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_engine::bench_ops::bench_model_ops;
use plumb_gguf::GgufFile;
use plumb_ops::check::{self, CheckOptions, Status};
use serde_json::json;

use crate::common::DeviceArgs;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: plumb tune --device cuda -m model.gguf, then plumb bench --device cuda --autotune"
)]
pub struct Args {
    /// GGUF model whose shapes to tune for [default: SmolLM2-135M-Instruct Q4_1].
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Only this op family (matvec, prefill, attention).
    #[arg(long)]
    op: Option<String>,
    /// Tokens of the prefill shapes.
    #[arg(long, default_value_t = 512)]
    prefill: usize,
    /// Timed calls per op (median).
    #[arg(short = 'r', long, default_value_t = 10)]
    reps: usize,
}

/// Whether a timed op (with the prefill length) belongs to a variant family.
type Selects = fn(&plumb_engine::bench_ops::OpTiming, usize) -> bool;

/// Which ops of `bench_model_ops` a family's variants change, and which check-harness op
/// proves them.
fn family(name: &str) -> Option<(&'static str, Selects)> {
    match name {
        "matvec" => Some(("matmul", |t, _| {
            t.op == "matmul" && t.shape.ends_with("n=1")
        })),
        "prefill" => Some(("matmul", |t, n| {
            t.op == "matmul" && t.shape.ends_with(&format!("n={n}"))
        })),
        "attention" => Some(("attention", |t, _| t.op == "attention")),
        _ => None,
    }
}

/// The cache file of a GPU: `$PLUMB_HOME/tune/<gpu>-plumb-<version>.json`.
pub fn cache_path(gpu: &str) -> Result<PathBuf> {
    let name: String = gpu
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok(plumb_model::store::plumb_home()?
        .join("tune")
        .join(format!("{name}-plumb-{}.json", env!("CARGO_PKG_VERSION"))))
}

pub fn main(a: Args) -> Result<()> {
    let ordinal = match a.device.cuda_ordinal()? {
        Some(o) => o,
        None => bail!(
            "plumb tune tunes GPU kernels: pass --device cuda (the CPU backend has no variants)"
        ),
    };
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let b = crate::common::cuda_backend(ordinal, &[])?;
    let gpu = b.info().name.clone();
    let mut winners = serde_json::Map::new();
    let mut timings = serde_json::Map::new();
    for f in plumb_cuda::FAMILIES {
        let fam = &f.name;
        if a.op.as_deref().is_some_and(|o| o != *fam) {
            continue;
        }
        let Some((check_op, selects)) = family(fam) else {
            continue;
        };
        let default = b.variant(fam);
        let mut best: Option<(&str, f64)> = None;
        for v in f.variant_names() {
            b.set_variant(fam, v)?;
            let opts = CheckOptions {
                op: Some(check_op.into()),
                seed: 7,
                quick: true,
            };
            let results = check::run(&b, &opts, &mut |_| {});
            let fails = results.iter().filter(|r| r.status == Status::Fail).count();
            if fails > 0 {
                eprintln!("plumb: {fam}={v}: {fails} check case(s) fail; not a candidate");
                continue;
            }
            let rows = bench_model_ops(&b, &file, a.prefill, 512, a.reps.max(1))?;
            let total: f64 = rows
                .iter()
                .filter(|t| selects(t, a.prefill))
                .map(|t| t.seconds)
                .sum();
            eprintln!(
                "plumb: {fam}={v}: {:.1} µs over the model's shapes",
                total * 1e6
            );
            timings.insert(format!("{fam}={v}"), json!(total * 1e6));
            if best.is_none_or(|(_, t)| total < t) {
                best = Some((v, total));
            }
        }
        if let Some(d) = default {
            b.set_variant(fam, d)?;
        }
        if let Some((v, _)) = best {
            println!("{fam}: {v}");
            winners.insert(fam.to_string(), json!(v));
        }
    }
    let out = cache_path(&gpu)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let v = json!({"gpu": gpu, "plumb": env!("CARGO_PKG_VERSION"), "model": path.file_name().map(|f| f.to_string_lossy().into_owned()),
                   "variants": winners, "timings_us": timings});
    std::fs::write(&out, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "plumb: wrote {} (use --autotune to apply it)",
        out.display()
    );
    Ok(())
}

/// The variants `plumb tune` chose for `gpu`, as (op, name) pairs.
pub fn load_tuned(gpu: &str) -> Result<Vec<(String, String)>> {
    let path = cache_path(gpu)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no tuning for {gpu} at {}: run `plumb tune --device cuda` first",
            path.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let map = v["variants"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{} has no `variants`", path.display()))?;
    Ok(map
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect())
}
