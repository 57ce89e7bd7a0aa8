//! Launcher of kernels/matvec_h.cu: the decode matvec (1 to 8 tokens) of F16 and BF16 weights,
//! f32 activations, 16-byte weight loads, up to 3 matrices sharing an input in one launch.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use plumb_core::GgmlType;
use plumb_ops::Result;

use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{MvItem, MvSets, MATVEC_MAX_N};

/// Rows per thread group of matvec_h (MH_R in the kernel).
const MH_R: usize = 4;

/// The kernel suffix of `ty` if matvec_h.cu has kernels for it.
fn h_suffix(ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::F16 => Some("f16"),
        GgmlType::BF16 => Some("bf16"),
        _ => None,
    }
}

/// Whether matvec_h.cu takes `n` tokens of a `ty` weight of `cols` columns whose input starts
/// at device address `x`: F16 / BF16, n ≤ 8, whole 16-byte units per row (cols % 8 == 0) and
/// x 16-byte aligned (its float4 loads; a row of x then starts at 32·k bytes past it).
pub(crate) fn takes_h(ty: GgmlType, n: usize, cols: usize, x: u64) -> bool {
    h_suffix(ty).is_some()
        && (1..=MATVEC_MAX_N).contains(&n)
        && cols.is_multiple_of(8)
        && x.is_multiple_of(16)
}

/// Threads per row group: the smallest power of two ≥ the row's 8-element units, from 32 to
/// 128 (576 columns: 72 units -> 128; 64 columns: 8 units -> 32).
fn threads_per_row(cols: usize) -> u32 {
    (cols / 8).next_power_of_two().clamp(32, 128) as u32
}

/// The launch shape of `blocks` blocks over the sets: (TPR, 128 / TPR) threads.
fn config(cols: usize, blocks: usize) -> LaunchConfig {
    let tpr = threads_per_row(cols);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (tpr, 128 / tpr, 1),
        shared_mem_bytes: 0,
    }
}

/// Weight rows per block.
fn rows_per_block(cols: usize) -> usize {
    MH_R * (128 / threads_per_row(cols) as usize)
}

impl CudaBackend {
    /// One launch of matvec_h over 1 to 3 items sharing x (`MvItem::joins`; each `takes_h`).
    pub(crate) fn matvec_h(&self, items: &[MvItem]) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let (n, cols) = (first.n, first.cols);
        let sfx = h_suffix(first.ty)
            .filter(|_| takes_h(first.ty, n, cols, first.x))
            .ok_or_else(|| {
                CudaError::Other(format!("matvec_h takes no {n} × {cols} {}", first.ty))
            })?;
        let (sets, blocks) = MvSets::of(items, rows_per_block(cols));
        let name = format!("matvec_h_n{n}_{sfx}");
        let f = self.func("matvec_h.cu", None, &name)?;
        let cols_i = cols as i32;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&first.x).arg(&cols_i);
        // SAFETY: each W holds rows*row_bytes bytes of F16 / BF16 (CudaWeight invariant:
        // 2·cols per row, in a 256-byte aligned allocation, so every 16-byte unit is aligned),
        // x holds n*cols floats from a 16-byte aligned address with cols % 8 == 0 (takes_h),
        // each out n*rows floats (checked by matmul_impl); the items share x, n, cols and
        // format (MvItem::joins); the kernel clamps the rows it reads and guards the rows it
        // writes.
        unsafe { b.launch(config(cols, blocks)) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_what_it_takes() {
        assert_eq!(threads_per_row(4096), 128);
        assert_eq!(threads_per_row(576), 128);
        assert_eq!(threads_per_row(64), 32);
        assert_eq!(threads_per_row(8), 32);
        // 128 threads per group: one group of 4 rows per block; 32: four groups, 16 rows.
        assert_eq!(rows_per_block(4096), 4);
        assert_eq!(rows_per_block(64), 16);
        let c = config(256, 7);
        assert_eq!((c.grid_dim, c.block_dim), ((7, 1, 1), (32, 4, 1)));
        assert!(takes_h(GgmlType::F16, 1, 4096, 0x1000));
        assert!(takes_h(GgmlType::BF16, 8, 8, 0x1010));
        assert!(!takes_h(GgmlType::F16, 9, 4096, 0x1000), "n > 8");
        assert!(!takes_h(GgmlType::F16, 0, 4096, 0x1000), "n = 0");
        assert!(!takes_h(GgmlType::F16, 1, 4100, 0x1000), "cols % 8");
        assert!(!takes_h(GgmlType::F16, 1, 4096, 0x1004), "x misaligned");
        assert!(!takes_h(GgmlType::F32, 1, 4096, 0x1000));
        assert!(!takes_h(GgmlType::Q4_0, 1, 4096, 0x1000));
    }
}
