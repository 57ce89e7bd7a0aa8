//! A stored row decoded into what the repacked layout (`layout.rs`) is written from: per
//! block of 32 its unsigned values in natural order and its scale fields.

use plumb_core::GgmlType;

/// One row decoded from its blocks: per block the 32 unsigned values (natural order) and
/// the scale fields (`d`, `m`: f16 bits per block, or per super-block for K-quants; `df`,
/// `mf`: f32 per block for the MLX formats).
pub(crate) struct Natural {
    pub u: Vec<[u8; 32]>,
    pub d: Vec<u16>,
    pub m: Vec<u16>,
    pub df: Vec<f32>,
    pub mf: Vec<f32>,
    pub sa: Vec<u8>,
    pub sb: Vec<u8>,
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

pub(crate) fn decode_row(ty: GgmlType, src: &[u8], nb: usize) -> Natural {
    let mut n = Natural {
        u: vec![[0; 32]; nb],
        d: Vec::new(),
        m: Vec::new(),
        df: Vec::new(),
        mf: Vec::new(),
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
        mlx => {
            if let Some((bits, group)) = mlx.affine() {
                n.affine(bits, group, blocks);
            }
        }
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

    /// The MLX affine formats: a group's scale and bias go to each of its blocks of 32.
    fn affine(&mut self, bits: u32, group: usize, blocks: Blocks<'_>) {
        let f32_at = |b: &[u8], i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        for (gi, b) in blocks.enumerate() {
            for sub in 0..group / 32 {
                let k = gi * group / 32 + sub;
                self.df.push(f32_at(b, 0));
                self.mf.push(f32_at(b, 4));
                for (e, u) in self.u[k].iter_mut().enumerate() {
                    *u = plumb_core::quant::affine::code(&b[8..], bits, 32 * sub + e) as u8;
                }
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
