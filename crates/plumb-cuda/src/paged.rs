//! Launcher of kernels/paged.cu, the paged KV cache (plumb_ops::ops::paged_attention):
//! `kv_write_slots` and `attention_paged`, each one launch per call. The slots,
//! and the work items with the block tables, are uploaded once per call into persistent
//! device buffers (grown, never shrunk), so a call allocates nothing once warm.

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::{OpError, PagedParams, PagedSeq, Result};

use crate::attention::{fwd_rows, HEAD_DIMS};
use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, int, poisoned, window_arg};

/// Rows (token, query head) per work item: ROWS in paged.cu.
const ROWS: usize = 16;
/// u32 words per work item: PG_ITEM in paged.cu.
const PG_ITEM: usize = 5;

/// attn_paged's meta words: items of (q_row, n_tokens, pos0, table offset, rho0), then the
/// block tables. Two sequences, G = 4: a 1-token one is 1 item, a 5-token one 2 (20 rows).
pub(crate) fn paged_meta(seqs: &[PagedSeq<'_>], group: usize) -> (Vec<u32>, usize) {
    let n_items: usize = seqs
        .iter()
        .map(|s| (s.n_tokens * group).div_ceil(ROWS))
        .sum();
    let mut meta = Vec::with_capacity(n_items * PG_ITEM);
    let mut tab_off = n_items * PG_ITEM;
    for s in seqs {
        for rho0 in (0..s.n_tokens * group).step_by(ROWS) {
            meta.extend_from_slice(&[
                s.q_row as u32,
                s.n_tokens as u32,
                s.pos0 as u32,
                tab_off as u32,
                rho0 as u32,
            ]);
        }
        tab_off += s.blocks.len();
    }
    for s in seqs {
        meta.extend_from_slice(s.blocks);
    }
    (meta, n_items)
}

/// Key splits of attn_paged for `blocks` (item, KV head) pairs on `sms` multiprocessors:
/// enough to give every multiprocessor two blocks, at most 16; 1 once the pairs alone do.
/// Depends on the batch only, never on lengths, so a recorded step keeps its grid.
pub(crate) fn paged_splits(blocks: usize, sms: usize) -> usize {
    (2 * sms).div_ceil(blocks.max(1)).clamp(1, 16)
}

/// The persistent u32 buffers [`CudaBackend::upload_u32s`] fills.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Upload {
    Slots,
    PagedMeta,
    /// src/sample.rs's row records, histories and masks.
    SampleMeta,
}

impl CudaBackend {
    /// Copies `vals` into the persistent buffer `which` and returns its device address.
    /// Every layer of a forward passes the same slots and tables, so a call whose values
    /// equal the last upload's reuses it (the buffer is written only here, in stream order).
    /// While recording only such a reuse is allowed: the host copy is not part of the graph,
    /// so the values must have been staged before the step (`stage_paged`), as they are again
    /// before each replay.
    pub(crate) fn upload_u32s(&self, which: Upload, vals: &[u32], what: &str) -> Result<u64> {
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let g = &mut *guard;
        let (slot, last) = match which {
            Upload::Slots => (&mut g.slots, &mut g.slots_host),
            Upload::PagedMeta => (&mut g.paged_meta, &mut g.paged_meta_host),
            Upload::SampleMeta => (&mut g.sample_meta, &mut g.sample_meta_host),
        };
        if let Some(buf) = slot.as_ref() {
            if last.as_slice() == vals && buf.len() >= vals.len() {
                return Ok(buf.device_ptr(&self.stream).0);
            }
        }
        self.not_capturing(what)?;
        last.clear();
        // Grow by doubling so that a growing batch does not reallocate every call.
        let want = vals.len().max(1);
        if slot.as_ref().is_none_or(|s| s.len() < want) {
            let len = want.next_power_of_two().max(256);
            self.ensure_len(slot, len)?;
        }
        let buf: &mut CudaSlice<u32> = slot.as_mut().expect("ensured above");
        if !vals.is_empty() {
            let mut dst = buf.slice_mut(0..vals.len());
            self.stream
                .memcpy_htod(vals, &mut dst)
                .ctx(|| format!("uploading {what}"))?;
        }
        last.extend_from_slice(vals);
        let ptr = buf.device_ptr(&self.stream).0;
        Ok(ptr)
    }

    /// Copies a paged step's slots and attention tables to the device ahead of its ops
    /// (`Backend::stage_paged`), so that `kv_write_slots_impl` and `attention_paged_impl`
    /// of the step find them there, recorded or not.
    pub(crate) fn stage_paged_impl(
        &self,
        slots: &[u32],
        seqs: &[PagedSeq<'_>],
        group: usize,
    ) -> Result<()> {
        if group == 0 {
            return Err(OpError::Shape {
                op: "stage_paged",
                msg: "zero query heads per KV head".into(),
            });
        }
        self.upload_u32s(Upload::Slots, slots, "KV slots")?;
        let (meta, _) = paged_meta(seqs, group);
        int(meta.len(), "stage_paged", "meta words")?;
        self.upload_u32s(Upload::PagedMeta, &meta, "paged attention tables")?;
        Ok(())
    }

    pub(crate) fn kv_write_slots_impl(
        &self,
        src: &CudaSlice<f32>,
        pool: &mut CudaSlice<f32>,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        shapes::kv_write_slots(src.len(), pool.len(), slots, kv_dim)?;
        let n = slots.len();
        if n == 0 || kv_dim == 0 {
            return Ok(());
        }
        if !kv_dim.is_multiple_of(4) {
            // One copy per row at addresses of this call: a recording would replay them.
            self.not_capturing("copying KV rows one by one")?;
            for (i, &slot) in slots.iter().enumerate() {
                let s = src.slice(i * kv_dim..(i + 1) * kv_dim);
                let mut d = pool.slice_mut(slot as usize * kv_dim..(slot as usize + 1) * kv_dim);
                self.stream
                    .memcpy_dtod(&s, &mut d)
                    .ctx(|| "copying a KV row".into())?;
            }
            return Ok(());
        }
        let slots_ptr = self.upload_u32s(Upload::Slots, slots, "KV slots")?;
        let (n_i, kv_i) = (
            int(n, "kv_write_slots", "rows")?,
            int(kv_dim, "kv_write_slots", "kv_dim")?,
        );
        int(n * kv_dim, "kv_write_slots", "elements")?;
        let total = n * kv_dim / 4;
        let f = self.func("paged.cu", None, "kv_write_slots")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(src).arg(&*pool).arg(&slots_ptr).arg(&n_i).arg(&kv_i);
        // SAFETY: src holds n*kv_dim floats, every slot < pool.len()/kv_dim (checked), the
        // slots buffer holds the n slots (copied above, in stream order), kv_dim % 4 == 0 and
        // both buffers are 16-byte aligned allocations; the kernel is grid-stride.
        unsafe { b.launch(grid1(total.div_ceil(256).min(4096), 256, 0)) }
            .ctx(|| "launching kv_write_slots".into())?;
        Ok(())
    }

    pub(crate) fn attention_paged_impl(
        &self,
        q: &CudaSlice<f32>,
        k_pool: &CudaSlice<f32>,
        v_pool: &CudaSlice<f32>,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let PagedParams {
            n_heads,
            n_kv_heads,
            head_dim: hd,
            scale,
            block_size,
            window,
        } = p;
        shapes::attention_paged(q.len(), k_pool.len(), v_pool.len(), seqs, &p, out.len())?;
        if !HEAD_DIMS.contains(&hd) {
            return Err(OpError::Unsupported {
                op: "attention_paged",
                what: format!("head_dim {hd} (kernels exist for 64, 128 and 256)"),
            });
        }
        let (kv_dim, group) = (n_kv_heads * hd, n_heads / n_kv_heads);
        let pool_slots = k_pool.len().min(v_pool.len()) / kv_dim;
        int(pool_slots * kv_dim, "attention_paged", "pool elements")?;
        let (meta, n_items) = paged_meta(seqs, group);
        if n_items == 0 {
            return Ok(());
        }
        int(meta.len(), "attention_paged", "meta words")?;
        let meta_ptr = self.upload_u32s(Upload::PagedMeta, &meta, "paged attention tables")?;
        let ints = [
            int(n_heads, "attention_paged", "heads")?,
            int(n_kv_heads, "attention_paged", "KV heads")?,
            int(block_size, "attention_paged", "block size")?,
            window_arg(window, "attention_paged")?,
        ];
        // Head dim 256: an item's ROWS rows take ROWS / fwd_rows(hd) blocks (grid.z), keys
        // unsplit; 64 and 128: grid.z = the key splits.
        let row_blocks = ROWS / fwd_rows(hd);
        let n_split = if row_blocks > 1 {
            1
        } else {
            paged_splits(n_items * n_kv_heads, self.info().sm_count)
        };
        let part_len = if n_split > 1 {
            n_items * n_kv_heads * n_split * ROWS * (hd + 2)
        } else {
            1
        };
        int(part_len, "attention_paged", "split partials")?;
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let part = self.ensure_len(&mut guard.paged_part, part_len)?;
        let cfg = LaunchConfig {
            grid_dim: (
                n_items as u32,
                n_kv_heads as u32,
                (row_blocks * n_split) as u32,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.func("paged.cu", None, &format!("attn_paged_hd{hd}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q)
            .arg(k_pool)
            .arg(v_pool)
            .arg(&*out)
            .arg(&*part)
            .arg(&meta_ptr);
        b.arg(&ints[0])
            .arg(&ints[1])
            .arg(&scale)
            .arg(&ints[2])
            .arg(&ints[3]);
        // SAFETY: every sequence's q/out rows are in bounds and every slot it reads (positions
        // below pos0 + n_tokens through its first blocks) is inside both pools (checked
        // above); meta holds n_items items and the tables they point at (copied above, in
        // stream order); hd ∈ {64, 128, 256}; grid.y = n_kv_heads, grid.z the blocks of an
        // item (blocks past an item's last row return at once) or its key splits; part holds
        // n_items · n_kv_heads · n_split · ROWS · (hd + 2) floats when n_split > 1 (the only
        // case the kernel writes it).
        unsafe { b.launch(cfg) }.ctx(|| "launching paged attention".into())?;
        if n_split > 1 {
            let n_split_i = n_split as i32;
            let f = self.func("paged.cu", None, &format!("attn_paged_merge_hd{hd}"))?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&*part).arg(&*out).arg(&meta_ptr);
            b.arg(&ints[0]).arg(&ints[1]).arg(&n_split_i);
            let cfg = LaunchConfig {
                grid_dim: (n_items as u32, n_kv_heads as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: part holds every (item, KV head, split, row) partial the launch above
            // wrote, in stream order; out and meta as above; grid = (n_items, n_kv_heads).
            unsafe { b.launch(cfg) }.ctx(|| "launching the paged attention merge".into())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_gpu_and_stop_at_sixteen() {
        // One sequence of an 8-KV-head model on 132 SMs: 8 pairs, 16 splits (128 blocks).
        assert_eq!(paged_splits(8, 132), 16);
        assert_eq!(paged_splits(16 * 8, 132), 3);
        assert_eq!(paged_splits(64 * 8, 132), 1);
        assert_eq!(paged_splits(0, 132), 16);
    }

    #[test]
    fn meta_layout() {
        let (b0, b1) = ([7u32], [2u32, 9]);
        let seqs = [
            PagedSeq {
                q_row: 0,
                n_tokens: 1,
                pos0: 5,
                blocks: &b0,
            },
            PagedSeq {
                q_row: 1,
                n_tokens: 5,
                pos0: 12,
                blocks: &b1,
            },
        ];
        let (m, n) = paged_meta(&seqs, 4);
        assert_eq!(n, 3);
        assert_eq!(
            &m[..15],
            &[0, 1, 5, 15, 0, 1, 5, 12, 16, 0, 1, 5, 12, 16, 16]
        );
        assert_eq!(&m[15..], &[7, 2, 9]);
    }
}
