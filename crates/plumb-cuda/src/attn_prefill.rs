//! Launcher of kernels/attn_prefill.cu: attention of several tokens, register-tiled, one block
//! per 32 rows of a KV head (16 at head_dim 256), no key splits.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use plumb_ops::{AttnParams, Result};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{int, pt_rows, window_arg};

impl CudaBackend {
    /// Several tokens: attn_prefill.cu, one block per pt_rows(hd) rows of a KV head.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_prefill(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        p: AttnParams,
        out: &mut CudaSlice<f32>,
        pos0_ptr: u64,
        capacity: usize,
    ) -> Result<()> {
        let group = p.n_heads / p.n_kv_heads;
        let ints = [
            int(p.n_tokens, "attention", "tokens")?,
            int(p.n_heads, "attention", "heads")?,
            int(p.n_kv_heads, "attention", "KV heads")?,
            int(capacity, "attention", "capacity")?,
            window_arg(p.window, "attention")?,
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                (p.n_tokens * group).div_ceil(pt_rows(p.head_dim)) as u32,
                p.n_kv_heads as u32,
                1,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.func(
            "attn_prefill.cu",
            None,
            &format!("attn_prefill_hd{}", p.head_dim),
        )?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(out).arg(&ints[0]).arg(&pos0_ptr);
        b.arg(&ints[1])
            .arg(&ints[2])
            .arg(&p.scale)
            .arg(&ints[3])
            .arg(&ints[4]);
        // SAFETY: q/out hold n_tokens*n_heads*hd floats and k/v capacity*kv_dim (checked by
        // attention_impl), hd ∈ {64, 128, 256}; the kernel reads keys below min(pos0 + n_tokens,
        // capacity) only and writes the rows below n_tokens*G; pos0_ptr points at one u32.
        unsafe { b.launch(cfg) }.ctx(|| "launching prefill attention".into())?;
        Ok(())
    }
}
