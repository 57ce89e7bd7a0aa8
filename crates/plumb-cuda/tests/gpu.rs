//! Tests that need an NVIDIA GPU are `#[ignore]`d: CI has none. On a GPU machine run
//! `cargo test --release -p plumb-cuda --test gpu -- --ignored`. The first test runs
//! everywhere: without a driver, opening a GPU is an error, never a panic.

use plumb_core::{GgmlType, HostWeight};
use plumb_cuda::{CudaBackend, CudaError};
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::Backend;

const NEEDS_GPU: &str = "needs an NVIDIA GPU; run with --ignored on a GPU machine";

#[test]
fn opening_a_gpu_never_panics() {
    match CudaBackend::new(0) {
        Ok(b) => assert!(b.info().sm_count > 0),
        Err(e) => assert!(
            matches!(e, CudaError::NoDriver | CudaError::NoDevice(_)),
            "unexpected error: {e}"
        ),
    }
    match CudaBackend::new(4096) {
        Ok(_) => panic!("GPU 4096 cannot exist"),
        Err(CudaError::NoDriver) => {
            let msg = CudaError::NoDriver.to_string();
            assert!(msg.contains("no CUDA driver found (libcuda.so)"), "{msg}");
        }
        Err(e) => assert!(
            matches!(e, CudaError::BadOrdinal { .. } | CudaError::NoDevice(_)),
            "{e}"
        ),
    }
}

fn gpu() -> CudaBackend {
    CudaBackend::new(0).unwrap_or_else(|e| panic!("{NEEDS_GPU}: {e}"))
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn check_harness_passes_for_every_variant() {
    let b = gpu();
    for (matvec, prefill) in [("warp_per_row", "cublas"), ("tiled", "tiled")] {
        b.set_variant("matvec", matvec).unwrap();
        if b.set_variant("prefill", prefill).is_err() {
            continue; // no cuBLAS on this machine
        }
        let opts = CheckOptions {
            op: None,
            seed: 11,
            quick: true,
        };
        let results = check::run(&b, &opts, &mut |_| {});
        let bad: Vec<String> = results
            .iter()
            .filter(|r| r.status != Status::Pass)
            .map(|r| format!("{} {} {}: {}", r.op, r.dtype, r.shape, r.detail))
            .collect();
        assert!(bad.is_empty(), "{matvec}/{prefill}:\n{}", bad.join("\n"));
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn argmax_takes_the_first_maximum_and_ignores_nan() {
    let b = gpu();
    let mut x = vec![f32::NEG_INFINITY; 70001];
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), x.len()).unwrap(), 0);
    x[5] = f32::NAN;
    x[60000] = 3.0;
    x[1234] = 3.0;
    x[69999] = 2.0;
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), x.len()).unwrap(), 1234);
    // Only the first `len` values count.
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), 1000).unwrap(), 0);
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn copies_errors_and_variants() {
    let b = gpu();
    let src = b.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut dst = b.alloc(6).unwrap();
    b.copy(&src, 1, &mut dst, 4, 2).unwrap();
    let mut host = [0f32; 6];
    b.download(&dst, &mut host).unwrap();
    assert_eq!(host, [0.0, 0.0, 0.0, 0.0, 2.0, 3.0]);
    assert!(b.copy(&src, 3, &mut dst, 0, 2).is_err());

    let table = HostWeight::from_f32("t", 2, 3, &[0.0; 6]).unwrap();
    let w = b.upload_weight(&table).unwrap();
    let mut out = b.alloc(3).unwrap();
    let err = b.embedding(&w, &[2], &mut out).unwrap_err().to_string();
    assert!(err.contains("token id 2"), "{err}");

    assert!(b.set_variant("matvec", "nope").is_err());
    assert!(b.set_variant("nope", "tiled").is_err());
    b.set_variant("matvec", "tiled").unwrap();
    assert_eq!(b.variant("matvec"), Some("tiled"));
    assert_eq!(plumb_cuda::variants("matvec"), &["warp_per_row", "tiled"]);
    let _ = GgmlType::Q4_0;
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn kernels_come_from_the_disk_cache_the_second_time() {
    let home = std::env::temp_dir().join(format!("plumb-home-{}", std::process::id()));
    std::env::set_var("PLUMB_HOME", &home);
    for round in 0..2 {
        let b = gpu();
        let x = b.upload(&[1.0; 64]).unwrap();
        let mut y = b.alloc(64).unwrap();
        b.swiglu(&x, &x, 64, &mut y).unwrap();
        b.synchronize().unwrap();
        let reports = b.kernel_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].1, round == 1, "round {round}: {:?}", reports[0]);
    }
    let _ = std::fs::remove_dir_all(&home);
}
