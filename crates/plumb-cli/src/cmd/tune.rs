//! `plumb tune`: times every kernel variant that passes the check on this GPU over a model's
//! shapes and keeps the fastest per op family in a cache file per GPU name and plumb version;
//! `--autotune` on any command applies it. On wgpu the two families (reduce, dot) are timed
//! together: every combination the adapter runs, over all of the model's ops.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_engine::bench_ops::bench_model_ops;
use plumb_gguf::GgufFile;
use plumb_ops::check::{self, CheckOptions, Status};
use serde_json::json;

use crate::common::{BackendKind, DeviceArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: plumb tune --device cuda -m model.gguf, then plumb bench --device cuda --autotune \
(or --device wgpu)"
)]
pub struct Args {
    /// GGUF model whose shapes to tune for [default: SmolLM2-135M-Instruct Q4_1].
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Only this op family (matvec, prefill, batch, attention).
    #[arg(long)]
    op: Option<String>,
    /// Tokens of the prefill shapes.
    #[arg(long, default_value_t = 512)]
    prefill: usize,
    /// Timed calls per op (median).
    #[arg(short = 'r', long, default_value_t = 10)]
    reps: usize,
}

/// The tokens a family is timed at: the top of a matmul family's range (the prefill length
/// for the open-ended one), the prefill length for attention (its decode and prefill shapes).
fn tune_tokens(f: &plumb_cuda::Family, prefill: usize) -> usize {
    match f.tokens {
        Some((_, hi)) if hi < usize::MAX => hi,
        _ => prefill,
    }
}

/// Whether a timed op belongs to family `f`: a matmul whose token count is in its range, or
/// any attention for the attention family.
fn selects(f: &plumb_cuda::Family, t: &plumb_engine::bench_ops::OpTiming) -> bool {
    match f.tokens {
        Some((lo, hi)) => {
            let n = t
                .shape
                .rsplit_once("n=")
                .and_then(|(_, n)| n.parse::<usize>().ok());
            t.op == "matmul" && n.is_some_and(|n| (lo..=hi).contains(&n))
        }
        None => f.checks.contains(&t.op.as_str()),
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
    let ordinal = match a.device.gpu()? {
        Some((BackendKind::Cuda, o)) => o,
        Some((_, o)) => return tune_wgpu(o, &a),
        None => bail!(
            "plumb tune tunes GPU kernels: pass --device cuda or --device wgpu (the CPU backend \
             has no variants)"
        ),
    };
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let b = crate::common::cuda_backend_unchecked(ordinal, &[])?;
    let gpu = b.info().name.clone();
    let mut winners = serde_json::Map::new();
    let mut timings = serde_json::Map::new();
    for f in plumb_cuda::FAMILIES {
        if a.op.as_deref().is_some_and(|o| o != f.name) {
            continue;
        }
        if let Some((v, _)) = tune_family(&b, f, &file, &a, &mut timings)? {
            println!("{}: {v}", f.name);
            winners.insert(f.name.to_string(), json!(v));
        }
    }
    write_cache(&gpu, &path, winners, timings)
}

/// Writes the winners and the timings of `gpu` to its cache file.
fn write_cache(
    gpu: &str,
    model: &std::path::Path,
    winners: serde_json::Map<String, serde_json::Value>,
    timings: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let out = cache_path(gpu)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let v = json!({"gpu": gpu, "plumb": env!("CARGO_PKG_VERSION"), "model": model.file_name().map(|f| f.to_string_lossy().into_owned()),
                   "variants": winners, "timings_us": timings});
    std::fs::write(&out, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "plumb: wrote {} (use --autotune to apply it)",
        out.display()
    );
    Ok(())
}

/// `plumb tune --device wgpu`: every combination of the wgpu variants that the adapter runs
/// and that passes the check (quick shapes) is timed over all of the model's ops (decode and
/// `--prefill` matmuls, norms, rope, attention); the fastest total wins.
fn tune_wgpu(ordinal: usize, a: &Args) -> Result<()> {
    if a.op.is_some() {
        bail!("--op: wgpu's variants (reduce, dot) are tuned together over every op; drop --op");
    }
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut timings = serde_json::Map::new();
    let mut best: Option<(plumb_wgpu::Variants, f64)> = None;
    let mut gpu = String::new();
    for v in plumb_wgpu::Variants::all() {
        let b = plumb_wgpu::WgpuBackend::with_options(plumb_wgpu::Options {
            ordinal,
            variants: v,
            ..Default::default()
        })
        .context("opening the wgpu adapter")?;
        gpu.clone_from(&b.info().name);
        if b.variants() != v {
            eprintln!("plumb: {}: cannot run here", v.describe());
            continue;
        }
        let opts = CheckOptions {
            op: None,
            seed: 7,
            quick: true,
        };
        let results = check::run(&b, &opts, &mut |_| {});
        let fails = results.iter().filter(|r| r.status == Status::Fail).count();
        if fails > 0 {
            eprintln!(
                "plumb: {}: {fails} check case(s) fail; not a candidate",
                v.describe()
            );
            continue;
        }
        let rows = bench_model_ops(&b, &file, a.prefill, 512, a.reps.max(1))?;
        let total: f64 = rows.iter().map(|t| t.seconds).sum();
        eprintln!(
            "plumb: {}: {:.1} µs over the model's ops",
            v.describe(),
            total * 1e6
        );
        timings.insert(v.describe(), json!(total * 1e6));
        if best.is_none_or(|(_, t)| total < t) {
            best = Some((v, total));
        }
    }
    let Some((v, _)) = best else {
        bail!("no wgpu variant passed the check on {gpu}");
    };
    let mut winners = serde_json::Map::new();
    for (family, name) in v.names() {
        println!("{family}: {name}");
        winners.insert(family.to_string(), json!(name));
    }
    write_cache(&gpu, &path, winners, timings)
}

/// Times every variant of `f` that passes the family's check ops over the model's shapes and
/// returns the fastest with its time; the default is selected again afterwards.
fn tune_family(
    b: &plumb_cuda::CudaBackend,
    f: &plumb_cuda::Family,
    file: &GgufFile,
    a: &Args,
    timings: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Option<(&'static str, f64)>> {
    let default = b.variant(f.name);
    let n = tune_tokens(f, a.prefill);
    let mut best: Option<(&'static str, f64)> = None;
    for v in f.variant_names() {
        if let Err(e) = b.set_variant(f.name, v) {
            eprintln!("plumb: {}={v}: cannot run here ({e})", f.name);
            continue;
        }
        let fails: usize = f
            .checks
            .iter()
            .map(|op| {
                let opts = CheckOptions {
                    op: Some(op.to_string()),
                    seed: 7,
                    quick: true,
                };
                let results = check::run(b, &opts, &mut |_| {});
                results.iter().filter(|r| r.status == Status::Fail).count()
            })
            .sum();
        if fails > 0 {
            eprintln!(
                "plumb: {}={v}: {fails} check case(s) fail; not a candidate",
                f.name
            );
            continue;
        }
        let rows = bench_model_ops(b, file, n, 512, a.reps.max(1))?;
        let total: f64 = rows
            .iter()
            .filter(|t| selects(f, t))
            .map(|t| t.seconds)
            .sum();
        eprintln!(
            "plumb: {}={v}: {:.1} µs over the model's shapes at {n} tokens",
            f.name,
            total * 1e6
        );
        timings.insert(format!("{}={v}", f.name), json!(total * 1e6));
        if best.is_none_or(|(_, t)| total < t) {
            best = Some((v, total));
        }
    }
    if let Some(d) = default {
        b.set_variant(f.name, d)?;
    }
    Ok(best)
}

/// The variants `plumb tune` chose for `gpu`, as (op, name) pairs.
pub fn load_tuned(gpu: &str) -> Result<Vec<(String, String)>> {
    let path = cache_path(gpu)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no tuning for {gpu} at {}: run `plumb tune` on its --device first",
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
