//! Runs plumb's check harness on the CUDA backend for every variant, then times a few
//! decode/prefill shapes. Usage: `cuda_check [--quick] [--op NAME] [--seed N] [--no-bench]`.

use std::time::Instant;

use plumb_core::rng::Rng;
use plumb_core::{Bytes, GgmlType, HostWeight};
use plumb_cuda::CudaBackend;
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::{AttnParams, Backend};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let b = match CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let i = b.info();
    println!(
        "device: {} (sm_{}{}, {} SMs, {:.1} GiB, driver {})",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        i.sm_count,
        i.total_memory as f64 / (1u64 << 30) as f64,
        i.driver_version
    );
    let opts = CheckOptions {
        op: value("--op"),
        seed: value("--seed").and_then(|s| s.parse().ok()).unwrap_or(1),
        quick: flag("--quick"),
    };
    let mut totals = (0, 0, 0);
    for (matvec, prefill) in [("warp_per_row", "cublas"), ("tiled", "tiled")] {
        b.set_variant("matvec", matvec).expect("known variant");
        if let Err(e) = b.set_variant("prefill", prefill) {
            println!("== prefill={prefill}: {e}");
            continue;
        }
        println!("== variants: matvec={matvec} prefill={prefill}");
        let t0 = Instant::now();
        let mut o = opts.clone();
        if matvec != "warp_per_row" && o.op.is_none() {
            o.op = Some("matmul".into()); // other ops have one variant: checked above
        }
        let mut shown = 0;
        let results = check::run(&b, &o, &mut |r| {
            if r.status != Status::Pass && shown < 40 {
                shown += 1;
                println!(
                    "{} {:<13} {:<6} {:<40} nmse {:.2e} (tol {:.0e}) {}",
                    r.status.as_str(),
                    r.op,
                    r.dtype,
                    r.shape,
                    r.nmse,
                    r.tolerance,
                    r.detail
                );
            }
        });
        let (p, f, s) = check::summarize(&results);
        let worst = results
            .iter()
            .filter(|r| r.status == Status::Pass)
            .map(|r| (r.nmse / r.tolerance.max(1e-300), r))
            .fold(None::<(f64, &check::CaseResult)>, |a, x| match a {
                Some(b) if b.0 >= x.0 => Some(b),
                _ => Some(x),
            });
        println!(
            "{p} passed, {f} failed, {s} skipped ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        if let Some((ratio, r)) = worst {
            println!(
                "   closest pass: {} {} {} nmse {:.2e} = {:.1e} of tolerance",
                r.op, r.dtype, r.shape, r.nmse, ratio
            );
        }
        totals = (totals.0 + p, totals.1 + f, totals.2 + s);
    }
    for (r, cached) in b.kernel_reports() {
        let unit = match r.format {
            Some(f) => format!("{}[{f}]", r.file),
            None => r.file.to_string(),
        };
        println!(
            "kernel {:<22} {} {:>8} bytes, {:>7.1} ms{}",
            unit,
            r.arch,
            r.bytes,
            r.compile_ms,
            if cached { " (cache)" } else { "" }
        );
    }
    if !flag("--no-bench") {
        if let Err(e) = bench(&b) {
            println!("bench error: {e}");
        }
    }
    println!(
        "TOTAL: {} passed, {} failed, {} skipped",
        totals.0, totals.1, totals.2
    );
    std::process::exit(if totals.1 == 0 { 0 } else { 1 });
}

fn weight(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> HostWeight {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut bytes = vec![0u8; rows * row_bytes];
    for (r, chunk) in bytes.chunks_mut(row_bytes).enumerate() {
        let vals = rng.normals(cols, 0.05);
        plumb_core::quant::quantize_row(ty, &vals, chunk).unwrap_or_else(|e| panic!("{r}: {e}"));
    }
    HostWeight::new("bench", ty, rows, cols, Bytes::from_vec(bytes)).unwrap()
}

/// Mean seconds per call of `f` over `iters` calls after 3 warm-up calls.
fn time(b: &CudaBackend, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    b.synchronize().unwrap();
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    b.synchronize().unwrap();
    t0.elapsed().as_secs_f64() / iters as f64
}

fn bench(b: &CudaBackend) -> plumb_ops::Result<()> {
    let mut rng = Rng::new(5);
    let (rows, cols) = (4096, 4096);
    println!("== timings (host clock around synchronize; include launch overhead)");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
    ] {
        let hw = weight(&mut rng, ty, rows, cols);
        let w = b.upload_weight(&hw)?;
        let bytes = hw.data.len() as f64;
        for n in [1usize, 8] {
            let x = b.upload(&rng.normals(n * cols, 1.0))?;
            let mut out = b.alloc(n * rows)?;
            for v in ["warp_per_row", "tiled"] {
                b.set_variant("matvec", v).expect("known variant");
                let s = time(b, 50, || b.matmul(&w, &x, n, &mut out).unwrap());
                println!(
                    "matvec {v:<12} {:<5} {rows}x{cols} n={n}: {:7.1} us, {:6.0} GB/s of weights",
                    ty.name(),
                    s * 1e6,
                    bytes / s / 1e9
                );
            }
        }
        let n = 512;
        let x = b.upload(&rng.normals(n * cols, 1.0))?;
        let mut out = b.alloc(n * rows)?;
        for v in ["cublas", "tiled"] {
            if b.set_variant("prefill", v).is_err() {
                continue;
            }
            let s = time(b, 10, || b.matmul(&w, &x, n, &mut out).unwrap());
            println!(
                "prefill {v:<7} {:<5} {rows}x{cols} n={n}: {:8.1} us, {:6.1} TFLOP/s",
                ty.name(),
                s * 1e6,
                2.0 * (rows * cols * n) as f64 / s / 1e12
            );
        }
    }
    for (n, pos0) in [(1usize, 4095usize), (512, 0)] {
        let (h, kvh, hd) = (32, 8, 128);
        let cap = pos0 + n;
        let q = b.upload(&rng.normals(n * h * hd, 1.0))?;
        let k = b.upload(&rng.normals(cap * kvh * hd, 1.0))?;
        let v = b.upload(&rng.normals(cap * kvh * hd, 1.0))?;
        let mut out = b.alloc(n * h * hd)?;
        let p = AttnParams {
            n_tokens: n,
            pos0,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 0.088,
        };
        let s = time(b, 20, || b.attention(&q, &k, &v, p, &mut out).unwrap());
        let kv_bytes = (2 * cap * kvh * hd * 4) as f64;
        println!(
            "attention {n} tok at {pos0}, 32/8 heads, dim 128: {:8.1} us ({:.0} GB/s of KV)",
            s * 1e6,
            kv_bytes / s / 1e9
        );
    }
    Ok(())
}
