//! `plumb kernels`: list the CUDA kernel files, or compile them all ahead of time.

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Kernels are compiled by NVRTC at first use and cached in $PLUMB_HOME/kernels, keyed by \
source hash, GPU architecture and NVRTC version. --compile does it ahead of time and needs only NVRTC, \
not a GPU.\nExample: plumb kernels --compile --arch sm_90"
)]
pub struct Args {
    /// Compile every kernel file (for every weight format where a file is per format).
    #[arg(long)]
    compile: bool,
    /// Target architecture: sm_80, sm_90, sm_90a, ... (repeatable).
    #[arg(long, default_value = "sm_90")]
    arch: Vec<String>,
}

pub fn main(a: Args) -> Result<()> {
    if !a.compile {
        println!("kernel files:");
        for f in plumb_cuda::compile::KERNEL_FILES {
            println!("  {}", f.name);
        }
        println!("variant families (the first variant is the default; `plumb check --device cuda` checks every one):");
        for f in plumb_cuda::FAMILIES {
            println!(
                "  {} — {} (checked by: {})",
                f.name,
                f.doc,
                f.checks.join(", ")
            );
            for v in f.variants {
                println!("    {:<14} {}", v.name, v.doc);
            }
        }
        eprintln!("plumb: pass --compile [--arch sm_XX] to compile the kernel files");
        return Ok(());
    }
    let mut failed = 0;
    for arch in &a.arch {
        let reports =
            plumb_cuda::compile_all(arch).with_context(|| format!("compiling for {arch}"))?;
        let total: f64 = reports.iter().map(|r| r.compile_ms).sum();
        for r in &reports {
            println!(
                "{:<8} {:<22} {:<6} {:>5} {:>8} B {:>3} kernels {:>8.1} ms",
                r.arch,
                r.file,
                r.format.unwrap_or("-"),
                r.kind,
                r.bytes,
                r.entry_points,
                r.compile_ms
            );
            if r.entry_points == 0 {
                failed += 1;
            }
        }
        let (maj, min) = reports.first().map(|r| r.nvrtc_version).unwrap_or((0, 0));
        eprintln!(
            "plumb: {arch}: {} units in {:.1} s (NVRTC {maj}.{min})",
            reports.len(),
            total / 1e3
        );
    }
    if failed > 0 {
        bail!("{failed} unit(s) have no kernels");
    }
    Ok(())
}
