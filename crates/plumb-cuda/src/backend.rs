//! `impl Backend for CudaBackend`: buffers are device f32 slices, weights device bytes in
//! their stored format. Every op is queued on the backend's one stream; `download`,
//! `argmax` and `synchronize` wait for it.

use cudarc::driver::CudaSlice;
use plumb_core::HostWeight;
use plumb_ops::{AttnParams, Backend, Result, RopeParams};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::ops::ensure;
use crate::weight::CudaWeight;

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Weight = CudaWeight;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        // A zero-length device allocation is not portable: keep at least one element.
        Ok(self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .ctx(|| format!("allocating {len} floats"))?)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        if data.is_empty() {
            return self.alloc(0);
        }
        Ok(self
            .stream
            .clone_htod(data)
            .ctx(|| format!("uploading {} floats", data.len()))?)
    }

    fn download(&self, buf: &CudaSlice<f32>, out: &mut [f32]) -> Result<()> {
        ensure(out.len() <= buf.len(), "download", || {
            format!("{} > {}", out.len(), buf.len())
        })?;
        if out.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtoh(&buf.slice(0..out.len()), out)
            .ctx(|| format!("downloading {} floats", out.len()))?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for the stream".into())?;
        Ok(())
    }

    fn upload_weight(&self, w: &HostWeight) -> Result<CudaWeight> {
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
        ensure(
            src_off + len <= src.len() && dst_off + len <= dst.len(),
            "copy",
            || format!("range of {len} at {src_off} -> {dst_off} is out of bounds"),
        )?;
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
        self.norm_impl(Some(residual), x, w, eps, rows, dim, out)
    }

    fn matmul(
        &self,
        w: &CudaWeight,
        x: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.matmul_impl(w, x, n, out)
    }

    fn add_bias(
        &self,
        x: &mut CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
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
        self.attention_impl(q, k, v, p, out)
    }

    fn swiglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.swiglu_impl(gate, up, len, out)
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        self.elementwise_impl("add", x, y, len, 0)
    }

    fn argmax(&self, x: &CudaSlice<f32>, len: usize) -> Result<u32> {
        self.argmax_impl(x, len)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(self
            .stream
            .synchronize()
            .ctx(|| "waiting for the stream".into())?)
    }
}
