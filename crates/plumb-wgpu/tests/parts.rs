//! Weights split into parts (src/buffer.rs): a weight larger than the adapter binds (Gemma 3's
//! 180 MiB embedding on lavapipe's 128 MiB) is uploaded as several buffers of whole rows, and
//! every op launches once per part. Here the parts are made small on purpose, and each op's
//! output on the split weight must equal, bit for bit, its output on the same weight in one
//! buffer (the path the check harness holds to the reference).

use plumb_core::{Bytes, GgmlType, HostWeight};
use plumb_ops::Backend;
use plumb_wgpu::{Options, WgpuBackend};

fn backend(part_bytes: Option<u64>) -> WgpuBackend {
    WgpuBackend::with_options(Options {
        weight_part_bytes: part_bytes,
        ..Default::default()
    })
    .expect("a wgpu adapter (scripts/test sets up lavapipe)")
}

fn weight(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> HostWeight {
    let mut rng = plumb_core::rng::Rng::new(seed);
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
    let mut q = vec![0u8; ty.row_bytes(rows * cols).unwrap()];
    plumb_core::quant::quantize_row(ty, &vals, &mut q).unwrap();
    HostWeight::new("w", ty, rows, cols, Bytes::from_vec(q)).unwrap()
}

/// matmul of `n` rows of x, and the embedding of `ids`, on `b`.
fn run(b: &WgpuBackend, w: &HostWeight, n: usize, ids: &[u32]) -> (usize, Vec<f32>, Vec<f32>) {
    let mut rng = plumb_core::rng::Rng::new(9);
    let x: Vec<f32> = (0..n * w.cols).map(|_| rng.normal()).collect();
    let dw = b.upload_weight(w).unwrap();
    let xb = b.upload(&x).unwrap();
    let mut out = b.alloc(n * w.rows).unwrap();
    b.matmul(&dw, &xb, n, &mut out).unwrap();
    let mut got = vec![0f32; n * w.rows];
    b.download(&out, &mut got).unwrap();
    let mut emb = b.alloc(ids.len() * w.cols).unwrap();
    b.embedding(&dw, ids, &mut emb).unwrap();
    let mut e = vec![0f32; ids.len() * w.cols];
    b.download(&emb, &mut e).unwrap();
    (dw.parts(), got, e)
}

#[test]
fn a_weight_split_into_parts_gives_what_one_buffer_gives() {
    let whole = backend(None);
    // 300 rows of 64: Q8_0 rows are 18 words (72 bytes), so 9,224 bytes hold 128 rows (parts
    // of 128, 128, 44); Q5_0 is F32 on the device (256 bytes a row): 36 rows a part, 9 parts.
    let split = backend(Some(9_224));
    // Ids in the first, middle and last part, repeated and out of order.
    let ids = [299u32, 0, 127, 128, 255, 256, 5, 299];
    for (ty, parts) in [(GgmlType::Q8_0, 3), (GgmlType::Q5_0, 9)] {
        let w = weight(ty, 300, 64, 3);
        // n 1 and 3: the matvec (8-bit activations for Q8_0, f32 for the dequantized Q5_0);
        // n 20: the tiled matmul.
        for n in [1, 3, 20] {
            let (one, want, want_e) = run(&whole, &w, n, &ids);
            let (many, got, got_e) = run(&split, &w, n, &ids);
            assert_eq!((one, many), (1, parts), "{ty:?}");
            assert!(
                want.iter().all(|v| v.is_finite() && *v != 0.0),
                "{ty:?} n {n}"
            );
            assert_eq!(got, want, "{ty:?} matmul n {n}");
            assert_eq!(got_e, want_e, "{ty:?} embedding");
        }
    }
}

#[test]
fn a_row_larger_than_a_part_is_refused_by_name() {
    let b = backend(Some(64));
    let err = b
        .upload_weight(&weight(GgmlType::Q8_0, 2, 64, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one row of 72 bytes"), "{err}");
}
