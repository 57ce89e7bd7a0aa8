//! Launcher of kernels/mmq.cu: matmul of 9 to 64 tokens (variant `batch`), or 2 to 8 (variant
//! `matvec=mma`), on int8 tensor cores, after x quantized into fragment order, for every GGUF
//! format with a dp4a decode unit (`MMQ_FORMATS`).

use cudarc::driver::{DevicePtr, PushKernelArg};
use plumb_core::GgmlType;
use plumb_ops::{OpError, Result};

use crate::compile::{format_suffix, MMQ_FORMATS};
use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{grid1, poisoned, MvItem, MvSets};

/// Whether `ty` has kernels in mmq.cu (its PLUMB_MMQ_FORMATS).
pub(crate) fn has_mmq_kernel(ty: GgmlType) -> bool {
    format_suffix(ty).is_some_and(|s| MMQ_FORMATS.contains(&s))
}

impl CudaBackend {
    /// mmq.cu for 1 to 3 items sharing x̂ (`MvItem::joins`): one launch, ceil(rows / 32)
    /// blocks of 256 per item, ceil(n / 8) token tiles.
    pub(crate) fn mmq(&self, items: &[MvItem], lb: bool) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        // x̂ in fragment order (mmq.cu quantize_q8_frag), for ceil(n / 8) tiles of 8 tokens.
        let nt = first.n.div_ceil(8);
        let units = first.cols / 32;
        let (xf, xd) = {
            let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
            let g = &mut *guard;
            let xf = self.ensure_len(&mut g.mmq_xf, nt * 8 * first.cols)?;
            let xf = xf.device_ptr(&self.stream).0;
            let xd = self.ensure_len(&mut g.mmq_xd, 2 * units * nt * 8)?;
            let xd = xd.device_ptr(&self.stream).0;
            (xf, xd)
        };
        let sfx = format_suffix(first.ty)
            .filter(|s| MMQ_FORMATS.contains(s))
            .ok_or_else(|| CudaError::Other(format!("no mma kernels for {}", first.ty)))?;
        let (n_i, cols_i, nt_i) = (first.n as i32, first.cols as i32, nt as i32);
        let f = self.func("mmq.cu", Some(sfx), "quantize_q8_frag")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&first.x)
            .arg(&xf)
            .arg(&xd)
            .arg(&n_i)
            .arg(&cols_i)
            .arg(&nt_i);
        // SAFETY: x holds n*cols floats (checked by matmul_impl when the item was made, alive
        // until this launch), xf 8*nt*cols int8 and xd 2*units*8*nt floats (ensured above);
        // cols % 32 == 0; one warp per (token, unit) group, tokens ≥ n written as zeros.
        unsafe { b.launch(grid1((nt * 8 * units).div_ceil(8), 256, 0)) }
            .ctx(|| "launching quantize_q8_frag".into())?;
        let (sets, blocks) = MvSets::of(items, 32);
        let name = format!("mmq_{}nt{nt}_{sfx}", if lb { "lb_" } else { "" });
        let f = self.func("mmq.cu", Some(sfx), &name)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&xf).arg(&xd).arg(&cols_i).arg(&n_i);
        // SAFETY: each W holds rows*row_bytes bytes in the format's repacked layout (quant.cuh;
        // CudaWeight invariant), whose regions the kernel finds from units = cols / 32 (the
        // K-quants' cols are multiples of 256, so a run of 4 units stays in one super-block);
        // x̂ is in fragment order for nt tiles (written above, in stream order); each out holds
        // n*rows floats (checked by matmul_impl); the items share x, cols, n and format
        // (MvItem::joins); 2 ≤ n ≤ 64 so nt ∈ 1..=8; the kernel clamps the rows and units it
        // reads and guards the rows and tokens it writes.
        unsafe { b.launch(grid1(blocks, 256, 0)) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }
}

/// A host model of mmq.cu for one m-tile (16 weight rows) and one tile of 8 tokens: each lane's
/// loads of a run, the A fragments and scales its `unit` builds from them (the same offsets,
/// words, shifts, masks and shuffles), the mma as PTX defines its fragments, and the kernel's
/// float epilogue; summed over a row it must equal plumb-core's dequantized row times x̂.
#[cfg(test)]
// Fragments are built by lane, row and token index, as the kernel does.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::weight::{device_row_bytes, repack};
    use plumb_core::quant::{dequantize_row, quantize_row};
    use plumb_core::rng::Rng;

    const FORMATS: &[GgmlType] = &[
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

    fn h16(bits: u32) -> f32 {
        half::f16::from_bits(bits as u16).to_f32()
    }

    fn ld(row: &[u8], at: usize, n: usize) -> u32 {
        (0..n).fold(0, |w, i| w | (row[at + i] as u32) << (8 * i))
    }

    fn sbytes(w: u32) -> [i32; 4] {
        [0, 1, 2, 3].map(|i| (w >> (8 * i)) as u8 as i8 as i32)
    }

    /// m16n8k32 .s8 (PTX ISA fragment layouts, lane = 4g + c): a = [A[g][4c..], A[g+8][4c..],
    /// A[g][16+4c..], A[g+8][16+4c..]], b = [B[4c..][g], B[16+4c..][g]]; each lane gets
    /// [D[g][2c], D[g][2c+1], D[g+8][2c], D[g+8][2c+1]].
    fn mma_k32(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32]) -> [[i32; 4]; 32] {
        let (mut am, mut bm) = ([[0i32; 32]; 16], [[0i32; 8]; 32]);
        for lane in 0..32 {
            let (g, c) = (lane / 4, lane % 4);
            for i in 0..4 {
                am[g][4 * c + i] = sbytes(a[lane][0])[i];
                am[g + 8][4 * c + i] = sbytes(a[lane][1])[i];
                am[g][16 + 4 * c + i] = sbytes(a[lane][2])[i];
                am[g + 8][16 + 4 * c + i] = sbytes(a[lane][3])[i];
                bm[4 * c + i][g] = sbytes(b[lane][0])[i];
                bm[16 + 4 * c + i][g] = sbytes(b[lane][1])[i];
            }
        }
        c_frags(|r, t| (0..32).map(|k| am[r][k] * bm[k][t]).sum())
    }

    /// m16n8k16 .s8: a = [A[g][4c..], A[g+8][4c..]], b = B[4c..][g]; D as mma_k32's.
    fn mma_k16(a: &[[u32; 2]; 32], b: &[u32; 32]) -> [[i32; 4]; 32] {
        let (mut am, mut bm) = ([[0i32; 16]; 16], [[0i32; 8]; 16]);
        for lane in 0..32 {
            let (g, c) = (lane / 4, lane % 4);
            for i in 0..4 {
                am[g][4 * c + i] = sbytes(a[lane][0])[i];
                am[g + 8][4 * c + i] = sbytes(a[lane][1])[i];
                bm[4 * c + i][g] = sbytes(b[lane])[i];
            }
        }
        c_frags(|r, t| (0..16).map(|k| am[r][k] * bm[k][t]).sum())
    }

    fn c_frags(d: impl Fn(usize, usize) -> i32) -> [[i32; 4]; 32] {
        let mut out = [[0; 4]; 32];
        for (lane, o) in out.iter_mut().enumerate() {
            let (g, c) = (lane / 4, lane % 4);
            *o = [
                d(g, 2 * c),
                d(g, 2 * c + 1),
                d(g + 8, 2 * c),
                d(g + 8, 2 * c + 1),
            ];
        }
        out
    }

    /// What a lane loaded of one row for a run (mmq.cu MqRun<T>): the words, in the kernel's
    /// index order flattened, and the run's start.
    #[derive(Default, Clone)]
    struct Run {
        q: Vec<u32>,
        qh: Vec<u32>,
        sc: Vec<u32>,
        d: u32,
        u0: usize,
    }

    /// MqRun<T>::load for one row (`row` = its device bytes) and lane c.
    fn load(ty: GgmlType, row: &[u8], units: usize, u0: usize, c: usize) -> Run {
        let (nb, sb, s0) = (units / 8, u0 / 8, u0 % 8);
        let cl = |k: usize| (u0 + k).min(units - 1);
        let mut r = Run {
            u0,
            ..Run::default()
        };
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                r.q = (0..4).map(|k| ld(row, 16 * cl(k) + 4 * c, 4)).collect();
                let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                if five {
                    r.qh = (0..4).map(|k| ld(row, 16 * units + 4 * cl(k), 4)).collect();
                }
                let base = if five { 20 * units } else { 16 * units };
                let per = if matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0) {
                    2
                } else {
                    4
                };
                r.sc = (0..4).map(|k| ld(row, base + per * cl(k), per)).collect();
            }
            GgmlType::Q8_0 => {
                for k in 0..4 {
                    for e in 0..2 {
                        r.q.push(ld(row, 32 * cl(k) + 16 * e + 4 * c, 4));
                    }
                }
                r.sc = (0..4).map(|k| ld(row, 32 * units + 2 * cl(k), 2)).collect();
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let qb = if ty == GgmlType::Q4K { 128 } else { 160 };
                for p in 0..2 {
                    for e in 0..2 {
                        r.q.push(ld(row, qb * sb + 16 * s0 + 32 * p + 16 * e + 4 * c, 4));
                    }
                }
                if ty == GgmlType::Q5K {
                    r.qh = (0..2)
                        .map(|e| ld(row, qb * sb + 128 + 16 * e + 4 * c, 4))
                        .collect();
                }
                let at = qb * nb + 16 * sb + 2 * s0;
                r.sc = vec![ld(row, at, 4), ld(row, at + 4, 4)];
                r.d = ld(row, (qb + 16) * nb + 4 * sb, 4);
            }
            GgmlType::Q6K => {
                let (b, hf) = (192 * sb, s0 / 4);
                for e in 0..2 {
                    for kk in 0..2 {
                        r.q.push(ld(row, b + 64 * hf + 32 * kk + 16 * e + 4 * c, 4));
                    }
                    r.qh.push(ld(row, b + 128 + 32 * hf + 16 * e + 4 * c, 4));
                }
                let at = 192 * nb + 16 * sb + 8 * hf;
                r.sc = vec![ld(row, at, 4), ld(row, at + 4, 4)];
                r.d = ld(row, 208 * nb + 2 * sb, 2);
            }
            GgmlType::Q2K | GgmlType::Q3K => {
                let qb = if ty == GgmlType::Q2K { 64 } else { 96 };
                let b = qb * sb;
                r.q = vec![
                    ld(row, b + 8 * (s0 + c), 4),
                    ld(row, b + 8 * (s0 + c) + 4, 4),
                ];
                if ty == GgmlType::Q3K {
                    r.qh = vec![ld(row, b + 64 + 4 * (s0 + c), 4)];
                }
                let at = qb * nb + 16 * sb + 2 * s0;
                r.sc = vec![ld(row, at, 4), ld(row, at + 4, 4)];
                r.d = if ty == GgmlType::Q2K {
                    ld(row, 80 * nb + 4 * sb, 4)
                } else {
                    ld(row, 112 * nb + 2 * sb, 2)
                };
            }
            other => panic!("{other} has no mma kernel"),
        }
        r
    }

    /// One row's part of a unit for lane c: (a for row g / a2 for row g's 16.. half, Q2_K's
    /// min bytes, p, q, s0, s1).
    #[derive(Default, Clone, Copy)]
    struct U {
        lo: u32,
        hi: u32,
        mlo: u32,
        mhi: u32,
        p: f32,
        q: f32,
        s0: i32,
        s1: i32,
    }

    fn b4(v: u32) -> u32 {
        ((v & 15).wrapping_mul(0x0020_4081) & 0x0101_0101) << 4
    }

    fn minus(b: u32, o: u32) -> u32 {
        ((b | 0x8080_8080).wrapping_sub(o * 0x0101_0101)) ^ 0x8080_8080
    }

    /// MqRun<T>::unit (and Q4_0's inline code) for one row: `quad` = the 4 lanes' runs of it
    /// (Q2_K / Q3_K read lane k's by shuffle), unit k, lane c.
    fn unit(ty: GgmlType, quad: &[Run], k: usize, c: usize) -> U {
        let r = &quad[c];
        let mut f = U::default();
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let w = r.q[k];
                let (mut lo, mut hi) = (w & 0x0f0f_0f0f, (w >> 4) & 0x0f0f_0f0f);
                if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
                    lo |= b4(r.qh[k] >> (4 * c));
                    hi |= b4(r.qh[k] >> (16 + 4 * c));
                }
                (f.lo, f.hi) = (lo, hi);
                match ty {
                    GgmlType::Q4_0 => f.p = h16(r.sc[k]),
                    GgmlType::Q5_0 => (f.p, f.q) = (h16(r.sc[k]), -16.0 * h16(r.sc[k])),
                    _ => (f.p, f.q) = (h16(r.sc[k]), h16(r.sc[k] >> 16)),
                }
            }
            GgmlType::Q8_0 => {
                (f.lo, f.hi) = (r.q[2 * k], r.q[2 * k + 1]);
                f.p = h16(r.sc[k]);
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (p, sh, s) = (k / 2, 4 * (k % 2), r.u0 % 8 + k);
                let mut lo = (r.q[2 * p] >> sh) & 0x0f0f_0f0f;
                let mut hi = (r.q[2 * p + 1] >> sh) & 0x0f0f_0f0f;
                if ty == GgmlType::Q5K {
                    lo |= ((r.qh[0] >> s) & 0x0101_0101) << 4;
                    hi |= ((r.qh[1] >> s) & 0x0101_0101) << 4;
                }
                (f.lo, f.hi) = (lo, hi);
                let w = r.sc[p];
                let sc = ((w >> (8 * (k % 2))) & 0xff) as f32;
                let m = ((w >> (16 + 8 * (k % 2))) & 0xff) as f32;
                f.p = h16(r.d) * sc;
                f.q = -(h16(r.d >> 16) * m);
            }
            GgmlType::Q6K => {
                let (kk, sh) = (k % 2, 4 * (k / 2));
                let a = |e: usize| {
                    let lo = (r.q[2 * e + kk] >> sh) & 0x0f0f_0f0f;
                    let hb = ((r.qh[e] >> (2 * k)) & 0x0303_0303) << 4;
                    minus(lo | hb, 32)
                };
                (f.lo, f.hi) = (a(0), a(1));
                let w = r.sc[k / 2];
                f.s0 = ((w >> (16 * (k % 2))) & 0xff) as u8 as i8 as i32;
                f.s1 = ((w >> (16 * (k % 2) + 8)) & 0xff) as u8 as i8 as i32;
                f.p = h16(r.d);
            }
            GgmlType::Q2K | GgmlType::Q3K => {
                let src = &quad[k]; // __shfl_sync from lane 4g + k
                let (w0, w1) = (src.q[0], src.q[1]);
                let mut lo = (w0 >> (2 * c)) & 0x0303_0303;
                let mut hi = (w1 >> (2 * c)) & 0x0303_0303;
                let w = r.sc[k / 2];
                let b0 = (w >> (16 * (k % 2))) & 0xff;
                let b1 = (w >> (16 * (k % 2) + 8)) & 0xff;
                if ty == GgmlType::Q3K {
                    let hw = src.qh[0];
                    lo = minus(lo | (((hw >> c) & 0x0101_0101) << 2), 4);
                    hi = minus(hi | (((hw >> (4 + c)) & 0x0101_0101) << 2), 4);
                    (f.s0, f.s1) = (b0 as u8 as i8 as i32, b1 as u8 as i8 as i32);
                    f.p = h16(r.d);
                } else {
                    lo = lo.wrapping_mul(b0 & 15);
                    hi = hi.wrapping_mul(b1 & 15);
                    f.mlo = (b0 >> 4).wrapping_mul(0x0101_0101);
                    f.mhi = (b1 >> 4).wrapping_mul(0x0101_0101);
                    (f.p, f.q) = (h16(r.d), h16(r.d >> 16));
                }
                (f.lo, f.hi) = (lo, hi);
            }
            other => panic!("{other} has no mma kernel"),
        }
        f
    }

    /// x̂ as quantize_q8_frag makes it: per token, q = rn(x / d) and (d, d·Σq) per 32.
    struct Xq {
        q: Vec<Vec<i8>>,
        d: Vec<Vec<(f32, f32)>>,
    }

    fn quantize(x: &[Vec<f32>]) -> Xq {
        let (mut q, mut d) = (Vec::new(), Vec::new());
        for t in x {
            let (mut qt, mut dt) = (Vec::new(), Vec::new());
            for g in t.chunks_exact(32) {
                let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
                let dx = amax / 127.0;
                let qs: Vec<i8> = g
                    .iter()
                    .map(|v| {
                        if amax == 0.0 {
                            0
                        } else {
                            (v / dx).round_ties_even() as i8
                        }
                    })
                    .collect();
                let sum: f32 = qs.iter().map(|&v| v as f32).sum();
                dt.push((dx, dx * sum));
                qt.extend(qs);
            }
            q.push(qt);
            d.push(dt);
        }
        Xq { q, d }
    }

    /// out[row][token] for 16 device rows and 8 tokens, as the kernel computes it.
    fn model(ty: GgmlType, rows: &[&[u8]], cols: usize, x: &Xq) -> Vec<[f32; 8]> {
        let units = cols / 32;
        let mut acc = vec![[0f32; 8]; 16];
        let xw =
            |t: usize, e: usize| ld(&x.q[t].iter().map(|&v| v as u8).collect::<Vec<_>>(), e, 4);
        for u0 in (0..units).step_by(4) {
            // runs[row][c]
            let runs: Vec<Vec<Run>> = rows
                .iter()
                .map(|r| (0..4).map(|c| load(ty, r, units, u0, c)).collect())
                .collect();
            for k in 0..4 {
                let u = u0 + k;
                if u >= units {
                    break;
                }
                let mut a = [[0u32; 4]; 32];
                let mut m = [[0u32; 4]; 32];
                let mut fs = [[U::default(); 2]; 32];
                let mut b = [[0u32; 2]; 32];
                for lane in 0..32 {
                    let (g, c) = (lane / 4, lane % 4);
                    let f0 = unit(ty, &runs[g], k, c);
                    let f1 = unit(ty, &runs[g + 8], k, c);
                    a[lane] = [f0.lo, f1.lo, f0.hi, f1.hi];
                    m[lane] = [f0.mlo, f1.mlo, f0.mhi, f1.mhi];
                    fs[lane] = [f0, f1];
                    b[lane] = [xw(g, 32 * u + 4 * c), xw(g, 32 * u + 16 + 4 * c)];
                }
                let split = matches!(ty, GgmlType::Q3K | GgmlType::Q6K);
                let (s, t) = if split {
                    let lo: [[u32; 2]; 32] = std::array::from_fn(|l| [a[l][0], a[l][1]]);
                    let hi: [[u32; 2]; 32] = std::array::from_fn(|l| [a[l][2], a[l][3]]);
                    (
                        mma_k16(&lo, &std::array::from_fn(|l| b[l][0])),
                        mma_k16(&hi, &std::array::from_fn(|l| b[l][1])),
                    )
                } else {
                    (mma_k32(&a, &b), mma_k32(&m, &b))
                };
                for lane in 0..32 {
                    let (g, c) = (lane / 4, lane % 4);
                    for e in 0..4 {
                        let (r, tok) = (g + 8 * (e / 2), 2 * c + e % 2);
                        let f = fs[lane][e / 2];
                        let (dx, sx) = x.d[tok][u];
                        let (se, te) = (s[lane][e], t[lane][e]);
                        acc[r][tok] += match ty {
                            GgmlType::Q4_0 => f.p * (dx * se as f32 - 8.0 * sx),
                            GgmlType::Q3K | GgmlType::Q6K => {
                                f.p * (dx * (f.s0 * se + f.s1 * te) as f32)
                            }
                            GgmlType::Q2K => dx * (f.p * se as f32 - f.q * te as f32),
                            GgmlType::Q8_0 => f.p * (dx * se as f32),
                            _ => f.p * (dx * se as f32) + f.q * sx,
                        };
                    }
                }
            }
        }
        acc
    }

    /// The f16 fields of a GGUF block of `ty` (scales, mins), byte offsets.
    fn f16_fields(ty: GgmlType) -> &'static [usize] {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q2K => &[80, 82],
            GgmlType::Q3K => &[108],
            GgmlType::Q6K => &[208],
            other => panic!("{other}"),
        }
    }

    /// Checks 16 stored rows of `ty` against the model: Σ_e w[r][e] · x̂[t][e] in f64 (w from
    /// plumb-core's dequantizer), within 1e-5 of Σ|w x̂|.
    fn check(ty: GgmlType, src: &[u8], cols: usize, x: &Xq, what: &str) {
        let stored = ty.row_bytes(cols).unwrap();
        let out_row = device_row_bytes(ty, stored);
        let dev = repack(ty, src, 16, stored, out_row);
        let rows: Vec<&[u8]> = dev.chunks_exact(out_row).collect();
        let got = model(ty, &rows, cols, x);
        let mut w = vec![0f32; cols];
        for r in 0..16 {
            dequantize_row(ty, &src[r * stored..(r + 1) * stored], &mut w).unwrap();
            for t in 0..8 {
                let (mut want, mut mag) = (0f64, 0f64);
                for (e, &we) in w.iter().enumerate() {
                    let xe = x.q[t][e] as f64 * x.d[t][e / 32].0 as f64;
                    want += we as f64 * xe;
                    mag += (we as f64 * xe).abs();
                }
                let g = got[r][t] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * mag,
                    "{ty} {what} cols {cols} row {r} token {t}: mma model {g}, Σ w x̂ {want} \
                     (Σ|w x̂| {mag})"
                );
            }
        }
    }

    fn tokens(rng: &mut Rng, cols: usize) -> Xq {
        quantize(&(0..8).map(|_| rng.normals(cols, 1.0)).collect::<Vec<_>>())
    }

    /// Legacy formats also at widths whose unit count is not a multiple of 4 (the clamped
    /// loads of a partial run).
    fn widths(ty: GgmlType) -> &'static [usize] {
        if ty.block_size() == 32 {
            &[96, 160, 512]
        } else {
            &[256, 768]
        }
    }

    #[test]
    fn mma_units_of_quantized_rows_match_the_dequantizer() {
        let mut rng = Rng::new(41);
        for &ty in FORMATS {
            for &cols in widths(ty) {
                let stored = ty.row_bytes(cols).unwrap();
                let mut src = vec![0u8; 16 * stored];
                for r in 0..16 {
                    let w = rng.normals(cols, 0.05);
                    quantize_row(ty, &w, &mut src[r * stored..(r + 1) * stored]).unwrap();
                }
                check(ty, &src, cols, &tokens(&mut rng, cols), "quantized");
            }
        }
    }

    #[test]
    fn mma_units_of_random_blocks_match_the_dequantizer() {
        // Every bit pattern of quants, high bits and integer scales (random bytes), with the
        // f16 scales and mins set to finite values of both signs.
        let mut rng = Rng::new(43);
        for &ty in FORMATS {
            for &cols in widths(ty) {
                let stored = ty.row_bytes(cols).unwrap();
                let mut src: Vec<u8> = (0..16 * stored).map(|_| rng.next_u64() as u8).collect();
                for b in src.chunks_exact_mut(ty.type_size()) {
                    for &at in f16_fields(ty) {
                        let v = (rng.next_f64() as f32 * 2.0 - 1.0) * 0.5;
                        b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    }
                }
                check(ty, &src, cols, &tokens(&mut rng, cols), "random");
            }
        }
    }

    #[test]
    fn mma_units_of_extreme_blocks_match_the_dequantizer() {
        // All-zero, all-one and alternating bit patterns, with f16 scales 1 and x̂ at ±127
        // everywhere (the largest int32 sums). Zeros give Q3_K q = −4 with scale −32 (the
        // product 128 does not fit the int8 a one-step fold would need), ones q = 3 with 31;
        // Q2_K's ones 3 · 15 and min 15; Q6_K's scales are set to −128 and 127 (q = −32 / 31).
        let cols = 256;
        let x: Vec<Vec<f32>> = (0..8)
            .map(|t| {
                (0..cols)
                    .map(|e| if (e + t) % 3 == 0 { -1.0 } else { 1.0 })
                    .collect()
            })
            .collect();
        let x = quantize(&x);
        for &ty in FORMATS {
            let stored = ty.row_bytes(cols).unwrap();
            let mut src = vec![0u8; 16 * stored];
            for (r, row) in src.chunks_exact_mut(stored).enumerate() {
                let fill = [0x00u8, 0xff, 0x55, 0xaa][r % 4];
                row.fill(if r < 8 { fill } else { !fill });
                for b in row.chunks_exact_mut(ty.type_size()) {
                    for &at in f16_fields(ty) {
                        b[at..at + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
                    }
                    if ty == GgmlType::Q6K {
                        b[192..208].fill(if r % 2 == 0 { 0x80 } else { 0x7f });
                    }
                }
            }
            check(ty, &src, cols, &x, "extreme");
        }
    }

    #[test]
    fn every_mma_format_has_kernels_and_an_auto_rule() {
        for &ty in FORMATS {
            assert!(has_mmq_kernel(ty), "{ty}");
            assert!(crate::matvec_q8::has_q8_kernel(ty), "{ty}");
            assert_eq!(
                crate::launch::auto_mma_max_n(ty),
                crate::launch::BATCH_MAX_N
            );
        }
        assert_eq!(MMQ_FORMATS.len(), FORMATS.len());
        for ty in [
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8K,
            GgmlType::Mlx4G64,
        ] {
            assert!(!has_mmq_kernel(ty), "{ty}");
            assert_eq!(crate::launch::auto_mma_max_n(ty), 0);
        }
    }
}
