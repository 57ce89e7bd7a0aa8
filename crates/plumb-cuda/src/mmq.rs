//! Launcher of kernels/mmq.cu: Q4_0 matmul of 9 to 64 tokens (variant `batch`), or 2 to 8
//! (variant `matvec=mma`), on int8 tensor cores, after x quantized into fragment order.

use cudarc::driver::{DevicePtr, PushKernelArg};
use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, poisoned, MvItem, MvSets};

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
        let (n_i, cols_i, nt_i) = (first.n as i32, first.cols as i32, nt as i32);
        let f = self.func("mmq.cu", None, "quantize_q8_frag")?;
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
        let name = format!("mmq_q4_0_{}nt{nt}", if lb { "lb_" } else { "" });
        let f = self.func("mmq.cu", None, &name)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&sets).arg(&xf).arg(&xd).arg(&cols_i).arg(&n_i);
        // SAFETY: each W holds rows*row_bytes bytes of repacked Q4_0 (CudaWeight invariant),
        // the q8 slot n*cols values written earlier on this stream, each out n*rows floats
        // (checked by matmul_impl); x̂ is in fragment order for nt tiles (written above,
        // in stream order); the items share x, cols and n (MvItem::joins);
        // 2 ≤ n ≤ 64 so nt ∈ 1..=8; the kernel clamps the rows and tokens it reads and
        // guards those it writes.
        unsafe { b.launch(grid1(blocks, 256, 0)) }.ctx(|| format!("launching {name}"))?;
        Ok(())
    }
}
