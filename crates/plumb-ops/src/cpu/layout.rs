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
//!   one f16 per K-quant super-block.
//!
//! Values are unsigned; each block (or 16-element half) is `w = dw * u + mw`. Symmetric
//! formats fold their offset into `mw` (Q4_0: `mw = -8 dw`, Q8_0 stores `q + 128`, ...).
//! The repacked size is the stored size (K-quants: +3%), plus 64 bytes of slack at the end.

use plumb_core::{GgmlType, HostWeight};
use rayon::prelude::*;

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
            _ => return None,
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

/// One row decoded from ggml blocks: per block the 32 unsigned values (natural order) and
/// the scale fields (`d`, `m`: f16 bits per block, or per super-block for K-quants).
struct Natural {
    u: Vec<[u8; 32]>,
    d: Vec<u16>,
    m: Vec<u16>,
    sa: Vec<u8>,
    sb: Vec<u8>,
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

fn le16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Q4_K / Q5_K 6-bit (scale, min) of sub-block `j` from their 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q3_K's sixteen 6-bit scales, minus 32.
fn scales_q3k(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

fn decode_row(ty: GgmlType, src: &[u8], nb: usize) -> Natural {
    let mut n = Natural {
        u: vec![[0; 32]; nb],
        d: Vec::new(),
        m: Vec::new(),
        sa: vec![0; nb],
        sb: vec![0; nb],
    };
    let blocks = src.chunks_exact(ty.type_size());
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => n.legacy(ty, blocks),
        GgmlType::Q8_0 | GgmlType::Q8_1 => n.q8(ty, blocks),
        GgmlType::Q4K | GgmlType::Q5K => n.k45(ty, blocks),
        GgmlType::Q6K => n.q6k(blocks),
        GgmlType::Q2K | GgmlType::Q3K => n.k23(ty, blocks),
        // `QFmt::from_ggml` admits no other type.
        _ => {}
    }
    n
}

/// The blocks of a stored row.
type Blocks<'a> = std::slice::ChunksExact<'a, u8>;

impl Natural {
    /// Q4_0, Q4_1, Q5_0, Q5_1.
    fn legacy(&mut self, ty: GgmlType, blocks: Blocks<'_>) {
        let (has_m, has_h) = (
            matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1),
            matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1),
        );
        for (k, b) in blocks.enumerate() {
            self.d.push(le16(b, 0));
            let mut o = 2;
            if has_m {
                self.m.push(le16(b, 2));
                o = 4;
            }
            let qh = if has_h {
                o += 4;
                u32::from_le_bytes([b[o - 4], b[o - 3], b[o - 2], b[o - 1]])
            } else {
                0
            };
            for i in 0..16 {
                let q = b[o + i];
                self.u[k][i] = (q & 15) | (((qh >> i) & 1) << 4) as u8;
                self.u[k][i + 16] = (q >> 4) | (((qh >> (i + 16)) & 1) << 4) as u8;
            }
        }
    }

    /// Q8_0 and Q8_1 (values stored as `q + 128`).
    fn q8(&mut self, ty: GgmlType, blocks: Blocks<'_>) {
        let o = if ty == GgmlType::Q8_0 { 2 } else { 4 };
        for (k, b) in blocks.enumerate() {
            self.d.push(le16(b, 0));
            for i in 0..32 {
                self.u[k][i] = b[o + i] ^ 0x80;
            }
        }
    }

    /// Q4_K and Q5_K.
    fn k45(&mut self, ty: GgmlType, blocks: Blocks<'_>) {
        let qs = if ty == GgmlType::Q4K { 16 } else { 48 };
        for (sbi, b) in blocks.enumerate() {
            self.d.push(le16(b, 0));
            self.m.push(le16(b, 2));
            for j in 0..8 {
                let k = 8 * sbi + j;
                (self.sa[k], self.sb[k]) = scale_min_k4(j, &b[4..16]);
                for l in 0..32 {
                    let e = 32 * j + l;
                    let mut q = (b[qs + 32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
                    if ty == GgmlType::Q5K {
                        q |= ((b[16 + l] >> (e / 32)) & 1) << 4;
                    }
                    self.u[k][l] = q;
                }
            }
        }
    }

    fn q6k(&mut self, blocks: Blocks<'_>) {
        for (sbi, b) in blocks.enumerate() {
            self.d.push(le16(b, 208));
            for e in 0..256 {
                let (h, k4, l) = (e / 128, (e % 128) / 32, e % 32);
                let low = (b[64 * h + 32 * (k4 % 2) + l] >> (4 * (k4 / 2))) & 15;
                let high = (b[128 + 32 * h + l] >> (2 * k4)) & 3;
                self.u[8 * sbi + e / 32][e % 32] = low | (high << 4);
            }
            for j in 0..8 {
                self.sa[8 * sbi + j] = b[192 + 2 * j];
                self.sb[8 * sbi + j] = b[192 + 2 * j + 1];
            }
        }
    }

    /// Q2_K and Q3_K.
    fn k23(&mut self, ty: GgmlType, blocks: Blocks<'_>) {
        let (qs, q3) = if ty == GgmlType::Q2K {
            (16, false)
        } else {
            (32, true)
        };
        for (sbi, b) in blocks.enumerate() {
            for e in 0..256 {
                let mut q = (b[qs + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                if q3 {
                    q |= ((b[e % 32] >> (e / 32)) & 1) << 2;
                }
                self.u[8 * sbi + e / 32][e % 32] = q;
            }
            if q3 {
                self.d.push(le16(b, 108));
                let sc = scales_q3k(&b[96..108]);
                for j in 0..8 {
                    self.sa[8 * sbi + j] = sc[2 * j] as u8;
                    self.sb[8 * sbi + j] = sc[2 * j + 1] as u8;
                }
            } else {
                self.d.push(le16(b, 80));
                self.m.push(le16(b, 82));
                for j in 0..8 {
                    self.sa[8 * sbi + j] = b[2 * j];
                    self.sb[8 * sbi + j] = b[2 * j + 1];
                }
            }
        }
    }
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
        }
        off += c.bytes(g);
    }
}
