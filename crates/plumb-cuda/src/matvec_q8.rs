//! Launcher of kernels/matvec_q8.cu (v2 of the decode matvec, variant `q8_dp4a`): q8_1
//! activations, dp4a dots on weights repacked at upload (src/weight.rs), up to 3 matrices
//! sharing an input in one launch, and chunks of 8 tokens for 9 to 64 (variant `batch`).

use cudarc::driver::{LaunchConfig, PushKernelArg};
use plumb_core::GgmlType;
use plumb_ops::Result;

use crate::compile::{format_suffix, Q8_FORMATS};
use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{MvItem, MvSets, MATVEC_MAX_N};

/// Rows per thread group of matvec_q8 (MV_R in the kernel).
const MV_R: usize = 2;

/// Whether `ty` has a dp4a kernel in matvec_q8.cu (its PLUMB_Q8_FORMATS).
pub(crate) fn has_q8_kernel(ty: GgmlType) -> bool {
    format_suffix(ty).is_some_and(|s| Q8_FORMATS.contains(&s))
}

/// Threads per row group: the smallest power of two ≥ the row's 32-element units, from 32
/// to 128 (576 columns: 18 units -> 32; 4096: 128 units -> 128).
fn threads_per_row(cols: usize) -> u32 {
    (cols / 32).next_power_of_two().clamp(32, 128) as u32
}

impl CudaBackend {
    /// One launch of matvec_q8 over 1 to 3 items sharing x (`MvItem::joins`), after the q8
    /// activations of x (reused when its producer wrote them, else quantize_q8).
    pub(crate) fn matvec_q8(&self, items: &[MvItem]) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let (n, cols) = (first.n, first.cols);
        let len = n * cols;
        let (q8, stale) = self.q8_input(first.x, len)?;
        if stale {
            self.launch_quantize_q8(first.x, q8, len)?;
        }
        let tpr = threads_per_row(cols);
        let rows_per_block = MV_R * (128 / tpr as usize);
        let (sets, blocks) = MvSets::of(items, rows_per_block);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (tpr, 128 / tpr, 1),
            shared_mem_bytes: 0,
        };
        let sfx = format_suffix(first.ty)
            .ok_or_else(|| CudaError::Other(format!("no kernels for {}", first.ty)))?;
        let batched = n > MATVEC_MAX_N;
        let (name, cfg) = if batched {
            // ceil(n / 8) chunks of 8 tokens per row group, the chunk fastest (MV_B8).
            let mut cfg = cfg;
            cfg.grid_dim.0 *= n.div_ceil(MATVEC_MAX_N) as u32;
            (format!("matvec_q8_b8_{sfx}"), cfg)
        } else {
            (format!("matvec_q8_n{n}_{sfx}"), cfg)
        };
        let f = self.func("matvec_q8.cu", Some(sfx), &name)?;
        let (cols_i, n_i) = (cols as i32, n as i32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&q8.qs).arg(&q8.ds).arg(&cols_i);
        if batched {
            b.arg(&n_i);
        }
        // SAFETY: each W holds rows*row_bytes bytes in the layout quant.cuh gives the format
        // (CudaWeight invariant), cols % 32 == 0, the q8 slot holds n*cols values (written
        // above or by the producer, earlier on this stream), each out holds n*rows floats
        // (checked by matmul_impl); items share x and format (MvItem::joins); the kernel
        // clamps the rows it reads and guards the rows it writes.
        unsafe { b.launch(cfg) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }
}
