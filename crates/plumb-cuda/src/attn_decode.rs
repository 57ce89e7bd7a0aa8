//! Launcher of kernels/attn_decode.cu: attention of one token, split over the keys, the splits
//! planned on the cache capacity (so a recorded decode step stays valid as the context grows)
//! and merged by the last block of each KV head; it also writes the q8_1 copy of its output.

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use plumb_ops::{AttnParams, OpError, Result};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{int, poisoned, window_arg};

/// Decode kernel: keys per split at least DEC_SPLIT, and at most DEC_MAX_SPLITS splits.
const DEC_SPLIT: usize = 32;
const DEC_MAX_SPLITS: usize = 256;

/// (n_splits, split_len) of the decode kernel for a cache of `capacity` positions: splits of
/// 32 keys (a multiple of 32), fewer and longer ones past 8192 positions. Capacity 640: 20 × 32.
pub(crate) fn plan_decode(capacity: usize) -> (usize, usize) {
    let split_len = capacity.div_ceil(DEC_MAX_SPLITS).div_ceil(DEC_SPLIT).max(1) * DEC_SPLIT;
    (capacity.div_ceil(split_len).max(1), split_len)
}

impl CudaBackend {
    /// One token: attn_decode.cu over a grid planned on the capacity.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_decode(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        p: AttnParams,
        out: &mut CudaSlice<f32>,
        pos0_ptr: u64,
        capacity: usize,
    ) -> Result<()> {
        let hd = p.head_dim;
        let (n_splits, split_len) = plan_decode(capacity);
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let g = &mut *guard;
        let part_len = if n_splits > 1 {
            n_splits * p.n_heads * (hd + 2)
        } else {
            1
        };
        let part = self.ensure_len(&mut g.dec_part, part_len)?;
        let part_ptr = part.device_ptr(&self.stream).0;
        let count = self.ensure_len(&mut g.dec_count, p.n_kv_heads)?;
        let count_ptr = count.device_ptr(&self.stream).0;
        let ints = [
            int(p.n_heads, "attention", "heads")?,
            int(p.n_kv_heads, "attention", "KV heads")?,
        ];
        let (split_len_i, n_splits_i) = (split_len as i32, n_splits as i32);
        let capacity_i = int(capacity, "attention", "capacity")?;
        let window_i = window_arg(p.window, "attention")?;
        let cfg = LaunchConfig {
            grid_dim: (p.n_kv_heads as u32, n_splits as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // The q8 copy of the output for the Wo matvec (src/q8.rs).
        let out_ptr = out.device_ptr(&self.stream).0;
        let q8 = self.q8_produce(out_ptr, 1, p.n_heads * hd);
        let (qs, ds) = q8.map(|p| (p.qs, p.ds)).unwrap_or((0, 0));
        let f = self.func("attn_decode.cu", None, &format!("attn_decode_hd{hd}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q)
            .arg(k)
            .arg(v)
            .arg(out)
            .arg(&part_ptr)
            .arg(&count_ptr)
            .arg(&pos0_ptr);
        b.arg(&ints[0]).arg(&ints[1]).arg(&p.scale);
        b.arg(&split_len_i)
            .arg(&n_splits_i)
            .arg(&capacity_i)
            .arg(&qs)
            .arg(&ds)
            .arg(&window_i);
        // SAFETY: q/out hold n_heads*hd floats and k/v capacity*kv_dim (checked by
        // attention_impl), G ≤ dec_max_g(hd) (the kernel's MG), hd ∈ {64, 128, 256}; part
        // holds n_kv_heads*n_splits*G*(hd+2) floats when n_splits > 1 (the only case the
        // kernel touches it) and count one zeroed
        // u32 per KV head, which the kernel leaves zeroed; pos0_ptr points at one u32; qs/ds
        // are null or a q8 slot of n_heads*hd values (hd a multiple of 32).
        unsafe { b.launch(cfg) }.ctx(|| "launching decode attention".into())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_plans() {
        assert_eq!(plan_decode(640), (20, 32));
        assert_eq!(plan_decode(1), (1, 32));
        assert_eq!(plan_decode(8192), (256, 32));
        assert_eq!(plan_decode(8193), (129, 64));
        for cap in [1, 31, 33, 4000, 131072] {
            let (s, len) = plan_decode(cap);
            assert!(
                s <= DEC_MAX_SPLITS && s * len >= cap && len % DEC_SPLIT == 0,
                "{cap}"
            );
        }
    }
}
