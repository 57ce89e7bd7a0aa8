//! What the launchers share: shape checks and the kernels' integer arguments, grid shapes, the
//! error of a poisoned lock, the items a launch is described by while it is held back
//! (src/defer.rs), and the size limits that route an op to its kernel.
//!
//! A leaf: it imports nothing of the crate but the error types, so that every other module may
//! import it and the module graph stays acyclic (src/module_graph.rs checks both).

use cudarc::driver::LaunchConfig;
use plumb_core::GgmlType;
use plumb_ops::{OpError, Result, RopeParams};

use crate::error::CudaError;

/// The most tokens the matvec kernels take (their accumulator arrays, MAX_N in matvec_q.cu and
/// matvec_q8.cu).
pub const MATVEC_MAX_N: usize = 8;

/// The most tokens the batched kernels take (variant family `batch`: mmq.cu, or matvec_q8.cu's
/// MV_B8 over chunks of 8 tokens); above it, the prefill path (matmul.cu).
pub(crate) const BATCH_MAX_N: usize = 64;

/// The most tokens variant `batch=auto` gives the mma kernel (mmq.cu), per weight format: up to
/// where it measured ahead of dequant + cuBLAS. Q4_0: all of the batch range (NOTES.md, run 6).
/// The other formats start with Q4_0's rule, to be re-measured on a device (`plumb bench
/// --parallel` with `--variant batch=mma` against `batch=prefill`). A format missing here gets
/// no mma under `auto`.
pub(crate) const AUTO_MMA_MAX_N: &[(GgmlType, usize)] = &[
    (GgmlType::Q4_0, BATCH_MAX_N),
    (GgmlType::Q4_1, BATCH_MAX_N),
    (GgmlType::Q5_0, BATCH_MAX_N),
    (GgmlType::Q5_1, BATCH_MAX_N),
    (GgmlType::Q8_0, BATCH_MAX_N),
    (GgmlType::Q2K, BATCH_MAX_N),
    (GgmlType::Q3K, BATCH_MAX_N),
    (GgmlType::Q4K, BATCH_MAX_N),
    (GgmlType::Q5K, BATCH_MAX_N),
    (GgmlType::Q6K, BATCH_MAX_N),
];

/// `AUTO_MMA_MAX_N`'s entry for `ty` (0: none).
pub(crate) fn auto_mma_max_n(ty: GgmlType) -> usize {
    AUTO_MMA_MAX_N
        .iter()
        .find(|(t, _)| *t == ty)
        .map_or(0, |(_, n)| *n)
}

/// Query heads per KV head the decode attention kernel holds (MAX_G in attn_decode.cu).
pub(crate) const DEC_MAX_G: usize = 8;

/// Rows per block of attn_prefill.cu (PT_ROWS). It has no key splits: with fewer blocks than
/// half the SMs and more keys than PT_MAX_UNSPLIT_KEYS, the flash kernel's split-K is used.
pub(crate) const PT_ROWS: usize = 32;

/// Rows per block of attn_prefill.cu for head size `hd` (PtTile::ROWS there): PT_ROWS, or 16
/// at 256, whose 32-row tiles would not fit 48 KB of shared memory.
pub(crate) fn pt_rows(hd: usize) -> usize {
    if hd == 256 {
        16
    } else {
        PT_ROWS
    }
}
pub(crate) const PT_MAX_UNSPLIT_KEYS: usize = 1024;

pub(crate) fn shape(op: &'static str, msg: String) -> OpError {
    OpError::Shape { op, msg }
}

/// `v` as a kernel's `int`, or a shape error naming what overflowed.
/// An attention kernel's `window` argument: the window's length, 0 for none.
pub(crate) fn window_arg(window: Option<usize>, op: &'static str) -> Result<i32> {
    int(window.unwrap_or(0), op, "window")
}

pub(crate) fn int(v: usize, op: &'static str, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        shape(
            op,
            format!("{what} = {v} exceeds the kernels' 32-bit indexing"),
        )
    })
}

/// A one-dimensional grid of `blocks` (at least 1) blocks of `threads`.
pub(crate) fn grid1(blocks: usize, threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Blocks for a 256-thread grid-stride loop over `len` elements (see elementwise.cu).
pub(crate) fn stride_blocks(len: usize) -> usize {
    len.div_ceil(256).clamp(1, 4096)
}

pub(crate) fn poisoned() -> CudaError {
    CudaError::Other("a CUDA backend lock was poisoned by an earlier panic".into())
}

/// Shapes as the kernels' ints.
pub(crate) struct Dims {
    pub rows: i32,
    pub cols: i32,
    pub row_bytes: i32,
    pub n: i32,
}

/// One (weight, output) pair of a q8 matvec launch, as device addresses (src/defer.rs keeps
/// them until the launch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MvItem {
    pub w: u64,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    /// x [n, cols]
    pub x: u64,
    pub n: usize,
    /// out [n, rows]
    pub out: u64,
}

impl MvItem {
    /// Whether `other` can share this item's launch: same x̂, shapes and format, another output.
    pub fn joins(&self, other: &MvItem) -> bool {
        self.x == other.x
            && self.n == other.n
            && self.ty == other.ty
            && self.cols == other.cols
            && self.out != other.out
            && self.w != other.w
    }
}

/// matvec_q8.cu's MvSets and mmq.cu's MqSets: up to 3 (W, out) pairs, their blocks one after
/// the other.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MvSets {
    w: [u64; 3],
    out: [u64; 3],
    rows: [i32; 3],
    row_bytes: [i32; 3],
    end: [i32; 3],
}

// SAFETY: plain old data laid out as the kernels' `struct MvSets` / `struct MqSets`
// (#[repr(C)]: three 8-byte pointer arrays, then three int arrays; 84 bytes padded to 88 on
// both sides).
unsafe impl cudarc::driver::DeviceRepr for MvSets {}

impl MvSets {
    /// The sets of the first 3 `items`, with `rows_per_block` weight rows per block, and the
    /// launch's block count. Items 0 and 1 of 4096 and 1024 rows at 32 per block: ends 128, 160.
    pub fn of(items: &[MvItem], rows_per_block: usize) -> (MvSets, usize) {
        let mut sets = MvSets::default();
        let mut blocks = 0usize;
        for (i, it) in items.iter().take(3).enumerate() {
            blocks += it.rows.div_ceil(rows_per_block);
            sets.w[i] = it.w;
            sets.out[i] = it.out;
            sets.rows[i] = it.rows as i32;
            sets.row_bytes[i] = it.row_bytes as i32;
            sets.end[i] = blocks as i32;
        }
        for i in items.len().min(3)..3 {
            sets.end[i] = blocks as i32;
        }
        (sets, blocks)
    }
}

/// The kernel of a 9-to-64-token matmul (variant `batch`), if not the prefill path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKernel {
    /// mmq.cu: int8 mma (every format of `MMQ_FORMATS`).
    Mma,
    /// mmq.cu without the double buffer, two blocks per SM.
    MmaLb,
    /// matvec_q8.cu's MV_B8: dp4a in chunks of 8 tokens.
    Dp4a,
}

/// A rope on `x [n, n_heads, head_dim]` with positions at the device address `pos`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeItem {
    pub x: u64,
    pub pos: u64,
    pub n: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub p: RopeParams,
    /// Frequency factors (n_rot / 2 floats), if any.
    pub ff: Option<u64>,
}

/// `cache[pos0 * kv_dim ..][.. n * kv_dim] = src`, pos0 at the device address `pos0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvItem {
    pub src: u64,
    pub cache: u64,
    pub pos0: u64,
    pub n: usize,
    pub kv_dim: usize,
    /// Rows the cache holds.
    pub capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(rows: usize, w: u64) -> MvItem {
        MvItem {
            w,
            ty: GgmlType::Q4_0,
            rows,
            cols: 4096,
            row_bytes: 2304,
            x: 1,
            n: 1,
            out: 100 + w,
        }
    }

    #[test]
    fn sets_lay_blocks_end_to_end() {
        let (s, blocks) = MvSets::of(&[item(4096, 7), item(1024, 8)], 32);
        assert_eq!(blocks, 160);
        assert_eq!(s.end, [128, 160, 160]);
        assert_eq!(
            (s.w, s.out, s.rows),
            ([7, 8, 0], [107, 108, 0], [4096, 1024, 0])
        );
        // A partial last block counts; a fourth item is never launched.
        let four = [item(33, 1), item(1, 2), item(64, 3), item(9, 4)];
        let (s, blocks) = MvSets::of(&four, 32);
        assert_eq!((s.end, blocks), ([2, 3, 5], 5));
        assert_eq!(std::mem::size_of::<MvSets>(), 88);
    }

    #[test]
    fn items_join_only_on_a_shared_input() {
        let (a, b) = (item(4096, 7), item(1024, 8));
        assert!(a.joins(&b));
        assert!(!a.joins(&a), "the same weight and output twice");
        assert!(!a.joins(&MvItem { x: 2, ..b }));
        assert!(!a.joins(&MvItem { n: 2, ..b }));
        assert!(!a.joins(&MvItem {
            ty: GgmlType::Q8_0,
            ..b
        }));
    }
}
