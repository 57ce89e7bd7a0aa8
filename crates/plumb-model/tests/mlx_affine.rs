//! plumb's MLX affine quantizer and dequantization against MLX's own, bit for bit:
//! `fixtures/mlx/affine.safetensors` holds `mx.quantize`'s codes, scales and biases of test
//! matrices (every bits × group size, f32 and bf16 inputs) and `mx.dequantize`'s output
//! (scripts/make_mlx_fixture.py, `--vectors`).

use std::path::PathBuf;

use plumb_core::quant::{affine, dequantize_row};
use plumb_model::formats::mlx::affine_weight;
use plumb_model::formats::safetensors::{Safetensors, StTensor};
use safetensors::Dtype;

fn vectors() -> Safetensors {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/mlx/affine.safetensors");
    Safetensors::open_file(&p).expect("fixtures/mlx/affine.safetensors")
}

fn f32s(t: &StTensor) -> Vec<f32> {
    let b = t.data.as_slice();
    match t.dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    }
}

/// The stored bytes of a scale or bias in the tensor's dtype.
fn stored(v: f32, dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.to_le_bytes().to_vec(),
        Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
        d => panic!("unexpected dtype {d:?}"),
    }
}

const TAGS: [(&str, Dtype); 2] = [("f32", Dtype::F32), ("bf16", Dtype::BF16)];

#[test]
fn quantizer_matches_mx_quantize_bit_for_bit() {
    let v = vectors();
    let mut checked = 0;
    for (name, dtype) in TAGS {
        let x = v.get(&format!("x.{name}")).unwrap();
        let (rows, cols) = (x.shape[0], x.shape[1]);
        let xs = f32s(x);
        for bits in [2u32, 3, 4, 5, 6, 8] {
            for group in [32usize, 64, 128] {
                let tag = format!("b{bits}_g{group}_{name}");
                let q = v.get(&format!("{tag}.q")).unwrap();
                let s = v.get(&format!("{tag}.scales")).unwrap();
                let b = v.get(&format!("{tag}.biases")).unwrap();
                assert_eq!(s.dtype, dtype, "{tag}");
                let (code_bytes, sb) = (group * bits as usize / 8, dtype.bitsize() / 8);
                let n_groups = cols / group;
                for r in 0..rows {
                    for g in 0..n_groups {
                        let at = r * cols + g * group;
                        let mut codes = vec![0u8; code_bytes];
                        let (sc, bi) =
                            affine::quantize_group(bits, &xs[at..at + group], &mut codes);
                        let c0 = (r * n_groups + g) * code_bytes;
                        assert_eq!(
                            codes,
                            &q.data.as_slice()[c0..c0 + code_bytes],
                            "{tag} row {r} group {g}: codes"
                        );
                        let k = (r * n_groups + g) * sb;
                        assert_eq!(
                            stored(sc, dtype),
                            &s.data.as_slice()[k..k + sb],
                            "{tag} {r}/{g} scale"
                        );
                        assert_eq!(
                            stored(bi, dtype),
                            &b.data.as_slice()[k..k + sb],
                            "{tag} {r}/{g} bias"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 4 * 6 * (8 + 4 + 2));
}

#[test]
fn dequantization_matches_mx_dequantize_bit_for_bit() {
    let v = vectors();
    for (name, _) in TAGS {
        for bits in [2u32, 3, 4, 5, 6, 8] {
            for group in [32usize, 64, 128] {
                let tag = format!("b{bits}_g{group}_{name}");
                let get = |k: &str| v.get(&format!("{tag}.{k}")).unwrap();
                // The loader's path: MLX's three tensors interleaved into plumb's blocks.
                let w = affine_weight(&tag, (bits, group), get("q"), get("scales"), get("biases"))
                    .unwrap();
                let want = f32s(get("deq"));
                let cols = w.cols;
                let rb = w.ty.row_bytes(cols).unwrap();
                for r in 0..w.rows {
                    let mut got = vec![f32::NAN; cols];
                    dequantize_row(w.ty, &w.data.as_slice()[r * rb..(r + 1) * rb], &mut got)
                        .unwrap();
                    for (i, (g, e)) in got.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{tag} row {r} col {i}: {g} vs MLX {e}"
                        );
                    }
                }
            }
        }
    }
}
