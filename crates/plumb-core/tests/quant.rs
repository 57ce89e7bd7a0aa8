//! Row-level tests of the reference (de)quantizers: round trips on random data with
//! per-format error bounds, length errors, and odd inputs.

use plumb_core::quant::{dequantize_row, quantize_row};
use plumb_core::{CoreError, GgmlType};

/// xorshift64*: a tiny deterministic RNG.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

const QUANTIZED: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut bytes).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    dequantize_row(ty, &bytes, &mut y).unwrap();
    y
}

/// RMSE of `y` against `x`, relative to the RMS of `x`.
fn rel_rmse(x: &[f32], y: &[f32]) -> f32 {
    let err: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let norm: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / norm).sqrt() as f32
}

/// Upper bounds of the relative RMSE on Gaussian data. The legacy formats and Q8_K use
/// ggml's reference math; Q2_K..Q6_K use simple fits, so their bounds sit a little above
/// llama.cpp's figures. A wrong layout gives errors near or above 1.
fn bound(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 => 0.01,
        GgmlType::Q8K => 0.01,
        GgmlType::Q6K => 0.03,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => 0.06,
        GgmlType::Q4_0 => 0.12,
        GgmlType::Q4_1 | GgmlType::Q4K => 0.10,
        GgmlType::Q3K => 0.20,
        GgmlType::Q2K => 0.40,
        _ => 0.0,
    }
}

#[test]
fn round_trips_on_gaussian_data_are_within_bounds() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let x: Vec<f32> = (0..16 * 256).map(|_| rng.normal() * 0.02).collect();
    for ty in QUANTIZED {
        let e = rel_rmse(&x, &round_trip(ty, &x));
        println!("{ty}: relative RMSE {e:.4}");
        assert!(e < bound(ty), "{ty}: relative RMSE {e} >= {}", bound(ty));
    }
}

#[test]
fn round_trips_on_uniform_data_with_offset_are_within_bounds() {
    // An offset and varying scale per block exercise mins and the signs of scales.
    let mut rng = Rng(12345);
    let x: Vec<f32> = (0..16 * 256)
        .map(|i| {
            let scale = 1.0 + (i / 256) as f32;
            let offset = if (i / 64) % 3 == 0 { 0.5 } else { -0.25 };
            scale * (rng.uniform() - 0.5 + offset)
        })
        .collect();
    for ty in QUANTIZED {
        let e = rel_rmse(&x, &round_trip(ty, &x));
        println!("{ty}: relative RMSE {e:.4}");
        assert!(e < bound(ty), "{ty}: relative RMSE {e} >= {}", bound(ty));
    }
}

#[test]
fn every_element_lands_near_its_source() {
    // A layout bug that swaps two elements can hide in an RMSE; a per-element bound cannot.
    // Each block holds a ramp, so every element differs from its neighbours.
    for ty in QUANTIZED {
        let n = 2 * 256;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % n) as f32 / n as f32 - 0.5)
            .collect();
        let y = round_trip(ty, &x);
        // Coarsest step: a sub-block range of at most 1 in 3 steps (Q2_K) plus scale rounding.
        let tol = match ty {
            GgmlType::Q2K => 0.3,
            GgmlType::Q3K => 0.15,
            _ => 0.06,
        };
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert!((a - b).abs() <= tol, "{ty}: element {i}: {a} -> {b}");
        }
    }
}

#[test]
fn zero_rows_stay_zero() {
    for ty in QUANTIZED {
        let x = vec![0.0f32; 512];
        let y = round_trip(ty, &x);
        assert!(y.iter().all(|v| *v == 0.0), "{ty}: {:?}", &y[..8]);
    }
}

#[test]
fn constant_rows_round_trip_closely() {
    for ty in QUANTIZED {
        for c in [1.5f32, -0.75] {
            let x = vec![c; 256];
            let y = round_trip(ty, &x);
            let e = rel_rmse(&x, &y);
            assert!(e < 0.02, "{ty} constant {c}: relative RMSE {e}");
        }
    }
}

#[test]
fn odd_values_do_not_panic() {
    let mut x = vec![0.5f32; 512];
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[300] = f32::NEG_INFINITY;
    x[301] = 1e30;
    x[302] = 1e-30;
    for ty in QUANTIZED {
        let mut bytes = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize_row(ty, &x, &mut bytes).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize_row(ty, &bytes, &mut y).unwrap();
    }
}

#[test]
fn arbitrary_bytes_dequantize_without_panic() {
    let mut rng = Rng(7);
    for ty in QUANTIZED {
        let n = 2 * ty.block_size().max(256);
        let bytes: Vec<u8> = (0..ty.row_bytes(n).unwrap())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let mut y = vec![0f32; n];
        dequantize_row(ty, &bytes, &mut y).unwrap();
    }
}

#[test]
fn blocks_are_independent_within_a_row() {
    // Quantizing a row equals quantizing its blocks one by one.
    let mut rng = Rng(99);
    for ty in QUANTIZED {
        let bs = ty.block_size();
        let x: Vec<f32> = (0..3 * bs).map(|_| rng.normal()).collect();
        let mut whole = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize_row(ty, &x, &mut whole).unwrap();
        for (k, chunk) in x.chunks(bs).enumerate() {
            let mut one = vec![0u8; ty.type_size()];
            quantize_row(ty, chunk, &mut one).unwrap();
            assert_eq!(
                one,
                whole[k * ty.type_size()..(k + 1) * ty.type_size()],
                "{ty}"
            );
        }
    }
}

#[test]
fn wrong_byte_lengths_are_errors() {
    for ty in QUANTIZED {
        let n = ty.block_size() * 2;
        let good = ty.row_bytes(n).unwrap();
        for len in [good - 1, good + 1, 0, good - ty.type_size()] {
            let bytes = vec![0u8; len];
            let mut y = vec![0f32; n];
            match dequantize_row(ty, &bytes, &mut y) {
                Err(CoreError::ByteLength { expected, got, .. }) => {
                    assert_eq!((expected, got), (good, len), "{ty}");
                }
                other => panic!("{ty}: dequantize with {len} bytes gave {other:?}"),
            }
            let x = vec![0f32; n];
            let mut out = vec![0u8; len];
            assert!(
                matches!(
                    quantize_row(ty, &x, &mut out),
                    Err(CoreError::ByteLength { .. })
                ),
                "{ty}: quantize into {len} bytes"
            );
        }
    }
}

#[test]
fn lengths_off_the_block_size_are_errors() {
    for ty in QUANTIZED {
        let bs = ty.block_size();
        for n in [1, bs - 1, bs + 1, 2 * bs + 16] {
            let bytes = vec![0u8; ty.type_size() * (n / bs + 1)];
            let mut y = vec![0f32; n];
            assert!(
                matches!(
                    dequantize_row(ty, &bytes, &mut y),
                    Err(CoreError::NotBlockAligned { .. })
                ),
                "{ty}: dequantize {n}"
            );
            let x = vec![0f32; n];
            let mut out = bytes.clone();
            assert!(
                matches!(
                    quantize_row(ty, &x, &mut out),
                    Err(CoreError::NotBlockAligned { .. })
                ),
                "{ty}: quantize {n}"
            );
        }
    }
}

#[test]
fn empty_rows_are_fine() {
    for ty in QUANTIZED {
        dequantize_row(ty, &[], &mut []).unwrap();
        quantize_row(ty, &[], &mut []).unwrap();
    }
}

#[test]
fn q4_0_row_of_two_hand_built_blocks() {
    // Block 0: d = 1, all nibbles 9 -> 1.0. Block 1: d = -2 (0xC000), all nibbles 0 -> 16.0.
    let mut bytes = vec![0x00u8; 36];
    bytes[0..2].copy_from_slice(&0x3C00u16.to_le_bytes());
    bytes[2..18].fill(0x99);
    bytes[18..20].copy_from_slice(&0xC000u16.to_le_bytes());
    let mut y = vec![0f32; 64];
    dequantize_row(GgmlType::Q4_0, &bytes, &mut y).unwrap();
    assert!(y[..32].iter().all(|v| *v == 1.0));
    assert!(y[32..].iter().all(|v| *v == 16.0));
}

#[test]
fn q8_k_row_keeps_block_sums() {
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..512).map(|_| rng.normal()).collect();
    let mut bytes = vec![0u8; GgmlType::Q8K.row_bytes(512).unwrap()];
    quantize_row(GgmlType::Q8K, &x, &mut bytes).unwrap();
    for block in bytes.chunks(292) {
        for i in 0..16 {
            let sum: i32 = block[4 + 16 * i..4 + 16 * (i + 1)]
                .iter()
                .map(|b| *b as i8 as i32)
                .sum();
            let stored = i16::from_le_bytes([block[260 + 2 * i], block[261 + 2 * i]]);
            assert_eq!(sum, stored as i32);
        }
    }
}
