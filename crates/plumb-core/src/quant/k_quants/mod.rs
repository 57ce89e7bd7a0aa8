//! The K-quants: super-blocks of [`QK_K`] = 256 elements with sub-block scales.
//!
//! Shared here: the 12-byte packing of eight 6-bit (scale, min) pairs used by Q4_K and Q5_K
//! (ggml's `get_scale_min_k4`), and the simple scale fits the Q2_K..Q6_K quantizers use.

pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_k;

pub use crate::dtype::QK_K;

use super::nearest_int;

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K.
///
/// Bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4. For `j >= 4` the
/// low 4 bits of the scale and of the min are the low and high nibble of byte `j + 4`, and
/// their top 2 bits are the top 2 bits of bytes `j - 4` (scale) and `j` (min).
/// `j` is taken modulo 8.
pub fn get_scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    let j = j % 8;
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        let sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc, m)
    }
}

/// The inverse of [`get_scale_min_k4`]: packs eight 6-bit scales and mins (higher bits are
/// dropped) into 12 bytes.
pub fn pack_scale_min_k4(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (sc, m) = (scales[j] & 63, mins[j] & 63);
        if j < 4 {
            s[j] |= sc;
            s[j + 4] |= m;
        } else {
            s[j + 4] = (sc & 0x0f) | ((m & 0x0f) << 4);
            s[j - 4] |= (sc >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s
}

/// An asymmetric fit of one sub-block for `q` in `0..=nmax`: `x ≈ scale * q - min`, with the
/// range widened to include 0 so that `min >= 0` (as ggml's formats expect). Returns
/// `(scale, min)`, both `>= 0`.
pub(crate) fn fit_min_max(x: &[f32], nmax: i32) -> (f32, f32) {
    let mut lo = 0.0f32;
    let mut hi = f32::MIN;
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let hi = hi.max(lo);
    ((hi - lo) / nmax as f32, -lo)
}

/// Quantizes the non-negative sub-block `values` to integers in `0..=nmax` against one
/// super-block scale `d = max(values) / nmax`. Returns the f16-rounded `d` with its bytes and
/// the integers.
pub(crate) fn quantize_super_scale<const N: usize>(
    values: &[f32; N],
    nmax: i32,
) -> ([u8; 2], f32, [u8; N]) {
    let max = values.iter().fold(0.0f32, |a, &v| a.max(v));
    let (bytes, d) = super::to_f16(max / nmax as f32);
    let id = super::inv_or_zero(d);
    let mut q = [0u8; N];
    for i in 0..N {
        q[i] = nearest_int(values[i] * id).clamp(0, nmax) as u8;
    }
    (bytes, d, q)
}

/// The header Q4_K and Q5_K share: fits each 32-element sub-block of `x` for `q` in
/// `0..=nmax`, writes `d`, `dmin` and the packed 6-bit scales and mins into `out[0..16]`, and
/// returns each sub-block's quantized `(scale, min)` to round its elements against.
pub(crate) fn write_scale_min_header(
    x: &[f32; QK_K],
    nmax: i32,
    out: &mut [u8],
) -> [(f32, f32); 8] {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for i in 0..8 {
        (scales[i], mins[i]) = fit_min_max(&x[32 * i..32 * i + 32], nmax);
    }
    let (db, d, sq) = quantize_super_scale(&scales, 63);
    let (mb, dmin, mq) = quantize_super_scale(&mins, 63);
    out[0..2].copy_from_slice(&db);
    out[2..4].copy_from_slice(&mb);
    out[4..16].copy_from_slice(&pack_scale_min_k4(&sq, &mq));
    std::array::from_fn(|i| (d * sq[i] as f32, dmin * mq[i] as f32))
}

/// `q = clamp(round((x + m) / dl), 0, nmax)`, or 0 when `dl` is 0.
pub(crate) fn quantize_affine(x: f32, dl: f32, ml: f32, nmax: i32) -> u8 {
    if dl == 0.0 {
        return 0;
    }
    nearest_int((x + ml) / dl).clamp(0, nmax) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_hand_computed() {
        let mut s = [0u8; 12];
        s[1] = 0x80 | 5; // scale 1 = 5, top bits of scale 5 = 2
        s[5] = 0x40 | 9; // min 1 = 9, top bits of min 5 = 1
        s[9] = 0x3C; // scale 5 low nibble 12, min 5 low nibble 3
        assert_eq!(get_scale_min_k4(1, &s), (5, 9));
        assert_eq!(get_scale_min_k4(5, &s), (12 | (2 << 4), 3 | (1 << 4)));
        assert_eq!(get_scale_min_k4(0, &s), (0, 0));
        assert_eq!(get_scale_min_k4(4, &s), (0, 0));
    }

    #[test]
    fn scale_min_k4_packs_and_unpacks_every_value() {
        for v in 0..64u8 {
            let scales = [
                v,
                63 - v,
                v ^ 21,
                7,
                v,
                v.wrapping_mul(3) & 63,
                63 - v,
                v ^ 42,
            ];
            let mins = [63 - v, v, 5, v ^ 13, v.wrapping_mul(5) & 63, v, v ^ 63, 1];
            let s = pack_scale_min_k4(&scales, &mins);
            for j in 0..8 {
                assert_eq!(get_scale_min_k4(j, &s), (scales[j], mins[j]), "v {v} j {j}");
            }
        }
    }
}
