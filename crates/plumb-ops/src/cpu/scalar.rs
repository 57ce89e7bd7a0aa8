//! Portable scalar kernels for the repacked quantized layout: the fallback on every machine
//! and the readable statement of what the SIMD kernels compute.
//!
//! Activations are quantized per block of 32 to `q = round(x / d)`, `d = max|x| / 127`
//! (Q8_0-like), with the block's sums `d Σ q` over each half kept for the `mw` terms, in the
//! interleaved layout of `act.rs` (the same bytes the SIMD kernels read).

use super::layout::{lane_block, nvec, slot, Comp, QFmt, QWeight};

/// Quantizes 32 values: (q, d, Σ q over 0..16, Σ q over 16..32).
pub(crate) fn quant_block(x: &[f32]) -> ([i8; 32], f32, i32, i32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; 32];
    let (mut lo, mut hi) = (0i32, 0i32);
    for (i, (qi, xi)) in q.iter_mut().zip(x).enumerate() {
        // Round to nearest even by the 1.5 · 2^23 trick (|xi · id| ≤ 127; no libm call).
        let v = ((xi * id + 12_582_912.0) - 12_582_912.0).clamp(-127.0, 127.0) as i32;
        *qi = v as i8;
        if i < 16 {
            lo += v;
        } else {
            hi += v;
        }
    }
    (q, d, lo, hi)
}

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Byte offset of component `c` in a group of `g` blocks of `fmt`.
pub(crate) fn comp_offset(fmt: QFmt, c: Comp, g: usize) -> usize {
    let mut off = 0;
    for &x in fmt.comps() {
        if x == c {
            return off;
        }
        off += x.bytes(g);
    }
    off
}

/// Scales of one block: `[dw_lo, mw_lo, dw_hi, mw_hi]` (value = `dw * u + mw`).
pub(crate) type Scales = [f32; 4];

/// Unpacks a group: the unsigned values of each block in natural order, and its scales.
pub(crate) fn unpack_group(
    fmt: QFmt,
    g: usize,
    p: &[u8],
    u: &mut [[u8; 32]; 16],
    sc: &mut [Scales; 16],
) {
    let mut lanes = [0u8; 512];
    unpack_lanes(fmt, g, p, &mut lanes);
    for v in 0..nvec(g) {
        for l in 0..16 {
            for j in 0..4 {
                if let Some((k, e)) = slot(g, v, l, j) {
                    u[k][e] = lanes[64 * v + 4 * l + j];
                }
            }
        }
    }
    group_scales(fmt, g, p, sc);
}

/// The scales of each block of a group.
pub(crate) fn group_scales(fmt: QFmt, g: usize, p: &[u8], sc: &mut [Scales; 16]) {
    let at = |c: Comp| &p[comp_offset(fmt, c, g)..];
    for (k, s) in sc.iter_mut().enumerate().take(g) {
        *s = match fmt {
            QFmt::Q4_0 | QFmt::Q5_0 | QFmt::Q8_0 => {
                let d = f16(at(Comp::D16), k);
                let off = match fmt {
                    QFmt::Q4_0 => -8.0,
                    QFmt::Q5_0 => -16.0,
                    _ => -128.0,
                };
                [d, off * d, d, off * d]
            }
            QFmt::Q4_1 | QFmt::Q5_1 => {
                let (d, m) = (f16(at(Comp::D16), k), f16(at(Comp::M16), k));
                [d, m, d, m]
            }
            QFmt::A2 | QFmt::A3 | QFmt::A4 | QFmt::A5 | QFmt::A6 | QFmt::A8 => {
                let (d, m) = (f32_at(at(Comp::D32), k), f32_at(at(Comp::M32), k));
                [d, m, d, m]
            }
            QFmt::Q4K | QFmt::Q5K => {
                let d = f16(at(Comp::DSup), k / 8) * at(Comp::ScA)[k] as f32;
                let m = -f16(at(Comp::MSup), k / 8) * at(Comp::ScB)[k] as f32;
                [d, m, d, m]
            }
            QFmt::Q6K | QFmt::Q3K => {
                let dd = f16(at(Comp::DSup), k / 8);
                let lo = dd * at(Comp::ScA)[k] as i8 as f32;
                let hi = dd * at(Comp::ScB)[k] as i8 as f32;
                let off = if fmt == QFmt::Q6K { -32.0 } else { -4.0 };
                [lo, off * lo, hi, off * hi]
            }
            QFmt::Q2K => {
                let (dd, dm) = (f16(at(Comp::DSup), k / 8), f16(at(Comp::MSup), k / 8));
                let (a, b) = (at(Comp::ScA)[k], at(Comp::ScB)[k]);
                [
                    dd * (a & 15) as f32,
                    -dm * (a >> 4) as f32,
                    dd * (b & 15) as f32,
                    -dm * (b >> 4) as f32,
                ]
            }
        };
    }
}

/// Dequantizes row `r` of a repacked weight into `out` (`cols` values).
pub(crate) fn dequant_row(w: &QWeight, r: usize, out: &mut [f32]) {
    let row = w.row(r);
    let mut u = [[0u8; 32]; 16];
    let mut sc = [[0f32; 4]; 16];
    for grp in &w.groups {
        unpack_group(w.fmt, grp.g, &row[grp.w_off..], &mut u, &mut sc);
        for k in 0..grp.g {
            let o = &mut out[(grp.block0 + k) * 32..][..32];
            for e in 0..32 {
                let (d, m) = if e < 16 {
                    (sc[k][0], sc[k][1])
                } else {
                    (sc[k][2], sc[k][3])
                };
                o[e] = d * u[k][e] as f32 + m;
            }
        }
    }
}

/// Unpacks a group into the SIMD order (`u[64 v + 4 l + j]`: byte `j` of lane `l` of
/// vector `v`, see `layout.rs`), i.e. what the SIMD kernels hold in registers.
fn unpack_lanes(fmt: QFmt, g: usize, p: &[u8], u: &mut [u8; 512]) {
    let nb = nvec(g) * 64;
    u[..nb].fill(0);
    let mut off = 0;
    for &c in fmt.comps() {
        let src = &p[off..off + c.bytes(g)];
        match c {
            Comp::Nib if g >= 4 => {
                let h = g / 4;
                for pv in 0..h {
                    for i in 0..64 {
                        let b = src[64 * pv + i];
                        u[64 * pv + i] |= b & 15;
                        u[64 * (pv + h) + i] |= b >> 4;
                    }
                }
            }
            Comp::Nib => {
                // ggml order: low nibbles fill the first half of the lanes, high the second.
                let n = 16 * g;
                for i in 0..n {
                    u[i] |= src[i] & 15;
                    u[n + i] |= src[i] >> 4;
                }
            }
            Comp::Bits(b) => {
                let bits = if g >= 2 { 64 } else { 32 };
                for v in 0..nvec(g) {
                    for i in 0..bits {
                        u[64 * v + i] |= ((src[(64 * v + i) / 8] >> (i % 8)) & 1) << b;
                    }
                }
            }
            Comp::Two(s) => {
                for pv in 0..g / 8 {
                    for i in 0..64 {
                        let b = src[64 * pv + i];
                        for q in 0..4 {
                            u[64 * (4 * pv + q) + i] |= ((b >> (2 * q)) & 3) << s;
                        }
                    }
                }
            }
            Comp::Bytes8 => u[..32 * g].copy_from_slice(src),
            _ => {}
        }
        off += c.bytes(g);
    }
}

/// `out(t, r, W[r] · x[t])` for `r` in `rows` and all `n` tokens of `act` (quantized by
/// `act::quantize_token`): the SIMD algorithm with 16 lanes emulated in plain code.
pub(crate) fn matmul_rows(
    w: &QWeight,
    act: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut dyn FnMut(usize, usize, f32),
) {
    debug_assert!(rows.end <= w.rows);
    let mut u = [0u8; 512];
    let mut sc = [[0f32; 4]; 16];
    for r in rows {
        let row = w.row(r);
        let mut acc = vec![0f32; n];
        for grp in &w.groups {
            let g = grp.g;
            let nv = nvec(g);
            let p = &row[grp.w_off..];
            unpack_lanes(w.fmt, g, p, &mut u);
            group_scales(w.fmt, g, p, &mut sc);
            let split = matches!(w.fmt, QFmt::Q2K | QFmt::Q3K | QFmt::Q6K);
            for (t, a) in acc.iter_mut().enumerate() {
                let x = &act[t * w.act_bytes + grp.a_off..][..nv * 64 + 256];
                // Per byte position first (a loop that vectorizes), then per lane.
                let mut lo = [0i32; 64];
                let mut hi = [0i32; 64];
                for v in 0..nv {
                    let dst = if split && v >= nv / 2 {
                        &mut hi
                    } else {
                        &mut lo
                    };
                    let (uv, xv) = (&u[64 * v..64 * v + 64], &x[64 * v..64 * v + 64]);
                    for i in 0..64 {
                        dst[i] += uv[i] as i32 * xv[i] as i8 as i32;
                    }
                }
                let lane =
                    |a: &[i32; 64], l: usize| a[4 * l] + a[4 * l + 1] + a[4 * l + 2] + a[4 * l + 3];
                let sv = &x[nv * 64..];
                for l in 0..16 {
                    let Some(k) = lane_block(g, l) else { continue };
                    let [dlo, mlo, dhi, mhi] = sc[k];
                    let dx = f32_at(sv, l);
                    *a += dx * (dlo * lane(&lo, l) as f32 + dhi * lane(&hi, l) as f32)
                        + mlo * f32_at(sv, 32 + l)
                        + mhi * f32_at(sv, 48 + l);
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            out(t, r, *a);
        }
    }
}
