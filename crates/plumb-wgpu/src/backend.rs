//! `impl Backend for WgpuBackend`: buffers are device storage buffers of f32, weights device
//! words in their stored format (src/weight.rs). Every op is encoded into the pending command
//! encoder (src/encoder.rs) and submitted as it comes, or at the end of the step when one is
//! open; `download`, `argmax` and `synchronize` submit what is pending and wait.

use std::sync::Arc;

use plumb_core::{GgmlType, HostWeight};
use plumb_ops::{
    shapes, AttnParams, Backend, OpError, PagedParams, PagedSeq, Precision, Result, RopeParams,
};

use crate::buffer::{Part, WgpuBuf, WgpuWeight};
use crate::device::WgpuBackend;
use crate::weight::{pack, Format};

/// Buffers up to this many values keep a host copy from `upload` (src/buffer.rs).
const HOST_COPY_MAX: usize = 4096;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Backend for WgpuBackend {
    type Buf = WgpuBuf;
    type Weight = WgpuWeight;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    /// Quantized weights with shaders meet 8-bit activations in the matvec; everything else
    /// (float weights, the formats dequantized at upload, the tiled prefill, the KV cache) is
    /// f32.
    fn precision(&self, weights: GgmlType) -> Precision {
        if Format::of(weights).quantized() {
            Precision::EightBitActivations
        } else {
            Precision::Accurate
        }
    }

    fn alloc(&self, len: usize) -> Result<WgpuBuf> {
        let t = self.buffer((len as u64) * 4, STORAGE, "a buffer", None)?;
        Ok(WgpuBuf { t, len, host: None })
    }

    fn upload(&self, data: &[f32]) -> Result<WgpuBuf> {
        let bytes = f32_bytes(data);
        let t = self.buffer(bytes.len() as u64, STORAGE, "a buffer", Some(&bytes))?;
        let host = (data.len() <= HOST_COPY_MAX).then(|| Arc::from(data));
        Ok(WgpuBuf {
            t,
            len: data.len(),
            host,
        })
    }

    fn download(&self, buf: &WgpuBuf, out: &mut [f32]) -> Result<()> {
        shapes::download(buf.len, out.len())?;
        let raw = self.read(&buf.t.buf, (out.len() * 4) as u64)?;
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    fn upload_weight(&self, w: &HostWeight) -> Result<WgpuWeight> {
        let (format, words) = pack(w)?;
        let row_words = format.row_words(w.cols);
        let what = format!("weight {}", w.name);
        // Parts of as many whole rows as one buffer takes (one part unless the weight is
        // larger than the adapter binds).
        let part_rows = (self.weight_part_bytes / 4) as usize / row_words.max(1);
        if part_rows == 0 {
            return Err(OpError::Unsupported {
                op: "upload_weight",
                what: format!(
                    "{what}: one row of {} bytes is more than {} binds ({} bytes)",
                    row_words * 4,
                    self.info().name,
                    self.weight_part_bytes
                ),
            });
        }
        let mut parts = Vec::new();
        for row0 in (0..w.rows.max(1)).step_by(part_rows) {
            let rows = part_rows.min(w.rows - row0.min(w.rows));
            let part = &words[row0 * row_words..(row0 + rows) * row_words];
            let bytes: Vec<u8> = part.iter().flat_map(|x| x.to_le_bytes()).collect();
            let usage = wgpu::BufferUsages::STORAGE;
            let t = self.buffer(bytes.len() as u64, usage, &what, Some(&bytes))?;
            parts.push(Part { t, row0, rows });
        }
        Ok(WgpuWeight {
            parts,
            rows: w.rows,
            cols: w.cols,
            format,
            row_words,
            stored: w.ty,
        })
    }

    fn copy(
        &self,
        src: &WgpuBuf,
        src_off: usize,
        dst: &mut WgpuBuf,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        shapes::copy(src.len, src_off, dst.len, dst_off, len)?;
        if len == 0 {
            return Ok(());
        }
        dst.host = None;
        self.op(|p, _| {
            let (s, d, n) = (src_off as u64 * 4, dst_off as u64 * 4, len as u64 * 4);
            p.copy(&self.device, &src.t.buf, s, &dst.t.buf, d, n);
            Ok(())
        })
    }

    fn embedding(&self, table: &WgpuWeight, ids: &[u32], out: &mut WgpuBuf) -> Result<()> {
        self.embedding_impl(table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &WgpuBuf,
        w: &WgpuBuf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        self.norm_impl(None, x, w, eps, rows, dim, out)
    }

    fn add_rms_norm(
        &self,
        residual: &mut WgpuBuf,
        x: &WgpuBuf,
        w: &WgpuBuf,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        self.norm_impl(Some(residual), x, w, eps, rows, dim, out)
    }

    fn matmul(&self, w: &WgpuWeight, x: &WgpuBuf, n: usize, out: &mut WgpuBuf) -> Result<()> {
        self.matmul_impl(x, n, &mut [(w, out)])
    }

    fn matmul_many(
        &self,
        x: &WgpuBuf,
        n: usize,
        pairs: &mut [(&WgpuWeight, &mut WgpuBuf)],
    ) -> Result<()> {
        self.matmul_impl(x, n, pairs)
    }

    fn add_bias(&self, x: &mut WgpuBuf, bias: &WgpuBuf, rows: usize, dim: usize) -> Result<()> {
        self.add_bias_impl(x, bias, rows, dim)
    }

    fn rope(
        &self,
        x: &mut WgpuBuf,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&WgpuBuf>,
    ) -> Result<()> {
        self.rope_impl(x, positions, n_heads, head_dim, p, freq_factors)
    }

    fn attention(
        &self,
        q: &WgpuBuf,
        k: &WgpuBuf,
        v: &WgpuBuf,
        p: AttnParams,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        self.attention_impl(q, k, v, p, out)
    }

    fn swiglu(&self, gate: &WgpuBuf, up: &WgpuBuf, len: usize, out: &mut WgpuBuf) -> Result<()> {
        self.swiglu_impl(gate, up, len, out)
    }

    fn add(&self, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) -> Result<()> {
        self.add_impl(x, y, len)
    }

    fn geglu(&self, gate: &WgpuBuf, up: &WgpuBuf, len: usize, out: &mut WgpuBuf) -> Result<()> {
        self.geglu_impl(gate, up, len, out)
    }

    fn scale(&self, x: &mut WgpuBuf, s: f32, len: usize) -> Result<()> {
        self.scale_impl(x, s, len)
    }

    fn softcap(&self, x: &mut WgpuBuf, cap: f32, len: usize) -> Result<()> {
        self.softcap_impl(x, cap, len)
    }

    fn argmax(&self, x: &WgpuBuf, len: usize) -> Result<u32> {
        let ids = self.argmax_impl(x, 1, len)?;
        ids.first()
            .copied()
            .ok_or_else(|| OpError::Device("argmax returned no id".into()))
    }

    fn argmax_rows(&self, x: &WgpuBuf, rows: usize, len: usize) -> Result<Vec<u32>> {
        self.argmax_impl(x, rows, len)
    }

    fn synchronize(&self) -> Result<()> {
        self.op(|_, _| Ok(()))?;
        {
            let ctx = self.ctx();
            self.lock_pending().submit(&ctx)?;
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| OpError::Device(format!("waiting for the device: {e}")))?;
        self.check_errors()
    }

    fn kv_write_slots(
        &self,
        src: &WgpuBuf,
        pool: &mut WgpuBuf,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        self.kv_write_slots_impl(src, pool, slots, kv_dim)
    }

    fn attention_paged(
        &self,
        q: &WgpuBuf,
        k_pool: &WgpuBuf,
        v_pool: &WgpuBuf,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut WgpuBuf,
    ) -> Result<()> {
        self.attention_paged_impl(q, k_pool, v_pool, seqs, p, out)
    }

    fn begin_step(&self, _tokens: &[u32], _positions: &[u32]) -> Result<()> {
        self.lock_pending().in_step = true;
        Ok(())
    }

    fn end_step(&self) -> Result<()> {
        self.lock_pending().in_step = false;
        self.op(|_, _| Ok(()))
    }
}
