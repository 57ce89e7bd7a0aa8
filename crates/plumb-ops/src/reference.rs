//! The reference backend: every op is its frozen reference in `crate::ops`, buffers are host
//! vectors and weights stay in their stored bytes. Slow and obviously correct.

use plumb_core::HostWeight;

use crate::backend::{AttnParams, Backend, FullAttnParams, PagedParams, PagedSeq, RopeParams};
use crate::error::Result;
use crate::host::host_buffers;
use crate::ops;

/// Runs every op on its reference. `threads` lets the matmul spread weight rows over the
/// rayon pool (the per-row arithmetic is unchanged), which keeps whole-model runs bearable.
#[derive(Debug, Clone)]
pub struct ReferenceBackend {
    pub threads: bool,
}

impl Default for ReferenceBackend {
    fn default() -> Self {
        ReferenceBackend { threads: true }
    }
}

impl Backend for ReferenceBackend {
    type Buf = Vec<f32>;
    type Weight = HostWeight;

    fn name(&self) -> &'static str {
        "reference"
    }

    host_buffers!();

    fn upload_weight(&self, w: &HostWeight) -> Result<HostWeight> {
        Ok(w.clone())
    }

    fn embedding(&self, table: &HostWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        ops::embedding::reference(table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::rms_norm::reference(x, w, eps, rows, dim, out)
    }

    fn add_rms_norm(
        &self,
        residual: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::rms_norm::reference_add(residual, x, w, eps, rows, dim, out)
    }

    fn matmul(&self, w: &HostWeight, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        ops::matmul::reference(w, x, n, out, self.threads)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        ops::elementwise::add_bias(x, bias, rows, dim)
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&Vec<f32>>,
    ) -> Result<()> {
        ops::rope::reference(
            x,
            positions,
            n_heads,
            head_dim,
            p,
            freq_factors.map(|f| f.as_slice()),
        )
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: AttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::attention::reference(q, k, v, p, out)
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        ops::elementwise::swiglu(gate, up, len, out)
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        ops::elementwise::add(x, y, len)
    }

    fn geglu(&self, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        ops::elementwise::geglu(gate, up, len, out)
    }

    fn gelu(&self, x: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        ops::elementwise::gelu(x, len, out)
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32, len: usize) -> Result<()> {
        ops::elementwise::scale(x, s, len)
    }

    fn softcap(&self, x: &mut Vec<f32>, cap: f32, len: usize) -> Result<()> {
        ops::elementwise::softcap(x, cap, len)
    }

    fn layer_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::layer_norm::reference(x, w, b, eps, rows, dim, out)
    }

    fn attention_full(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: FullAttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::attention::full(q, k, v, p, out)
    }

    fn kv_write_slots(
        &self,
        src: &Vec<f32>,
        pool: &mut Vec<f32>,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        crate::host::kv_write_slots(src, pool, slots, kv_dim)
    }

    fn attention_paged(
        &self,
        q: &Vec<f32>,
        k_pool: &Vec<f32>,
        v_pool: &Vec<f32>,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::paged_attention::reference(q, k_pool, v_pool, seqs, p, out)
    }
}
