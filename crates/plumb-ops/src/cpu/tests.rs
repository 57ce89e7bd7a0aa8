//! CpuBackend matmul and embedding against the references, for every weight type, many
//! shapes and every SIMD level this machine has.

use std::sync::OnceLock;

use plumb_core::{Bytes, GgmlType, HostWeight};

use super::{CpuBackend, SimdLevel};
use crate::backend::Backend;
use crate::ops;

/// splitmix64: a small deterministic generator for test data.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Σ (a - b)² / Σ b², in f64.
pub(crate) fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut e, mut s) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        e += (g as f64 - w as f64).powi(2);
        s += (w as f64).powi(2);
    }
    if s == 0.0 {
        e
    } else {
        e / s
    }
}

/// One backend per SIMD level this machine has (2 threads; a 3-thread one as well).
pub(crate) fn backends() -> &'static [CpuBackend] {
    static B: OnceLock<Vec<CpuBackend>> = OnceLock::new();
    B.get_or_init(|| {
        let mut v: Vec<CpuBackend> = SimdLevel::available()
            .into_iter()
            .map(|l| {
                CpuBackend::with_threads(2)
                    .with_level(l)
                    .expect("available level")
            })
            .collect();
        v.push(CpuBackend::with_threads(3));
        v
    })
}

/// Offsets of the f16 scale fields in one block of each quantized type.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// A weight of random bytes with small finite scales.
pub(crate) fn random_weight(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> HostWeight {
    let n = rows * cols;
    let bytes: Vec<u8> = match ty {
        GgmlType::F32 => rng.vec(n).iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => rng
            .vec(n)
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => rng
            .vec(n)
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => {
            let mut b: Vec<u8> = (0..ty.row_bytes(cols).unwrap() * rows)
                .map(|_| rng.next() as u8)
                .collect();
            for blk in b.chunks_exact_mut(ty.type_size()) {
                for &o in f16_fields(ty) {
                    let v = rng.f() * 0.05;
                    blk[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                }
                if ty == GgmlType::Q8K {
                    blk[0..4].copy_from_slice(&(rng.f() * 0.01).to_le_bytes());
                }
                if ty.affine().is_some() {
                    // The MLX formats: f32 scale and bias first.
                    blk[0..4].copy_from_slice(&(rng.f() * 0.01).to_le_bytes());
                    blk[4..8].copy_from_slice(&(rng.f() * 0.2).to_le_bytes());
                }
            }
            b
        }
    };
    HostWeight::new("w", ty, rows, cols, Bytes::from_vec(bytes)).unwrap()
}

/// Activations with a per-token offset, so block sums (the `mw` terms) matter.
pub(crate) fn activations(n: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = Vec::with_capacity(n * cols);
    for _ in 0..n {
        let off = rng.f() * 0.5;
        let amp = 0.1 + rng.f().abs() * 4.0;
        x.extend((0..cols).map(|_| (rng.f() + off) * amp));
    }
    x
}

const QUANT: [GgmlType; 12] = [
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

fn check_matmul(ty: GgmlType, n: usize, rows: usize, cols: usize, seed: u64) {
    let mut rng = Rng(seed);
    let hw = random_weight(ty, rows, cols, &mut rng);
    let x = activations(n, cols, &mut rng);
    let mut want = vec![0f32; n * rows];
    ops::matmul::reference(&hw, &x, n, &mut want, true).unwrap();
    // 8-bit activations cost ~1e-5; float weights only rounding.
    let bound = if ty.is_quantized() { 1e-4 } else { 1e-10 };
    // With a handful of outputs one dot product that nearly cancels would dominate the
    // NMSE: normalize by at least the expected size of an output, |w|² |x|² / cols.
    let wf = hw.to_f32().unwrap();
    let sq = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
    let w2: f64 = wf.chunks(cols).map(sq).sum();
    let x2: f64 = x.chunks(cols).map(sq).sum();
    let floor = w2 * x2 / cols as f64;
    let norm = |got: &[f32]| {
        let e: f64 = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| {
                if g.is_finite() {
                    (g as f64 - w as f64).powi(2)
                } else {
                    f64::INFINITY
                }
            })
            .sum();
        e / sq(&want).max(floor)
    };
    for be in backends() {
        let w = be.upload_weight(&hw).unwrap();
        let xb = be.upload(&x).unwrap();
        let mut out = vec![f32::NAN; n * rows + 3];
        be.matmul(&w, &xb, n, &mut out).unwrap();
        assert!(
            out[n * rows..].iter().all(|v| v.is_nan()),
            "wrote past the output"
        );
        let e = norm(&out[..n * rows]);
        assert!(
            e < bound,
            "{ty} n={n} rows={rows} cols={cols} {be:?}: nmse {e:e}"
        );
    }
}

#[test]
fn matmul_legacy_and_float_types() {
    // Columns cover every group shape: 1 block, 2, 3 = 2+1, 7 = 4+2+1, 18 = 16+2 (576),
    // 25 = 16+8+1, 48 = 3×16 (1536).
    let shapes = [
        (1, 1, 32),
        (2, 7, 64),
        (3, 5, 96),
        (5, 33, 224),
        (1, 769, 576),
        (17, 64, 576),
        (64, 24, 576),
        (2, 40, 800),
        (1, 64, 1536),
        (5, 19, 1536),
    ];
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
    ];
    for (i, &ty) in types.iter().enumerate() {
        for (j, &(n, rows, cols)) in shapes.iter().enumerate() {
            check_matmul(ty, n, rows, cols, (i * 100 + j) as u64);
        }
    }
}

#[test]
fn matmul_k_quants() {
    // 256 = one group of 8 blocks, 768 = 16 + 8, 1536 = 3×16.
    let shapes = [
        (1, 1, 256),
        (2, 9, 256),
        (3, 769, 256),
        (5, 31, 768),
        (17, 16, 512),
        (64, 12, 1536),
        (1, 40, 1536),
    ];
    for (i, &ty) in QUANT.iter().filter(|t| t.block_size() == 256).enumerate() {
        for (j, &(n, rows, cols)) in shapes.iter().enumerate() {
            check_matmul(ty, n, rows, cols, (1000 + i * 100 + j) as u64);
        }
    }
}

/// Columns of the MLX cases: for each group size, one group and a few that give groups of
/// blocks of every size (128 = 4 blocks, 384 = 8 + 4, 640 = 16 + 4, 1536 = 3 × 16; group 32
/// adds 96 = 2 + 1 and 576 = 16 + 2, group 64 adds 576 again).
fn mlx_cols(group: usize) -> Vec<usize> {
    let mut cols = vec![group, 128, 384, 640, 1536];
    match group {
        32 => cols.extend([96, 576]),
        64 => cols.push(576),
        _ => {}
    }
    cols.dedup();
    cols
}

#[test]
fn matmul_mlx_affine_every_bits_and_group() {
    for (i, ty) in GgmlType::MLX.into_iter().enumerate() {
        for (j, cols) in mlx_cols(ty.block_size()).into_iter().enumerate() {
            let (n, rows) = [(1, 33), (2, 8), (5, 19), (17, 12), (1, 130)][j % 5];
            check_matmul(ty, n, rows, cols, (2000 + i * 100 + j) as u64);
        }
    }
}

#[test]
fn float_matmul_odd_columns() {
    for (j, &(n, rows, cols)) in [(1, 3, 1), (2, 5, 7), (3, 9, 17), (5, 4, 769)]
        .iter()
        .enumerate()
    {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            check_matmul(ty, n, rows, cols, 500 + j as u64);
        }
    }
}

#[test]
fn embedding_every_type() {
    let mut rng = Rng(7);
    let types = [GgmlType::F32, GgmlType::F16, GgmlType::BF16]
        .into_iter()
        .chain(QUANT)
        .chain(GgmlType::MLX);
    for ty in types {
        let cols = match ty.block_size() {
            256 => 768,
            1 | 32 => 800,
            _ => 640,
        };
        let hw = random_weight(ty, 37, cols, &mut rng);
        let ids = [0u32, 36, 5, 5, 17];
        let mut want = vec![0f32; ids.len() * cols];
        ops::embedding::reference(&hw, &ids, &mut want).unwrap();
        for be in backends() {
            let w = be.upload_weight(&hw).unwrap();
            let mut out = vec![f32::NAN; ids.len() * cols];
            be.embedding(&w, &ids, &mut out).unwrap();
            let e = nmse(&out, &want);
            assert!(e < 1e-12, "{ty} {be:?}: nmse {e:e}");
            assert!(be.embedding(&w, &[37], &mut out).is_err());
        }
    }
}

#[test]
fn repacked_size_stays_within_budget() {
    let mut rng = Rng(9);
    for ty in QUANT
        .into_iter()
        .chain([GgmlType::F32, GgmlType::F16, GgmlType::BF16])
    {
        let cols = if ty.block_size() == 256 { 1536 } else { 576 };
        let hw = random_weight(ty, 64, cols, &mut rng);
        let w = CpuBackend::with_threads(1).upload_weight(&hw).unwrap();
        let stored = hw.data.len();
        assert!(
            (w.size_bytes() as f64) <= stored as f64 * 1.05 + 64.0,
            "{ty}: {} vs {stored}",
            w.size_bytes()
        );
    }
}

/// The MLX formats keep their codes' bytes and one f32 scale and bias per 32 elements.
#[test]
fn repacked_mlx_size_is_codes_and_block_scales() {
    let mut rng = Rng(10);
    for ty in GgmlType::MLX {
        let (bits, _) = ty.affine().unwrap();
        let (rows, cols) = (64, 1536);
        let hw = random_weight(ty, rows, cols, &mut rng);
        let w = CpuBackend::with_threads(1).upload_weight(&hw).unwrap();
        let want = rows * (cols * bits as usize / 8 + cols / 32 * 8);
        assert!(
            w.size_bytes() <= want + 64,
            "{ty}: {} vs {want}",
            w.size_bytes()
        );
    }
}

#[test]
fn matmul_shape_errors_and_empty_calls() {
    let mut rng = Rng(11);
    let hw = random_weight(GgmlType::Q4_1, 8, 64, &mut rng);
    for be in backends() {
        let w = be.upload_weight(&hw).unwrap();
        let mut out = vec![0f32; 16];
        assert!(be.matmul(&w, &vec![0f32; 100], 2, &mut out).is_err());
        assert!(be
            .matmul(&w, &vec![0f32; 128], 2, &mut vec![0f32; 15])
            .is_err());
        be.matmul(&w, &vec![], 0, &mut vec![]).unwrap();
    }
}

/// The scalar unpacker against each SIMD layout decision: dequantizing through the
/// repacked layout equals the reference for every group shape.
#[test]
fn repack_round_trips_every_group_shape() {
    let mut rng = Rng(13);
    for ty in QUANT {
        let blocks: &[usize] = if ty.block_size() == 256 {
            &[8, 16, 24, 40]
        } else {
            &[1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 33]
        };
        for &nb in blocks {
            let cols = nb * 32;
            let hw = random_weight(ty, 3, cols, &mut rng);
            let want = hw.to_f32().unwrap();
            let w = super::CpuWeight::upload(&hw).unwrap();
            let mut got = vec![f32::NAN; 3 * cols];
            for r in 0..3 {
                w.dequant_row(r, &mut got[r * cols..(r + 1) * cols])
                    .unwrap();
            }
            let e = nmse(&got, &want);
            assert!(e < 1e-12, "{ty} cols {cols}: nmse {e:e}");
        }
    }
    for ty in GgmlType::MLX {
        for cols in mlx_cols(ty.block_size()) {
            let hw = random_weight(ty, 3, cols, &mut rng);
            let want = hw.to_f32().unwrap();
            let w = super::CpuWeight::upload(&hw).unwrap();
            let mut got = vec![f32::NAN; 3 * cols];
            for r in 0..3 {
                w.dequant_row(r, &mut got[r * cols..(r + 1) * cols])
                    .unwrap();
            }
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} cols {cols}: the repacked rows do not dequantize to the reference's bits"
            );
        }
    }
}
