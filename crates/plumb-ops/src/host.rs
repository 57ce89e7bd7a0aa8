//! The memory ops of the backends whose buffers are host vectors (`Buf = Vec<f32>`: the
//! reference, CPU and ggml backends), written once: [`host_buffers!`] expands to their
//! `alloc`, `upload`, `download` and `copy` inside an `impl Backend`.

use crate::error::Result;
use crate::shapes;

/// `out = buf[..out.len()]`.
pub(crate) fn download(buf: &[f32], out: &mut [f32]) -> Result<()> {
    shapes::download(buf.len(), out.len())?;
    out.copy_from_slice(&buf[..out.len()]);
    Ok(())
}

/// `dst[dst_off..][..len] = src[src_off..][..len]`.
pub(crate) fn copy(
    src: &[f32],
    src_off: usize,
    dst: &mut [f32],
    dst_off: usize,
    len: usize,
) -> Result<()> {
    shapes::copy(src.len(), src_off, dst.len(), dst_off, len)?;
    dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
    Ok(())
}

/// `pool[slots[i] * kv_dim ..][.. kv_dim] = src[i * kv_dim ..][.. kv_dim]`, checked once for
/// every slot (the trait's default checks each copy alone, and names `copy` in its errors).
pub(crate) fn kv_write_slots(
    src: &[f32],
    pool: &mut [f32],
    slots: &[u32],
    kv_dim: usize,
) -> Result<()> {
    shapes::kv_write_slots(src.len(), pool.len(), slots, kv_dim)?;
    for (row, &slot) in src.chunks_exact(kv_dim.max(1)).zip(slots) {
        let d = slot as usize * kv_dim;
        pool[d..d + kv_dim].copy_from_slice(&row[..kv_dim]);
    }
    Ok(())
}

/// The `Backend` memory ops over host vectors, for an `impl Backend` with `type Buf =
/// Vec<f32>`: `alloc` (zeros), `upload` (a copy), `download` and `copy` (bounds-checked by
/// [`crate::shapes`]).
macro_rules! host_buffers {
    () => {
        fn alloc(&self, len: usize) -> $crate::Result<Vec<f32>> {
            Ok(vec![0f32; len])
        }

        fn upload(&self, data: &[f32]) -> $crate::Result<Vec<f32>> {
            Ok(data.to_vec())
        }

        fn download(&self, buf: &Vec<f32>, out: &mut [f32]) -> $crate::Result<()> {
            $crate::host::download(buf, out)
        }

        fn copy(
            &self,
            src: &Vec<f32>,
            src_off: usize,
            dst: &mut Vec<f32>,
            dst_off: usize,
            len: usize,
        ) -> $crate::Result<()> {
            $crate::host::copy(src, src_off, dst, dst_off, len)
        }
    };
}

pub(crate) use host_buffers;
