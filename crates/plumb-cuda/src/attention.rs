//! The attention op over a contiguous KV cache: its checks, the kernel that takes a call
//! (variant `split_kv`: one token to src/attn_decode.rs, several to src/attn_prefill.rs where
//! that fills the GPU), and the launcher of kernels/attention.cu, the flash-style kernel split
//! over the keys (with a combine pass) when there are too few (token, KV head) tiles to fill the
//! GPU. pos0 is read on the device (the step's position inside a step, src/step.rs); a
//! one-token call plans its splits on the cache capacity, so a recorded decode step stays
//! valid as the context grows. Every kernel takes the sliding window (0: none).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::{AttnParams, OpError, Result};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{
    grid1, int, poisoned, pt_rows, shape, window_arg, DEC_MAX_G, PT_MAX_UNSPLIT_KEYS,
};

/// Keys per tile of attention.cu at head_dim 64 and 128 (FwdTile::BK there; 16 at 256): the
/// splits are multiples of it, so of every tile size.
const BK: usize = 32;

/// Query heads per KV head attn_decode.cu holds for head size `hd` (DecShape::MG there):
/// DEC_MAX_G, or 4 at 256, whose per-lane arrays are twice as long. Larger groups take the
/// flash kernel.
pub(crate) fn dec_max_g(hd: usize) -> usize {
    if hd == 256 {
        4
    } else {
        DEC_MAX_G
    }
}

/// The head sizes attention.cu, attn_decode.cu and attn_prefill.cu have kernels for.
pub(crate) const HEAD_DIMS: [usize; 3] = [64, 128, 256];

/// Rows (token, query head) per block of attention.cu's attn_fwd for head size `hd`
/// (FwdTile::ROWS): 16, or 8 at 256, whose tiles would not fit 48 KB of shared memory.
pub(crate) fn fwd_rows(hd: usize) -> usize {
    if hd == 256 {
        8
    } else {
        16
    }
}
/// A split never has fewer keys than this: below it the combine pass costs more than the
/// parallelism gains.
const MIN_SPLIT_KEYS: usize = 256;
const MAX_SPLITS: usize = 64;

/// (n_splits, split_len) for a call: enough blocks for ~2 per SM, splits of at least
/// MIN_SPLIT_KEYS keys, split_len a multiple of the key tile.
/// 1 token at position 4000, 8 KV heads, G = 4, 132 SMs: 8 blocks without splits; 33 wanted,
/// ≤ 16 by key count -> 16 splits of 256 keys.
pub(crate) fn plan_splits(n_keys: usize, base_blocks: usize, sm_count: usize) -> (usize, usize) {
    let wanted = (2 * sm_count).div_ceil(base_blocks.max(1));
    let by_keys = n_keys.div_ceil(MIN_SPLIT_KEYS);
    let splits = wanted.min(by_keys).clamp(1, MAX_SPLITS);
    let split_len = n_keys.div_ceil(splits).div_ceil(BK) * BK;
    (n_keys.div_ceil(split_len), split_len)
}

impl CudaBackend {
    pub(crate) fn attention_impl(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        p: AttnParams,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let AttnParams {
            n_tokens,
            pos0,
            n_heads,
            n_kv_heads,
            head_dim: hd,
            ..
        } = p;
        shapes::attention(q.len(), k.len(), v.len(), &p, out.len())?;
        let kv_dim = n_kv_heads * hd;
        let n_keys = pos0 + n_tokens;
        if !HEAD_DIMS.contains(&hd) {
            return Err(OpError::Unsupported {
                op: "attention",
                what: format!("head_dim {hd} (kernels exist for 64, 128 and 256)"),
            });
        }
        if n_tokens == 0 || n_heads == 0 {
            return Ok(());
        }
        int(n_keys * kv_dim, "attention", "cache elements")?;
        let group = n_heads / n_kv_heads;
        let capacity = k.len().min(v.len()) / kv_dim;
        let pos0_u32 = [u32::try_from(pos0).map_err(|_| shape("attention", "pos0".into()))?];
        let (pos0_ptr, _upload) = self.device_u32s(self.step_pos0(pos0), &pos0_u32, "pos0")?;
        if n_tokens == 1 && group <= dec_max_g(hd) && self.variant("attention") == Some("split_kv")
        {
            return self.attention_decode(q, k, v, p, out, pos0_ptr, capacity);
        }
        let prefill_tiles = (n_tokens * group).div_ceil(pt_rows(hd)) * n_kv_heads;
        if n_tokens > 1
            && self.variant("attention") == Some("split_kv")
            && (2 * prefill_tiles >= self.info().sm_count || n_keys <= PT_MAX_UNSPLIT_KEYS)
        {
            return self.attention_prefill(q, k, v, p, out, pos0_ptr, capacity);
        }
        self.attention_flash(q, k, v, p, out, pos0_ptr, capacity)
    }

    /// attention.cu's flash kernel (variant `flash_split`, and what `split_kv` leaves to it),
    /// split over the keys, with a combine pass, when its tiles alone do not fill the GPU.
    #[allow(clippy::too_many_arguments)]
    fn attention_flash(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        p: AttnParams,
        out: &mut CudaSlice<f32>,
        pos0_ptr: u64,
        capacity: usize,
    ) -> Result<()> {
        let AttnParams {
            n_tokens,
            pos0,
            n_heads,
            n_kv_heads,
            head_dim: hd,
            scale,
            window,
        } = p;
        let (group, n_keys) = (n_heads / n_kv_heads, pos0 + n_tokens);
        let row_tiles = (n_tokens * group).div_ceil(fwd_rows(hd));
        // One token: splits planned on the capacity, not on pos0 (a recorded step's grid).
        let plan_keys = if n_tokens == 1 { capacity } else { n_keys };
        let (n_splits, split_len) =
            plan_splits(plan_keys, row_tiles * n_kv_heads, self.info().sm_count);
        let n_rows = n_tokens * n_heads;
        let n_tokens_i = int(n_tokens, "attention", "tokens")?;
        let heads = [
            int(n_heads, "attention", "heads")?,
            int(n_kv_heads, "attention", "KV heads")?,
        ];
        let capacity_i = int(capacity, "attention", "capacity")?;
        let window_i = window_arg(window, "attention")?;
        let (split_len_i, n_splits_i) = (split_len as i32, n_splits as i32);
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let part_len = if n_splits > 1 {
            n_splits * n_rows * (hd + 2)
        } else {
            1
        };
        let part = self.ensure_len(&mut guard.part, part_len)?;
        let cfg = LaunchConfig {
            grid_dim: (row_tiles as u32, n_kv_heads as u32, n_splits as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.func("attention.cu", None, &format!("attn_fwd_hd{hd}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(&*out).arg(&*part);
        b.arg(&n_tokens_i)
            .arg(&pos0_ptr)
            .arg(&heads[0])
            .arg(&heads[1]);
        b.arg(&scale)
            .arg(&split_len_i)
            .arg(&n_splits_i)
            .arg(&capacity_i)
            .arg(&window_i);
        // SAFETY: q/out hold n_tokens*n_heads*hd floats, k/v (pos0+n_tokens)*kv_dim (checked;
        // the kernel also stops at `capacity` for a device pos0); pos0_ptr points at one u32;
        // part holds n_splits*n_rows*(hd+2) floats when n_splits > 1 (the only case the
        // kernel writes it); grid.y = n_kv_heads and grid.z = n_splits ≤ 64 are in range.
        unsafe { b.launch(cfg) }.ctx(|| "launching attention".into())?;
        if n_splits > 1 {
            let (n_rows_i, hd_i) = (int(n_rows, "attention", "rows")?, hd as i32);
            let f = self.func("attention.cu", None, "attn_combine")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&*part)
                .arg(out)
                .arg(&n_rows_i)
                .arg(&hd_i)
                .arg(&n_splits_i);
            // SAFETY: part was fully written by the forward kernel (every row of every split);
            // out holds n_rows*hd floats; one block of hd threads per row.
            unsafe { b.launch(grid1(n_rows, hd as u32, 0)) }
                .ctx(|| "launching attention combine".into())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_plans() {
        // Long decode on an H100: 16 splits of 256 keys.
        assert_eq!(plan_splits(4001, 8, 132), (16, 256));
        // Prefill with plenty of tiles: no split.
        assert_eq!(plan_splits(128, 3 * 24, 132), (1, 128));
        // Short context: one split whatever the block count.
        assert_eq!(plan_splits(38, 3, 132), (1, 64));
        // Splits always cover every key.
        for n in [1, 31, 32, 33, 255, 257, 1000, 40000] {
            let (s, len) = plan_splits(n, 1, 132);
            assert!(
                s * len >= n && (s - 1) * len < n && len % BK == 0,
                "{n}: {s} × {len}"
            );
        }
    }
}
