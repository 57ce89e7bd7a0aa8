//! `plumb bench-ops`: each op's time and bandwidth as a fraction of the machine's.

use std::path::PathBuf;

use anyhow::{Context, Result};
use plumb_engine::bench_ops::{
    backend_copy_bandwidth, bench_model_ops, host_read_bandwidth, OpTiming,
};
use plumb_gguf::GgufFile;
use serde_json::json;

use crate::common::{BackendKind, DeviceArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each op runs on the shapes of the model (decode n=1 and a prefill chunk). \
GB/s counts the bytes the op must move (weights, activations in and out, KV read); the roofline \
fraction sets that against the read bandwidth plumb measures on this machine first."
)]
pub struct Args {
    /// GGUF model whose shapes to use [default: SmolLM2-135M-Instruct Q4_1].
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Tokens of the prefill shapes.
    #[arg(long, default_value_t = 128)]
    prefill: usize,
    /// Context length of the decode attention.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Timed calls per op (the median is reported).
    #[arg(short = 'r', long, default_value_t = 20)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result<()> {
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let choice = a.device.choice()?;
    eprintln!("plumb: measuring memory bandwidth");
    let (bw, rows): (f64, Vec<OpTiming>) = crate::common::with_backend!(&choice, |b| {
        // The roofline: host read bandwidth for CPU backends, the device's own copy
        // bandwidth (read + write) for a GPU.
        let bw = match choice.kind() {
            BackendKind::Cuda => backend_copy_bandwidth(&b, 1024)?,
            // 64 MiB: within what every wgpu adapter binds (lavapipe: 128 MiB).
            BackendKind::Wgpu => backend_copy_bandwidth(&b, 64)?,
            _ => host_read_bandwidth(),
        };
        eprintln!("plumb: memory bandwidth {:.1} GB/s; timing ops", bw / 1e9);
        (
            bw,
            bench_model_ops(&b, &file, a.prefill, a.ctx, a.reps.max(1))?,
        )
    });
    let backend = choice.kind().name();
    if a.json {
        let ops: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"op": r.op, "shape": r.shape, "dtype": r.dtype, "backend": backend, "us": r.seconds * 1e6,
                       "gbps": r.gbps(), "gflops": r.flops / r.seconds / 1e9, "roofline_fraction": r.gbps() * 1e9 / bw})
            })
            .collect();
        let v =
            json!({"machine": crate::machine::describe(), "bandwidth_gbps": bw / 1e9, "ops": ops});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "| op | shape | dtype | µs | GB/s | GFLOP/s | of {:.1} GB/s |",
        bw / 1e9
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0}% |",
            r.op,
            r.shape,
            r.dtype,
            r.seconds * 1e6,
            r.gbps(),
            r.flops / r.seconds / 1e9,
            100.0 * r.gbps() * 1e9 / bw
        );
    }
    Ok(())
}
