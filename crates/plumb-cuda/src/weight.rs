//! Weights on the device: a GGUF tensor's bytes, in their stored layout or repacked so that the
//! matvec can read the quants with aligned 16-byte loads (layouts in kernels/quant.cuh).

use cudarc::driver::CudaSlice;
use plumb_core::quant::k_quants::get_scale_min_k4;
use plumb_core::quant::q3_k;
use plumb_core::{GgmlType, HostWeight};
use plumb_ops::{OpError, Result};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::MATVEC_MAX_N;

/// A `rows × cols` weight in format `ty`, `row_bytes` per row on the device (row-major), as
/// the kernels in quant.cuh read it. Invariant: `data.len() == rows * row_bytes` (at least 1).
pub struct CudaWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes per row on the device: the stored row size, or the repacked one (a multiple of
    /// 16) for the formats `repacked` names.
    pub row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
}

impl std::fmt::Debug for CudaWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaWeight({} {}×{})", self.ty, self.rows, self.cols)
    }
}

/// The regions a repacked format's row is cut into: (stored block bytes, the bytes each block
/// puts in each region, in the order the regions follow each other along the row). Every
/// block's piece of region 0 comes first (all nb of them), then every block's piece of region
/// 1, ... (layouts in kernels/quant.cuh).
fn repacked(ty: GgmlType) -> Option<(usize, &'static [usize])> {
    match ty {
        GgmlType::Q4_0 => Some((18, &[16, 2])),      // [qs][d]
        GgmlType::Q4_1 => Some((20, &[16, 4])),      // [qs][d m]
        GgmlType::Q5_0 => Some((22, &[16, 4, 2])),   // [qs][qh][d]
        GgmlType::Q5_1 => Some((24, &[16, 4, 4])),   // [qs][qh][d m]
        GgmlType::Q8_0 => Some((34, &[32, 2])),      // [qs][d]
        GgmlType::Q2K => Some((84, &[64, 16, 4])),   // [qs'][scales][d dmin]
        GgmlType::Q3K => Some((110, &[96, 16, 2])),  // [qs' hm'][scales i8][d]
        GgmlType::Q4K => Some((144, &[128, 16, 4])), // [qs][sc/m][d dmin]
        GgmlType::Q5K => Some((176, &[160, 16, 4])), // [qs qh][sc/m][d dmin]
        GgmlType::Q6K => Some((210, &[192, 16, 2])), // [ql qh][scales][d]
        _ => None,
    }
}

/// Writes stored block `b` of `ty` as the concatenation of its region pieces (`out` holds the
/// sum of `repacked(ty)`'s piece sizes). Most formats only move bytes; Q4_K / Q5_K unpack their
/// 6-bit (scale, min) pairs, Q3_K its 6-bit scales, and Q2_K / Q3_K move their 2-bit (and
/// high-bit) quants into the order the dp4a unit reads.
fn split_block(ty: GgmlType, b: &[u8], out: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 => cat(out, &[&b[2..18], &b[0..2]]),
        GgmlType::Q4_1 => cat(out, &[&b[4..20], &b[0..4]]),
        GgmlType::Q5_0 => cat(out, &[&b[6..22], &b[2..6], &b[0..2]]),
        GgmlType::Q5_1 => cat(out, &[&b[8..24], &b[4..8], &b[0..4]]),
        GgmlType::Q8_0 => cat(out, &[&b[2..34], &b[0..2]]),
        GgmlType::Q2K => {
            // scales[16] @0, qs[64] @16, d dmin @80.
            permute_2bit(&b[16..80], &mut out[..64]);
            cat(&mut out[64..], &[&b[0..16], &b[80..84]]);
        }
        GgmlType::Q3K => {
            // hmask[32] @0, qs[64] @32, scales[12] @96, d @108.
            permute_2bit(&b[32..96], &mut out[..64]);
            permute_hmask(&b[0..32], &mut out[64..96]);
            let mut s = [0u8; 12];
            s.copy_from_slice(&b[96..108]);
            for (o, v) in out[96..112].iter_mut().zip(q3_k::unpack_scales(&s)) {
                *o = v as u8;
            }
            out[112..114].copy_from_slice(&b[108..110]);
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            // d dmin @0, scales[12] @4, (Q5_K: qh[32] @16,) qs[128] @16 / @48.
            let q = if ty == GgmlType::Q4K {
                out[..128].copy_from_slice(&b[16..144]);
                128
            } else {
                cat(&mut out[..160], &[&b[48..176], &b[16..48]]);
                160
            };
            let mut s = [0u8; 12];
            s.copy_from_slice(&b[4..16]);
            // Word j = (sc[2j], sc[2j+1], m[2j], m[2j+1]): one unit's two sub-blocks.
            for sub in 0..8 {
                let (sc, m) = get_scale_min_k4(sub, &s);
                out[q + 4 * (sub / 2) + sub % 2] = sc;
                out[q + 4 * (sub / 2) + 2 + sub % 2] = m;
            }
            out[q + 16..q + 20].copy_from_slice(&b[0..4]);
        }
        GgmlType::Q6K => out[..210].copy_from_slice(&b[..210]),
        _ => out.copy_from_slice(b),
    }
}

fn cat(out: &mut [u8], parts: &[&[u8]]) {
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}

/// Where element `e` (0..256) of a K-quant super-block sits in the repacked 2-bit quants of
/// Q2_K / Q3_K: (byte, bit shift). Unit v = e / 32 owns bytes 8v..8v+8 (two words); element
/// 32v + 16a + 4k + i is byte 4a + i of the unit, bits 2k..2k+2, so that the unit's word a
/// shifted right by 2k and masked holds 4 consecutive elements, in x̂'s byte order.
pub(crate) fn k2_pos(e: usize) -> (usize, usize) {
    let (v, w) = (e / 32, e % 32);
    let (a, k, i) = (w / 16, (w % 16) / 4, w % 4);
    (8 * v + 4 * a + i, 2 * k)
}

/// Where the high bit of element `e` of a Q3_K super-block sits in the repacked high bits:
/// (byte, bit). Unit v = e / 32 owns bytes 4v..4v+4 (one word); element 32v + 16a + 4k + i is
/// bit 4a + k of byte i, so that the word shifted right by 4a + k and masked with 0x01010101
/// gives the 4 elements of the 2-bit word above.
pub(crate) fn k3_hpos(e: usize) -> (usize, usize) {
    let (v, w) = (e / 32, e % 32);
    let (a, k, i) = (w / 16, (w % 16) / 4, w % 4);
    (4 * v + i, 4 * a + k)
}

/// GGUF's 2-bit quants of Q2_K / Q3_K (element 128h + 32k + l at bits 2k of qs[32h + l]) into
/// the order of `k2_pos`.
fn permute_2bit(qs: &[u8], out: &mut [u8]) {
    out.fill(0);
    for e in 0..256 {
        let q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        let (byte, shift) = k2_pos(e);
        out[byte] |= q << shift;
    }
}

/// Q3_K's hmask (high bit of element e = bit e / 32 of hmask[e % 32]) into `k3_hpos` order.
fn permute_hmask(hm: &[u8], out: &mut [u8]) {
    out.fill(0);
    for e in 0..256 {
        let h = (hm[e % 32] >> (e / 32)) & 1;
        let (byte, bit) = k3_hpos(e);
        out[byte] |= h << bit;
    }
}

/// The device row size of `ty` for a stored row of `stored` bytes: the repacked formats'
/// pieces (Q3_K, Q4_K and Q5_K unpack 4 bytes of scales per super-block) padded to 16.
pub(crate) fn device_row_bytes(ty: GgmlType, stored: usize) -> usize {
    match repacked(ty) {
        Some((bb, pieces)) => (stored / bb * pieces.iter().sum::<usize>()).div_ceil(16) * 16,
        None => stored,
    }
}

/// Repacks `rows` stored rows of `ty` into the device layout (see quant.cuh). Q4_0 with 4096
/// columns: 128 blocks of 18 bytes -> 2048 bytes of quants, then 256 bytes of scales: block
/// 5's quants (stored bytes 5·18 + 2 ..+16) land at 80 ..96, its d (5·18 ..+2) at 2048 + 10.
pub(crate) fn repack(
    ty: GgmlType,
    src: &[u8],
    rows: usize,
    stored: usize,
    out_row: usize,
) -> Vec<u8> {
    let Some((bb, pieces)) = repacked(ty) else {
        return src.to_vec();
    };
    let nb = stored / bb;
    let total: usize = pieces.iter().sum();
    let mut out = vec![0u8; rows * out_row];
    let mut tmp = vec![0u8; total];
    for (s, o) in src.chunks_exact(stored).zip(out.chunks_exact_mut(out_row)) {
        for (b, block) in s.chunks_exact(bb).enumerate() {
            split_block(ty, block, &mut tmp);
            let (mut region, mut at) = (0, 0);
            for &len in pieces {
                o[region + b * len..region + (b + 1) * len].copy_from_slice(&tmp[at..at + len]);
                region += nb * len;
                at += len;
            }
        }
    }
    out
}

impl CudaBackend {
    pub(crate) fn upload_weight_impl(&self, w: &HostWeight) -> Result<CudaWeight> {
        if format_suffix(w.ty).is_none() {
            return Err(OpError::Unsupported {
                op: "upload_weight",
                what: format!("{} weights", w.ty),
            });
        }
        let stored = w.ty.row_bytes(w.cols)?;
        let bytes = w.data.as_slice();
        if bytes.len() != stored * w.rows {
            return Err(OpError::Shape {
                op: "upload_weight",
                msg: format!(
                    "{}: {} bytes for {} rows of {stored}",
                    w.name,
                    bytes.len(),
                    w.rows
                ),
            });
        }
        // The matvec's q8 activations must hold MATVEC_MAX_N rows of this weight's columns;
        // growing them here keeps allocations out of recorded steps.
        self.q8_reserve(MATVEC_MAX_N * w.cols)?;
        let row_bytes = device_row_bytes(w.ty, stored);
        let data = if bytes.is_empty() {
            self.stream.alloc_zeros::<u8>(1)
        } else if row_bytes == stored && repacked(w.ty).is_none() {
            self.stream.clone_htod(bytes)
        } else {
            self.stream
                .clone_htod(&repack(w.ty, bytes, w.rows, stored, row_bytes))
        }
        .ctx(|| format!("uploading weight {} ({} bytes)", w.name, bytes.len()))?;
        Ok(CudaWeight {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            row_bytes,
            data,
        })
    }
}

#[cfg(test)]
// The layouts are read by element index, as quant.cuh writes them.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use plumb_core::quant::{dequantize_row, quantize_row};
    use plumb_core::rng::Rng;

    /// The repacked formats, each tested on every path below.
    const REPACKED: &[GgmlType] = &[
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    fn h(row: &[u8], at: usize) -> f32 {
        half::f16::from_le_bytes([row[at], row[at + 1]]).to_f32()
    }

    fn word(row: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]])
    }

    /// Chunk `c` (32 elements) of a device row, read the way quant.cuh's dq32 reads it: the
    /// same offsets, the same float operations in the same order.
    fn dq_chunk(ty: GgmlType, row: &[u8], cols: usize, c: usize) -> [f32; 32] {
        let mut out = [0f32; 32];
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let nb = cols / 32;
                let per = if ty == GgmlType::Q4_0 { 2 } else { 4 };
                let d = h(row, 16 * nb + per * c);
                for j in 0..16 {
                    let q = row[16 * c + j] as u32;
                    let (q0, q1) = (q & 15, q >> 4);
                    if ty == GgmlType::Q4_0 {
                        out[j] = (q0 as i32 - 8) as f32 * d;
                        out[j + 16] = (q1 as i32 - 8) as f32 * d;
                    } else {
                        let m = h(row, 16 * nb + 4 * c + 2);
                        out[j] = q0 as f32 * d + m;
                        out[j + 16] = q1 as f32 * d + m;
                    }
                }
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let nb = cols / 32;
                let qh = word(row, 16 * nb + 4 * c);
                let per = if ty == GgmlType::Q5_0 { 2 } else { 4 };
                let d = h(row, 20 * nb + per * c);
                for j in 0..16 {
                    let q = row[16 * c + j] as u32;
                    let q0 = (q & 15) | (((qh >> j) & 1) << 4);
                    let q1 = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    if ty == GgmlType::Q5_0 {
                        out[j] = (q0 as i32 - 16) as f32 * d;
                        out[j + 16] = (q1 as i32 - 16) as f32 * d;
                    } else {
                        let m = h(row, 20 * nb + 4 * c + 2);
                        out[j] = q0 as f32 * d + m;
                        out[j + 16] = q1 as f32 * d + m;
                    }
                }
            }
            GgmlType::Q8_0 => {
                let d = h(row, 32 * (cols / 32) + 2 * c);
                for j in 0..32 {
                    out[j] = row[32 * c + j] as i8 as f32 * d;
                }
            }
            GgmlType::Q2K | GgmlType::Q3K => {
                let qb = if ty == GgmlType::Q2K { 64 } else { 96 };
                let (nb, blk, v) = (cols / 256, c / 8, c % 8);
                let q = qb * blk + 8 * v;
                let sc = qb * nb + 16 * blk + 2 * v;
                for j in 0..32 {
                    let (a, k, i) = (j / 16, (j % 16) / 4, j % 4);
                    let qv = (row[q + 4 * a + i] >> (2 * k)) & 3;
                    if ty == GgmlType::Q2K {
                        let (d, dmin) = (h(row, 80 * nb + 4 * blk), h(row, 80 * nb + 4 * blk + 2));
                        let s = row[sc + a];
                        let (dl, ml) = (d * (s & 15) as f32, dmin * (s >> 4) as f32);
                        out[j] = dl * qv as f32 - ml;
                    } else {
                        let d = h(row, 112 * nb + 2 * blk);
                        let hm = word(row, qb * blk + 64 + 4 * v);
                        let dl = d * (row[sc + a] as i8) as f32;
                        let hbit = (hm >> (8 * i + 4 * a + k)) & 1;
                        out[j] = dl * (qv as i32 - if hbit != 0 { 0 } else { 4 }) as f32;
                    }
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let qb = if ty == GgmlType::Q4K { 128 } else { 160 };
                let (nb, blk, sub) = (cols / 256, c / 8, c % 8);
                let scm = qb * nb + 16 * blk + 4 * (sub / 2) + sub % 2;
                let dd = (qb + 16) * nb + 4 * blk;
                let (d, dmin) = (h(row, dd), h(row, dd + 2));
                let (d1, m1) = (d * row[scm] as f32, dmin * row[scm + 2] as f32);
                for j in 0..32 {
                    let mut q = (row[qb * blk + 32 * (sub / 2) + j] >> (4 * (sub % 2))) & 15;
                    if ty == GgmlType::Q5K {
                        q |= ((row[qb * blk + 128 + j] >> sub) & 1) << 4;
                    }
                    out[j] = d1 * q as f32 - m1;
                }
            }
            GgmlType::Q6K => {
                let (nb, blk, sub) = (cols / 256, c / 8, c % 8);
                let q = 192 * blk;
                let d = h(row, 208 * nb + 2 * blk);
                let (half, k) = (sub / 4, sub % 4);
                for j in 0..32 {
                    let lo = (row[q + 64 * half + 32 * (k % 2) + j] >> (4 * (k / 2))) & 15;
                    let hi = (row[q + 128 + 32 * half + j] >> (2 * k)) & 3;
                    let qv = (lo | (hi << 4)) as i32 - 32;
                    let sc = row[192 * nb + 16 * blk + 2 * sub + j / 16] as i8 as f32;
                    out[j] = d * sc * qv as f32;
                }
            }
            other => panic!("{other} is not repacked"),
        }
        out
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Repacks `rows` stored rows and checks every element read back from the device layout
    /// against plumb-core's dequantizer of the stored row, bit for bit.
    fn check_rows(ty: GgmlType, src: &[u8], rows: usize, cols: usize) {
        let stored = ty.row_bytes(cols).unwrap();
        let out_row = device_row_bytes(ty, stored);
        assert_eq!(out_row % 16, 0);
        let (bb, pieces) = repacked(ty).unwrap();
        assert_eq!(
            out_row,
            (stored / bb * pieces.iter().sum::<usize>()).div_ceil(16) * 16
        );
        let dev = repack(ty, src, rows, stored, out_row);
        assert_eq!(dev.len(), rows * out_row);
        let mut want = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(ty, &src[r * stored..(r + 1) * stored], &mut want).unwrap();
            let row = &dev[r * out_row..(r + 1) * out_row];
            for c in 0..cols / 32 {
                let got = dq_chunk(ty, row, cols, c);
                for j in 0..32 {
                    let e = 32 * c + j;
                    assert!(
                        same(got[j], want[e]),
                        "{ty} row {r} element {e}: device layout reads {}, GGUF {}",
                        got[j],
                        want[e]
                    );
                }
            }
            assert!(row[stored / bb * pieces.iter().sum::<usize>()..]
                .iter()
                .all(|&b| b == 0));
        }
    }

    #[test]
    fn every_repacked_layout_reads_back_random_blocks_exactly() {
        // Random bytes: every bit pattern of quants, high bits and packed scales (and f16
        // scales of any value, NaN and infinity included).
        let mut rng = Rng::new(7);
        for &ty in REPACKED {
            for cols in [256, 768, 4096] {
                let rows = 3;
                let src: Vec<u8> = (0..rows * ty.row_bytes(cols).unwrap())
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                check_rows(ty, &src, rows, cols);
            }
        }
    }

    #[test]
    fn every_repacked_layout_reads_back_quantized_rows_exactly() {
        let mut rng = Rng::new(11);
        for &ty in REPACKED {
            let (rows, cols) = (4, 1536);
            let stored = ty.row_bytes(cols).unwrap();
            let mut src = vec![0u8; rows * stored];
            for r in 0..rows {
                let x = rng.normals(cols, 0.05);
                quantize_row(ty, &x, &mut src[r * stored..(r + 1) * stored]).unwrap();
            }
            check_rows(ty, &src, rows, cols);
        }
    }

    /// x quantized to q8_1 as the matvec reads it: int8 per element, (d, d·Σq) per 32.
    struct Xq {
        q: Vec<i8>,
        d: Vec<(f32, f32)>,
    }

    fn quantize_x(x: &[f32]) -> Xq {
        let mut q = vec![0i8; x.len()];
        let mut d = Vec::new();
        for (b, xs) in x.chunks_exact(32).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let dx = amax / 127.0;
            let inv = if dx > 0.0 { 1.0 / dx } else { 0.0 };
            let mut sum = 0i32;
            for (j, v) in xs.iter().enumerate() {
                let qv = (v * inv).round() as i8;
                q[32 * b + j] = qv;
                sum += qv as i32;
            }
            d.push((dx, dx * sum as f32));
        }
        Xq { q, d }
    }

    fn dp4a(a: u32, b: u32, c: i32) -> i32 {
        (0..4).fold(c, |acc, i| {
            acc + ((a >> (8 * i)) as u8 as i8 as i32) * ((b >> (8 * i)) as u8 as i8 as i32)
        })
    }

    /// The x̂ word of elements e..e+4.
    fn xw(x: &Xq, e: usize) -> u32 {
        u32::from_le_bytes([
            x.q[e] as u8,
            x.q[e + 1] as u8,
            x.q[e + 2] as u8,
            x.q[e + 3] as u8,
        ])
    }

    fn lo4(w: u32) -> u32 {
        w & 0x0f0f0f0f
    }

    fn hi4(w: u32) -> u32 {
        (w >> 4) & 0x0f0f0f0f
    }

    fn bits_to_b4(v: u32) -> u32 {
        ((v & 15).wrapping_mul(0x0020_4081) & 0x0101_0101) << 4
    }

    fn minus(w: u32, by: u32) -> u32 {
        ((w | 0x8080_8080).wrapping_sub(by * 0x0101_0101)) ^ 0x8080_8080
    }

    /// Unit u of a device row dotted with x̂ the way matvec_q8.cu's WU<T> does it: the same
    /// words, shifts and masks, integer dots, and the scale arithmetic of WU::dot.
    fn unit_dot(ty: GgmlType, row: &[u8], cols: usize, u: usize, x: &Xq) -> f32 {
        let nb = cols / ty.block_size();
        let (e0, (dx, dxs)) = (32 * u, x.d[u]);
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                let qh = if five { word(row, 16 * nb + 4 * u) } else { 0 };
                let mut s = 0;
                for i in 0..4 {
                    let l = word(row, 16 * u + 4 * i);
                    let (mut q0, mut q1) = (lo4(l), hi4(l));
                    if five {
                        q0 |= bits_to_b4(qh >> (4 * i));
                        q1 |= bits_to_b4(qh >> (16 + 4 * i));
                    }
                    s = dp4a(q0, xw(x, e0 + 4 * i), s);
                    s = dp4a(q1, xw(x, e0 + 16 + 4 * i), s);
                }
                let base = if five { 20 * nb } else { 16 * nb };
                match ty {
                    GgmlType::Q4_0 => h(row, base + 2 * u) * (dx * s as f32 - 8.0 * dxs),
                    GgmlType::Q5_0 => h(row, base + 2 * u) * (dx * s as f32 - 16.0 * dxs),
                    _ => {
                        let (d, m) = (h(row, base + 4 * u), h(row, base + 4 * u + 2));
                        d * dx * s as f32 + m * dxs
                    }
                }
            }
            GgmlType::Q8_0 => {
                let s = (0..8).fold(0, |s, i| {
                    dp4a(word(row, 32 * u + 4 * i), xw(x, e0 + 4 * i), s)
                });
                h(row, 32 * nb + 2 * u) * dx * s as f32
            }
            GgmlType::Q2K | GgmlType::Q3K => {
                let qb = if ty == GgmlType::Q2K { 64 } else { 96 };
                let (sb, v) = (u / 8, u % 8);
                let (qx, qy) = (word(row, qb * sb + 8 * v), word(row, qb * sb + 8 * v + 4));
                let sc = u16::from_le_bytes([
                    row[qb * nb + 16 * sb + 2 * v],
                    row[qb * nb + 16 * sb + 2 * v + 1],
                ]) as u32;
                let (mut s0, mut s1, mut n0, mut n1) = (0, 0, 0, 0);
                for k in 0..4 {
                    let (mut q0, mut q1) =
                        ((qx >> (2 * k)) & 0x0303_0303, (qy >> (2 * k)) & 0x0303_0303);
                    if ty == GgmlType::Q3K {
                        let hm = word(row, qb * sb + 64 + 4 * v);
                        q0 = minus(q0 | (((hm >> k) & 0x0101_0101) << 2), 4);
                        q1 = minus(q1 | (((hm >> (4 + k)) & 0x0101_0101) << 2), 4);
                    }
                    s0 = dp4a(q0, xw(x, e0 + 4 * k), s0);
                    s1 = dp4a(q1, xw(x, e0 + 16 + 4 * k), s1);
                    n0 = dp4a(0x0101_0101, xw(x, e0 + 4 * k), n0);
                    n1 = dp4a(0x0101_0101, xw(x, e0 + 16 + 4 * k), n1);
                }
                if ty == GgmlType::Q2K {
                    let (d, dmin) = (h(row, 80 * nb + 4 * sb), h(row, 80 * nb + 4 * sb + 2));
                    let isc = (sc & 15) as i32 * s0 + ((sc >> 8) & 15) as i32 * s1;
                    let imn = ((sc >> 4) & 15) as i32 * n0 + ((sc >> 12) & 15) as i32 * n1;
                    dx * (d * isc as f32 - dmin * imn as f32)
                } else {
                    let d = h(row, 112 * nb + 2 * sb);
                    let isc = (sc as u8 as i8) as i32 * s0 + ((sc >> 8) as u8 as i8) as i32 * s1;
                    d * dx * isc as f32
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let qb = if ty == GgmlType::Q4K { 128 } else { 160 };
                let (sb, v) = (u / 8, u % 8);
                let (j, hh) = (v / 2, v % 2);
                let e = 256 * sb + 64 * j + 16 * hh;
                let (b0, b1) = (8 * sb + 2 * j, 8 * sb + 2 * j + 1);
                let (mut s0, mut s1) = (0, 0);
                for i in 0..4 {
                    let l = word(row, qb * sb + 16 * v + 4 * i);
                    let (mut q0, mut q1) = (lo4(l), hi4(l));
                    if ty == GgmlType::Q5K {
                        let qh = word(row, qb * sb + 128 + 16 * hh + 4 * i);
                        q0 |= ((qh >> (2 * j)) & 0x0101_0101) << 4;
                        q1 |= ((qh >> (2 * j + 1)) & 0x0101_0101) << 4;
                    }
                    s0 = dp4a(q0, xw(x, e + 4 * i), s0);
                    s1 = dp4a(q1, xw(x, e + 32 + 4 * i), s1);
                }
                let scm = word(row, qb * nb + 16 * sb + 4 * j);
                let dd = (qb + 16) * nb + 4 * sb;
                let (d, dmin) = (h(row, dd), h(row, dd + 2));
                let mut r = d
                    * ((scm & 0xff) as f32 * x.d[b0].0 * s0 as f32
                        + ((scm >> 8) & 0xff) as f32 * x.d[b1].0 * s1 as f32);
                if hh == 0 {
                    r -= dmin
                        * (((scm >> 16) & 0xff) as f32 * x.d[b0].1
                            + (scm >> 24) as f32 * x.d[b1].1);
                }
                r
            }
            GgmlType::Q6K => {
                let (sb, hf, v) = (u / 8, (u % 8) / 4, u % 4);
                let k0 = v / 2;
                let e = 256 * sb + 128 * hf + 32 * k0 + 16 * (v % 2);
                let s = 192 * nb + 16 * sb;
                let sc0 = row[s + 2 * (4 * hf + k0) + v % 2] as i8 as f32;
                let sc1 = row[s + 2 * (4 * hf + k0 + 2) + v % 2] as i8 as f32;
                let d = h(row, 208 * nb + 2 * sb);
                let (mut s0, mut s1) = (0, 0);
                for i in 0..4 {
                    let l = word(row, 192 * sb + 64 * hf + 16 * v + 4 * i);
                    let hq = word(row, 192 * sb + 128 + 32 * hf + 16 * (v % 2) + 4 * i);
                    let q0 = lo4(l) | (((hq >> (2 * k0)) & 0x0303_0303) << 4);
                    let q1 = hi4(l) | (((hq >> (2 * k0 + 4)) & 0x0303_0303) << 4);
                    s0 = dp4a(minus(q0, 32), xw(x, e + 4 * i), s0);
                    s1 = dp4a(minus(q1, 32), xw(x, e + 64 + 4 * i), s1);
                }
                d * (sc0 * x.d[e / 32].0 * s0 as f32 + sc1 * x.d[e / 32 + 2].0 * s1 as f32)
            }
            other => panic!("{other} has no dp4a unit"),
        }
    }

    #[test]
    fn dp4a_units_cover_every_element_with_its_scale() {
        // Σ_u unit_dot(u) against Σ_e w_e · x̂_e in f64 (w from plumb-core's dequantizer of the
        // stored row, x̂ = the same q8 values): they differ only by float rounding when every
        // unit pairs the right quants with the right x̂ bytes, scales and mins.
        let mut rng = Rng::new(23);
        for &ty in REPACKED {
            let (rows, cols) = (6, 1536);
            let stored = ty.row_bytes(cols).unwrap();
            let mut src = vec![0u8; rows * stored];
            for r in 0..rows {
                let w = rng.normals(cols, 0.05);
                quantize_row(ty, &w, &mut src[r * stored..(r + 1) * stored]).unwrap();
            }
            let out_row = device_row_bytes(ty, stored);
            let dev = repack(ty, &src, rows, stored, out_row);
            let x = quantize_x(&rng.normals(cols, 1.0));
            let mut w = vec![0f32; cols];
            for r in 0..rows {
                dequantize_row(ty, &src[r * stored..(r + 1) * stored], &mut w).unwrap();
                let (mut want, mut mag) = (0f64, 0f64);
                for (e, &we) in w.iter().enumerate() {
                    let xe = x.q[e] as f64 * x.d[e / 32].0 as f64;
                    want += we as f64 * xe;
                    mag += (we as f64 * xe).abs();
                }
                let row = &dev[r * out_row..(r + 1) * out_row];
                let got: f64 = (0..cols / 32)
                    .map(|u| unit_dot(ty, row, cols, u, &x) as f64)
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-5 * mag,
                    "{ty} row {r}: units {got}, elements {want} (Σ|w x̂| {mag})"
                );
            }
        }
    }

    #[test]
    fn k_quant_bit_positions_are_permutations() {
        let mut seen = [false; 512];
        let mut seen_h = [false; 256];
        for e in 0..256 {
            let (byte, shift) = k2_pos(e);
            assert!(byte < 64 && shift % 2 == 0 && shift < 8);
            assert!(!seen[4 * byte + shift / 2]);
            seen[4 * byte + shift / 2] = true;
            let (byte, bit) = k3_hpos(e);
            assert!(byte < 32 && bit < 8);
            assert!(!seen_h[8 * byte + bit]);
            seen_h[8 * byte + bit] = true;
        }
    }

    #[test]
    fn q4_0_rows_split_quants_from_scales() {
        // Two rows of 64 columns: 2 blocks each, block b of row r filled with 10·r + b.
        let mut src = Vec::new();
        for r in 0..2u8 {
            for b in 0..2u8 {
                src.extend(std::iter::repeat_n(10 * r + b, 18));
            }
        }
        let out = repack(
            GgmlType::Q4_0,
            &src,
            2,
            36,
            device_row_bytes(GgmlType::Q4_0, 36),
        );
        assert_eq!(out.len(), 2 * 48);
        let row1 = &out[48..];
        assert!(row1[..16].iter().all(|&v| v == 10));
        assert!(row1[16..32].iter().all(|&v| v == 11));
        assert_eq!(&row1[32..36], &[10, 10, 11, 11]);
        assert!(row1[36..].iter().all(|&v| v == 0));
    }

    #[test]
    fn q4_k_row_sizes() {
        // 4096 columns: 16 super-blocks of 148 bytes (GGUF: 144), already a multiple of 16.
        assert_eq!(device_row_bytes(GgmlType::Q4K, 16 * 144), 2368);
        assert_eq!(device_row_bytes(GgmlType::Q5K, 16 * 176), 2880);
        // 14336 columns of Q3_K: 56 × 114 = 6384 bytes.
        assert_eq!(device_row_bytes(GgmlType::Q3K, 56 * 110), 6384);
        assert_eq!(device_row_bytes(GgmlType::Q2K, 56 * 84), 4704);
        assert_eq!(device_row_bytes(GgmlType::Q6K, 2 * 210), 432);
    }
}
