//! `impl Backend for CudaBackend`: buffers are device f32 slices, weights device bytes in
//! their stored (or repacked, src/weight.rs) format. Every op is queued on the backend's one
//! stream; `download`, `argmax`, `sample_rows` and `synchronize` wait for it. Steps and their recordings:
//! src/step.rs. Inside a step, matvecs, ropes and KV writes may be held back until the next
//! call and merged (src/defer.rs); every other op first calls `plain_op`, which launches what
//! is held and forgets the q8 copies (src/q8.rs) of the buffers the op writes (allocations:
//! `plain_alloc`, which forgets them all).

use cudarc::driver::{CudaSlice, DevicePtr};
use plumb_core::HostWeight;
use plumb_ops::shapes;
use plumb_ops::{
    AttnParams, Backend, PagedParams, PagedSeq, Result, RopeParams, SampleRow, Sampled,
};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::weight::CudaWeight;

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Weight = CudaWeight;

    fn name(&self) -> &'static str {
        "cuda"
    }

    /// Quantized weights meet 8-bit activations in the decode and batch kernels, and the
    /// cuBLAS prefill rounds every activation to f16.
    fn precision(&self, _weights: plumb_core::GgmlType) -> plumb_ops::Precision {
        plumb_ops::Precision::EightBitActivations
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.plain_alloc()?;
        // A zero-length device allocation is not portable: keep at least one element.
        Ok(self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .ctx(|| format!("allocating {len} floats"))?)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        self.plain_alloc()?;
        if data.is_empty() {
            return self.alloc(0);
        }
        Ok(self
            .stream
            .clone_htod(data)
            .ctx(|| format!("uploading {} floats", data.len()))?)
    }

    fn download(&self, buf: &CudaSlice<f32>, out: &mut [f32]) -> Result<()> {
        self.plain_op(&[])?;
        shapes::download(buf.len(), out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        self.not_capturing("download")?;
        self.stream
            .memcpy_dtoh(&buf.slice(0..out.len()), out)
            .ctx(|| format!("downloading {} floats", out.len()))?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for the stream".into())?;
        Ok(())
    }

    fn upload_weight(&self, w: &HostWeight) -> Result<CudaWeight> {
        self.plain_alloc()?;
        self.upload_weight_impl(w)
    }

    fn copy(
        &self,
        src: &CudaSlice<f32>,
        src_off: usize,
        dst: &mut CudaSlice<f32>,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        self.plain_op(&[dst])?;
        shapes::copy(src.len(), src_off, dst.len(), dst_off, len)?;
        if len == 0 {
            return Ok(());
        }
        let s = src.slice(src_off..src_off + len);
        let mut d = dst.slice_mut(dst_off..dst_off + len);
        self.stream
            .memcpy_dtod(&s, &mut d)
            .ctx(|| format!("copying {len} floats"))?;
        Ok(())
    }

    fn embedding(&self, table: &CudaWeight, ids: &[u32], out: &mut CudaSlice<f32>) -> Result<()> {
        self.plain_op(&[out])?;
        self.embedding_impl(table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.norm_impl(None, x, w, eps, rows, dim, out)
    }

    fn add_rms_norm(
        &self,
        residual: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[residual, out])?;
        self.norm_impl(Some(residual), x, w, eps, rows, dim, out)
    }

    fn matmul(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.q8_forget(self.ptr(out));
        self.matmul_impl(w, x, n, out)
    }

    fn matmul_many(
        &self,
        x: &CudaSlice<f32>,
        n: usize,
        pairs: &mut [(&CudaWeight, &mut CudaSlice<f32>)],
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        // Hold the q8 matvecs back so that flush() merges those sharing x (defer.rs); the
        // buffers outlive the flush below, which runs whatever happens.
        self.plain_op(&[])?;
        self.grouping.store(true, Ordering::Relaxed);
        let run = pairs.iter_mut().try_for_each(|(w, out)| {
            self.q8_forget(self.ptr(out));
            self.matmul_impl(w, x, n, out)
        });
        self.grouping.store(false, Ordering::Relaxed);
        let flushed = self.flush();
        run.and(flushed)
    }

    fn add_bias(
        &self,
        x: &mut CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        self.plain_op(&[x])?;
        self.elementwise_impl("add_bias", x, bias, rows * dim, dim)
    }

    fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        self.q8_forget(self.ptr(x));
        self.rope_impl(x, positions, n_heads, head_dim, p, freq_factors)
    }

    fn attention(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        p: AttnParams,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.attention_impl(q, k, v, p, out)
    }

    fn swiglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.gated_impl("swiglu", gate, up, len, out)
    }

    fn geglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.gated_impl("geglu", gate, up, len, out)
    }

    fn gelu(&self, x: &CudaSlice<f32>, len: usize, out: &mut CudaSlice<f32>) -> Result<()> {
        self.plain_op(&[out])?;
        self.gelu_impl(x, len, out)
    }

    fn scale(&self, x: &mut CudaSlice<f32>, s: f32, len: usize) -> Result<()> {
        self.plain_op(&[x])?;
        self.scalar_op_impl("scale", x, s, len)
    }

    fn softcap(&self, x: &mut CudaSlice<f32>, cap: f32, len: usize) -> Result<()> {
        self.plain_op(&[x])?;
        self.scalar_op_impl("softcap", x, cap, len)
    }

    fn layer_norm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.layer_norm_impl(x, w, b, eps, rows, dim, out)
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        self.plain_op(&[x])?;
        self.elementwise_impl("add", x, y, len, 0)
    }

    fn argmax(&self, x: &CudaSlice<f32>, len: usize) -> Result<u32> {
        self.plain_op(&[])?;
        self.not_capturing("argmax")?;
        Ok(self.argmax_impl(x, 1, len)?[0])
    }

    fn argmax_rows(&self, x: &CudaSlice<f32>, rows: usize, len: usize) -> Result<Vec<u32>> {
        self.plain_op(&[])?;
        self.not_capturing("argmax")?;
        self.argmax_impl(x, rows, len)
    }

    fn sample_rows(
        &self,
        logits: &CudaSlice<f32>,
        vocab: usize,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<Sampled>> {
        self.plain_op(&[])?;
        self.not_capturing("sample_rows")?;
        self.sample_rows_impl(logits, vocab, rows)
    }

    fn synchronize(&self) -> Result<()> {
        self.plain_op(&[])?;
        self.not_capturing("synchronize")?;
        Ok(self
            .stream
            .synchronize()
            .ctx(|| "waiting for the stream".into())?)
    }

    fn kv_write(
        &self,
        src: &CudaSlice<f32>,
        cache: &mut CudaSlice<f32>,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        self.q8_forget(self.ptr(cache));
        self.kv_write_impl(src, cache, pos0, n, kv_dim)
    }

    fn kv_write_slots(
        &self,
        src: &CudaSlice<f32>,
        pool: &mut CudaSlice<f32>,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        self.plain_op(&[pool])?;
        self.kv_write_slots_impl(src, pool, slots, kv_dim)
    }

    fn attention_paged(
        &self,
        q: &CudaSlice<f32>,
        k_pool: &CudaSlice<f32>,
        v_pool: &CudaSlice<f32>,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.plain_op(&[out])?;
        self.attention_paged_impl(q, k_pool, v_pool, seqs, p, out)
    }

    fn begin_step(&self, tokens: &[u32], positions: &[u32]) -> Result<()> {
        self.begin_step_impl(tokens, positions)
    }

    fn end_step(&self) -> Result<()> {
        self.end_step_impl()
    }

    fn record_begin(&self, key: u64) -> Result<bool> {
        self.record_begin_impl(key)
    }

    fn record_end(&self, key: u64) -> Result<()> {
        self.record_end_impl(key)
    }

    fn replay(&self, key: u64) -> Result<bool> {
        self.replay_impl(key)
    }

    fn stage_paged(&self, slots: &[u32], seqs: &[PagedSeq<'_>], group: usize) -> Result<()> {
        self.plain_op(&[])?;
        self.stage_paged_impl(slots, seqs, group)
    }
}

impl CudaBackend {
    /// What every op that launches at once does first: the launches held back inside a step
    /// go out ahead of it (src/defer.rs), and the q8 copies of the buffers it `writes` are
    /// forgotten (src/q8.rs). Ops that may be held back (matmul, rope, kv_write) only forget.
    fn plain_op(&self, writes: &[&CudaSlice<f32>]) -> Result<()> {
        self.flush()?;
        for b in writes {
            self.q8_forget(self.ptr(b));
        }
        Ok(())
    }

    /// `plain_op` for a call that allocates: a new buffer may reuse a freed one's address, so
    /// every q8 copy is forgotten.
    fn plain_alloc(&self) -> Result<()> {
        self.flush()?;
        self.q8_forget_all();
        Ok(())
    }

    /// A buffer's device address: the key of its q8 copy (src/q8.rs).
    fn ptr(&self, b: &CudaSlice<f32>) -> u64 {
        b.device_ptr(&self.stream).0
    }
}
