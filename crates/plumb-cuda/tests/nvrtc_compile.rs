//! Every kernel file compiles with NVRTC for sm_80 and sm_90 and holds the entry points its
//! launcher uses. Needs libnvrtc.so.13 on the loader path (no GPU): this test FAILS, never
//! skips, when NVRTC is missing. CI: `pip install nvidia-cuda-nvrtc==13.0.88` and
//! LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13/lib"))').

use plumb_cuda::compile::{self, KERNEL_FILES};

fn nvrtc_or_fail() {
    if let Err(e) = compile::ensure_nvrtc() {
        panic!("{e}");
    }
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    nvrtc_or_fail();
    for arch in ["sm_80", "sm_90"] {
        let reports = plumb_cuda::compile_all(arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reports.len(), KERNEL_FILES.len());
        for r in &reports {
            assert_eq!(r.kind, "cubin");
            assert!(r.bytes > 1000, "{} for {arch}: {} bytes", r.file, r.bytes);
            assert!(r.entry_points > 0, "{}", r.file);
        }
    }
}

#[test]
fn ptx_targets_and_bad_archs() {
    nvrtc_or_fail();
    let r = plumb_cuda::compile_all("compute_80").unwrap_or_else(|e| panic!("{e}"));
    assert!(r.iter().all(|r| r.kind == "ptx"));
    let err = plumb_cuda::compile_all("gfx90a").unwrap_err().to_string();
    assert!(err.contains("not a GPU architecture"), "{err}");
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    nvrtc_or_fail();
    let bad = compile::KernelFile {
        name: "broken.cu",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        uses_quant: false,
    };
    let bad: &'static compile::KernelFile = Box::leak(Box::new(bad));
    let err = compile::compile_checked(bad, None, "sm_80")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.cu") && err.contains("undefined_name"),
        "{err}"
    );
}

#[test]
fn one_format_units_hold_exactly_their_kernels() {
    nvrtc_or_fail();
    for (file, fmt) in [
        ("matvec_q.cu", "q4_k"),
        ("embedding.cu", "bf16"),
        ("matmul.cu", "q8_0"),
        ("mmq.cu", "q6_k"),
    ] {
        let kf = compile::kernel_file(file).unwrap();
        let image =
            compile::compile_checked(kf, Some(fmt), "sm_90").unwrap_or_else(|e| panic!("{e}"));
        // Another format's kernels are not in the unit.
        let other = match (file, fmt) {
            ("mmq.cu", _) => "mmq_nt1_q4_0",
            (_, "q4_k") => "matvec_warp_q4_0",
            _ => "embedding_f16",
        };
        assert!(
            !compile::image_has_symbol(&image, other),
            "{file}[{fmt}] holds {other}"
        );
    }
}

#[test]
fn cache_entries_round_trip_and_reject_corruption() {
    let dir = std::env::temp_dir().join(format!("plumb-kcache-{}", std::process::id()));
    let unit = compile::Unit::whole(&KERNEL_FILES[0]);
    let path = compile::cache_path(&dir, &unit, "sm_90", (13, 0));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("norm-") && name.ends_with("-sm_90-nvrtc13.0.cubin"),
        "{name}"
    );
    // Another arch, NVRTC version, source or format gives another key.
    assert_ne!(path, compile::cache_path(&dir, &unit, "sm_80", (13, 0)));
    assert_ne!(path, compile::cache_path(&dir, &unit, "sm_90", (13, 1)));
    let other = compile::Unit::whole(&KERNEL_FILES[1]);
    assert_ne!(path, compile::cache_path(&dir, &other, "sm_90", (13, 0)));
    let mv = compile::kernel_file("matvec_q.cu").unwrap();
    let q4 = compile::Unit {
        file: mv,
        format: Some("q4_0"),
    };
    let q8 = compile::Unit {
        file: mv,
        format: Some("q8_0"),
    };
    assert_ne!(
        compile::cache_path(&dir, &q4, "sm_90", (13, 0)),
        compile::cache_path(&dir, &q8, "sm_90", (13, 0))
    );
    assert!(compile::cache_path(&dir, &q4, "sm_90", (13, 0))
        .to_string_lossy()
        .contains("matvec_q.q4_0-"));

    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    compile::write_cache_entry(&path, &payload).unwrap();
    assert_eq!(
        compile::read_cache_entry(&path).as_deref(),
        Some(&payload[..])
    );

    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x40; // one flipped bit in the payload
    std::fs::write(&path, &data).unwrap();
    assert_eq!(compile::read_cache_entry(&path), None);
    std::fs::write(&path, &data[..100]).unwrap(); // truncated
    assert_eq!(compile::read_cache_entry(&path), None);
    std::fs::write(&path, b"garbage").unwrap();
    assert_eq!(compile::read_cache_entry(&path), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn symbol_search_is_exact() {
    let image = b"\0add_f32\0add_bias_f32\0.entry swiglu_f32(";
    assert!(compile::image_has_symbol(image, "add_f32"));
    assert!(compile::image_has_symbol(image, "swiglu_f32"));
    assert!(!compile::image_has_symbol(image, "add"));
    assert!(!compile::image_has_symbol(image, "bias_f32"));
}
