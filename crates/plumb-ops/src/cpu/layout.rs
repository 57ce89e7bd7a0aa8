//! The repacked layout of quantized weights (and of the quantized activations that meet them).
//!
//! A row of `cols` elements is `nb = cols / 32` blocks of 32 (a K-quant super-block is 8 such
//! blocks). Blocks are taken in *groups* of `g` ∈ {16, 8, 4, 2, 1} (as many 16s as fit, then
//! the binary digits of the rest: 18 blocks = 16 + 2, 43 = 16 + 16 + 8 + 2 + 1).
//!
//! A group is stored so that its 8-bit values fill whole 512-bit vectors of 16 dword lanes:
//! `nvec(g) = max(1, g / 2)` vectors, where byte `j` of lane `l` of vector `v` holds element
//! `e` of block `k` as given by [`slot`]. With `g = 16` lane `l` is block `l` and vector `v`
//! holds its elements `4v .. 4v + 4`, so an integer dot product accumulates one block per
//! lane and each lane is scaled by its own block's scale. Smaller groups spread a block over
//! `L = 16 / g` lanes (e.g. `g = 2`: lanes 0-3 and 8-11 are block 0, elements 0..16 in the
//! low half and 16..32 in the high half).
//!
//! Vectors 0 .. nvec/2 hold elements 0..16 of each block and the others 16..32 (for g ≥ 4),
//! which is where the 16-element sub-blocks of Q2_K, Q3_K and Q6_K split.
//!
//! Each format stores a group as a sequence of components (see [`QFmt::comps`]):
//! - `Nib`: low 4 bits. For g ≥ 4, packed vector `p < g/4` holds vector `p` in its low
//!   nibbles and vector `p + g/4` in its high nibbles; for g ≤ 2 the 16 bytes of each block
//!   are in ggml order (byte `i`: element `i` low, element `16 + i` high).
//! - `Bits(b)`: bit `b` of each value: for vector `v`, a 64-bit mask (bit `4l + j`).
//! - `Two(s)`: bits `s .. s + 2`: vector `v` is bits `2 (v % 4)` of packed vector `v / 4`.
//! - `Bytes8`: the 8-bit values themselves.
//! - scales: `D16`/`M16` one f16 per block, `ScA`/`ScB` one byte per block, `DSup`/`MSup`
//!   one f16 per K-quant super-block, `D32`/`M32` one f32 per block (the MLX affine formats,
//!   `A2` .. `A8`: each block of 32 carries its group's scale and bias, so that one layout
//!   serves every group size, and 2, 3 and 6-bit codes are split into single bits, which
//!   unpack for groups of any size).
//!
//! Values are unsigned; each block (or 16-element half) is `w = dw * u + mw`. Symmetric
//! formats fold their offset into `mw` (Q4_0: `mw = -8 dw`, Q8_0 stores `q + 128`, ...).
//! The repacked size is the stored size (K-quants: +3%), plus 64 bytes of slack at the end.

use plumb_core::{GgmlType, HostWeight};
use rayon::prelude::*;

use super::natural::{decode_row, Natural};
use crate::error::{OpError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QFmt {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// MLX affine, 2 .. 8 bits: `w = d * u + m` with f32 `d`, `m` per block.
    A2,
    A3,
    A4,
    A5,
    A6,
    A8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comp {
    Nib,
    Bits(u8),
    Two(u8),
    Bytes8,
    D16,
    M16,
    ScA,
    ScB,
    DSup,
    MSup,
    D32,
    M32,
}

impl QFmt {
    pub(crate) fn from_ggml(ty: GgmlType) -> Option<QFmt> {
        Some(match ty {
            GgmlType::Q4_0 => QFmt::Q4_0,
            GgmlType::Q4_1 => QFmt::Q4_1,
            GgmlType::Q5_0 => QFmt::Q5_0,
            GgmlType::Q5_1 => QFmt::Q5_1,
            GgmlType::Q8_0 | GgmlType::Q8_1 => QFmt::Q8_0,
            GgmlType::Q2K => QFmt::Q2K,
            GgmlType::Q3K => QFmt::Q3K,
            GgmlType::Q4K => QFmt::Q4K,
            GgmlType::Q5K => QFmt::Q5K,
            GgmlType::Q6K => QFmt::Q6K,
            mlx => match mlx.affine()?.0 {
                2 => QFmt::A2,
                3 => QFmt::A3,
                4 => QFmt::A4,
                5 => QFmt::A5,
                6 => QFmt::A6,
                8 => QFmt::A8,
                _ => return None,
            },
        })
    }

    pub(crate) fn is_k(self) -> bool {
        matches!(
            self,
            QFmt::Q2K | QFmt::Q3K | QFmt::Q4K | QFmt::Q5K | QFmt::Q6K
        )
    }

    pub(crate) fn comps(self) -> &'static [Comp] {
        use Comp::*;
        match self {
            QFmt::Q4_0 => &[Nib, D16],
            QFmt::Q4_1 => &[Nib, D16, M16],
            QFmt::Q5_0 => &[Nib, Bits(4), D16],
            QFmt::Q5_1 => &[Nib, Bits(4), D16, M16],
            QFmt::Q8_0 => &[Bytes8, D16],
            QFmt::Q2K => &[Two(0), ScA, ScB, DSup, MSup],
            QFmt::Q3K => &[Two(0), Bits(2), ScA, ScB, DSup],
            QFmt::Q4K => &[Nib, ScA, ScB, DSup, MSup],
            QFmt::Q5K => &[Nib, Bits(4), ScA, ScB, DSup, MSup],
            QFmt::Q6K => &[Nib, Two(4), ScA, ScB, DSup],
            QFmt::A2 => &[Bits(0), Bits(1), D32, M32],
            QFmt::A3 => &[Bits(0), Bits(1), Bits(2), D32, M32],
            QFmt::A4 => &[Nib, D32, M32],
            QFmt::A5 => &[Nib, Bits(4), D32, M32],
            QFmt::A6 => &[Nib, Bits(4), Bits(5), D32, M32],
            QFmt::A8 => &[Bytes8, D32, M32],
        }
    }

    /// Bytes of a group of `g` blocks.
    pub(crate) fn group_bytes(self, g: usize) -> usize {
        self.comps().iter().map(|c| c.bytes(g)).sum()
    }
}

impl Comp {
    pub(crate) fn bytes(self, g: usize) -> usize {
        match self {
            Comp::Nib => 16 * g,
            Comp::Bits(_) => 4 * g,
            Comp::Two(_) => 8 * g,
            Comp::Bytes8 => 32 * g,
            Comp::D16 | Comp::M16 => 2 * g,
            Comp::ScA | Comp::ScB => g,
            Comp::DSup | Comp::MSup => g / 4,
            Comp::D32 | Comp::M32 => 4 * g,
        }
    }
}

/// Unpacked 64-byte vectors in a group of `g` blocks.
pub(crate) const fn nvec(g: usize) -> usize {
    if g >= 2 {
        g / 2
    } else {
        1
    }
}

/// Lanes that hold one block in a group of `g` (the 1-block group uses 8 of 16 lanes).
pub(crate) const fn lanes_per_block(g: usize) -> usize {
    if g >= 2 {
        16 / g
    } else {
        8
    }
}

/// `log2(16 / g)`: lanes per block of a group of `g` ≥ 2, as a shift (`g` is a power of
/// two, so the index math below needs no division).
const fn lpb_shift(g: usize) -> u32 {
    4 - g.trailing_zeros()
}

/// Block of lane `l` in a group of `g`, or `None` for the unused lanes of `g = 1`.
pub(crate) const fn lane_block(g: usize, l: usize) -> Option<usize> {
    match g {
        1 if l >= 8 => None,
        1 => Some(0),
        2 => Some((l & 7) >> 2),
        _ => Some(l >> lpb_shift(g)),
    }
}

/// (block, element) at byte `j` of lane `l` of unpacked vector `v`, for a group of `g`.
pub(crate) const fn slot(g: usize, v: usize, l: usize, j: usize) -> Option<(usize, usize)> {
    match g {
        1 if l >= 8 => None,
        1 => Some((0, 4 * l + j)),
        2 => Some(((l & 7) >> 2, 4 * (4 * (l >> 3) + (l & 3)) + j)),
        _ => {
            let s = lpb_shift(g);
            Some((l >> s, 4 * ((v << s) + (l & ((1 << s) - 1))) + j))
        }
    }
}

/// The inverse of [`slot`] at dword granularity: (vector, lane) of dword `d` (elements
/// `4d .. 4d + 4`) of block `k`.
pub(crate) const fn dword_pos(g: usize, k: usize, d: usize) -> (usize, usize) {
    match g {
        1 => (0, d),
        2 => (0, 8 * (d >> 2) + 4 * k + (d & 3)),
        _ => {
            let s = lpb_shift(g);
            (d >> s, (k << s) + (d & ((1 << s) - 1)))
        }
    }
}

/// One group of a row: `g` blocks starting at block `block0`, stored at byte `w_off` of a
/// weight row and at byte `a_off` of a quantized activation row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    pub g: usize,
    pub block0: usize,
    pub w_off: usize,
    pub a_off: usize,
}

/// Bytes of one group of quantized activations: the vectors, then four 16-lane f32
/// vectors: `d` (per lane), `s`, `s_lo`, `s_hi` (block sums times `d`, divided among the
/// lanes of the block).
pub(crate) const fn act_group_bytes(g: usize) -> usize {
    nvec(g) * 64 + 4 * 64
}

/// The groups of a row of `nb` blocks; also returns the weight and activation row bytes.
pub(crate) fn groups(fmt: QFmt, nb: usize) -> (Vec<Group>, usize, usize) {
    let mut out = Vec::new();
    let (mut block0, mut w_off, mut a_off) = (0, 0, 0);
    let mut push = |g: usize| {
        out.push(Group {
            g,
            block0,
            w_off,
            a_off,
        });
        block0 += g;
        w_off += fmt.group_bytes(g);
        a_off += act_group_bytes(g);
    };
    for _ in 0..nb / 16 {
        push(16);
    }
    for g in [8, 4, 2, 1] {
        if (nb % 16) & g != 0 {
            push(g);
        }
    }
    (out, w_off, a_off)
}

/// A 64-byte aligned byte buffer.
#[derive(Clone)]
pub(crate) struct ABuf {
    words: Vec<A64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct A64([u8; 64]);

impl ABuf {
    pub(crate) fn zeroed(len: usize) -> ABuf {
        ABuf {
            words: vec![A64([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len.div_ceil(64)` plain 64-byte arrays (`zeroed`
        // makes that many and `reserve_len` never sets `len` beyond them), so its first `len`
        // bytes are initialized and in bounds; `u8` has no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }

    /// Grows to at least `len` bytes (contents are unspecified after growing).
    pub(crate) fn reserve_len(&mut self, len: usize) {
        if len > self.words.len() * 64 {
            *self = ABuf::zeroed(len);
        }
        self.len = len;
    }
}

/// A quantized weight in the repacked layout.
#[derive(Clone)]
pub(crate) struct QWeight {
    pub fmt: QFmt,
    pub rows: usize,
    pub groups: Vec<Group>,
    pub row_bytes: usize,
    /// Bytes of one token's quantized activations for this `cols`.
    pub act_bytes: usize,
    /// `rows * row_bytes` bytes and 64 bytes of slack (SIMD code may over-read scales).
    pub data: ABuf,
}

impl QWeight {
    pub(crate) fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

pub(crate) fn repack(w: &HostWeight, fmt: QFmt) -> Result<QWeight> {
    let nb = w.cols / 32;
    if !w.cols.is_multiple_of(32) || (fmt.is_k() && !w.cols.is_multiple_of(256)) {
        return Err(OpError::Unsupported {
            op: "upload_weight",
            what: format!("{} with {} columns", w.ty, w.cols),
        });
    }
    let (groups, row_bytes, act_bytes) = groups(fmt, nb);
    let mut data = ABuf::zeroed(w.rows * row_bytes + 64);
    let src_rb = w.row_bytes();
    let src = w.data.as_slice();
    let ty = w.ty;
    if row_bytes > 0 {
        data.as_mut_slice()[..w.rows * row_bytes]
            .par_chunks_mut(row_bytes)
            .enumerate()
            .for_each(|(r, dst)| {
                let nat = decode_row(ty, &src[r * src_rb..(r + 1) * src_rb], nb);
                for grp in &groups {
                    let gb = fmt.group_bytes(grp.g);
                    write_group(fmt, grp, &nat, &mut dst[grp.w_off..grp.w_off + gb]);
                }
            });
    }
    Ok(QWeight {
        fmt,
        rows: w.rows,
        groups,
        row_bytes,
        act_bytes,
        data,
    })
}

fn write_group(fmt: QFmt, grp: &Group, nat: &Natural, dst: &mut [u8]) {
    let g = grp.g;
    let b0 = grp.block0;
    // The values in SIMD order (`u[64 v + 4 l + j]`, see `slot`), then each component packs
    // them: the exact inverse of `scalar::unpack_lanes`.
    let mut u = [0u8; 512];
    for v in 0..nvec(g) {
        for l in 0..16 {
            for j in 0..4 {
                if let Some((k, e)) = slot(g, v, l, j) {
                    u[64 * v + 4 * l + j] = nat.u[b0 + k][e];
                }
            }
        }
    }
    let mut off = 0;
    for &c in fmt.comps() {
        let out = &mut dst[off..off + c.bytes(g)];
        match c {
            Comp::Nib if g >= 4 => {
                let h = g / 4;
                for pv in 0..h {
                    for i in 0..64 {
                        out[64 * pv + i] =
                            (u[64 * pv + i] & 15) | ((u[64 * (pv + h) + i] & 15) << 4);
                    }
                }
            }
            Comp::Nib => {
                let n = 16 * g;
                for i in 0..n {
                    out[i] = (u[i] & 15) | ((u[n + i] & 15) << 4);
                }
            }
            Comp::Bits(b) => {
                let bits = if g >= 2 { 64 } else { 32 };
                for v in 0..nvec(g) {
                    for i in 0..bits {
                        out[(64 * v + i) / 8] |= ((u[64 * v + i] >> b) & 1) << (i % 8);
                    }
                }
            }
            Comp::Two(s) => {
                for pv in 0..g / 8 {
                    for i in 0..64 {
                        let mut byte = 0;
                        for q in 0..4 {
                            byte |= ((u[64 * (4 * pv + q) + i] >> s) & 3) << (2 * q);
                        }
                        out[64 * pv + i] = byte;
                    }
                }
            }
            Comp::Bytes8 => out.copy_from_slice(&u[..32 * g]),
            Comp::D16 | Comp::M16 => {
                let src = if c == Comp::D16 { &nat.d } else { &nat.m };
                for k in 0..g {
                    out[2 * k..2 * k + 2].copy_from_slice(&src[b0 + k].to_le_bytes());
                }
            }
            Comp::ScA | Comp::ScB => {
                let src = if c == Comp::ScA { &nat.sa } else { &nat.sb };
                out.copy_from_slice(&src[b0..b0 + g]);
            }
            Comp::DSup | Comp::MSup => {
                let src = if c == Comp::DSup { &nat.d } else { &nat.m };
                for s in 0..g / 8 {
                    out[2 * s..2 * s + 2].copy_from_slice(&src[b0 / 8 + s].to_le_bytes());
                }
            }
            Comp::D32 | Comp::M32 => {
                let src = if c == Comp::D32 { &nat.df } else { &nat.mf };
                for k in 0..g {
                    out[4 * k..4 * k + 4].copy_from_slice(&src[b0 + k].to_le_bytes());
                }
            }
        }
        off += c.bytes(g);
    }
}
