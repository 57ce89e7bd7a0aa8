//! The optimized CPU backend.
//!
//! - Weights are repacked at upload (`layout.rs`): quantized formats into groups of 16 (or
//!   8, 4, 2, 1) blocks of 32 whose values fill whole 512-bit vectors, one block per dword
//!   lane, with the scales of a group stored after its values (same bytes as stored; K-quants
//!   +3%); float formats into host vectors.
//! - Matmuls quantize the activations once per op to 8 bits per block of 32 (Q8_0-like,
//!   with block sums for the min/offset terms) in the same interleaved order (`act.rs`), and
//!   run integer dot products: AVX-512 VNNI `vpdpbusd` (`x86_512.rs`), AVX2 `maddubs`
//!   (`x86_avx2.rs`) or portable code emulating the same 16 lanes (`scalar.rs`). Decode reads
//!   four weight rows per pass with a software prefetch; prefill tiles one row × 4 tokens.
//! - Weight rows (and tokens, heads, elements) are split into chunks that the calling thread
//!   and a persistent pool (`pool.rs`) claim dynamically; small ops stay on the caller.
//! - Attention (`attention.rs`) is an online softmax over blocks of 64 keys per (token, KV
//!   head) item with the group's query heads together, or per query head for decode, with
//!   the query and accumulators in registers for head sizes of 4 or 8 vectors.
//! - Norms, swiglu, argmax (`simd.rs`) and rope, add, layer_norm, geglu, gelu, scale,
//!   softcap (`mv.rs`, `gelu.rs`) are written once and compiled per level. Bidirectional
//!   attention is the trait's default over the causal kernel.
//!
//! - Batch invariance: a token's results are bitwise the same whatever shares the call (the
//!   number of tokens, its place, the thread count), so a greedy request gives the same
//!   tokens alone or in a batch. Every kernel of a level computes a (token, row) dot product
//!   with the same operations in the same order: decode and prefill differ only in how many
//!   rows or tokens they share loads across, and horizontal sums all use `reduce4`'s order;
//!   vector loops run their tails through the same vector code (`tests_batch.rs`).
//!
//! The SIMD level is detected once (`is_x86_feature_detected!`) and can be lowered with
//! [`CpuBackend::with_level`] (the tests force every level the machine has).
//!
//! Measured on the 2-core AMD EPYC (Zen 5, AVX-512), SmolLM2-135M Q4_1, `plumb bench`, 2
//! threads, on a shared machine (runs vary with other load): pp128 1600–2300 t/s, tg64
//! 350–510 t/s. Per op (best of runs, weights streamed from memory), n = 1: Q4_1 1536×576
//! 5.6 µs (~95 GB/s), 576×576 2.4 µs, 192×576 1.1 µs, Q8_0 49152×576 (the LM head) 194 µs
//! (~150 GB/s); one thread streams ~55 GB/s. n = 128, one thread: 140–190 GMAC/s.
//! `plumb bench-ops` times every op on a model's shapes.

mod act;
mod attention;
mod elementwise;
mod float;
mod gelu;
mod layout;
mod matmul;
mod mv;
mod natural;
pub mod pool;
mod scalar;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86_512;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_batch;
#[cfg(test)]
mod tests_ops;

use std::sync::Mutex;

use plumb_core::HostWeight;

use crate::backend::{AttnParams, Backend, PagedParams, PagedSeq, RopeParams, SampleRow, Sampled};
use crate::error::{OpError, Result};
use crate::host::host_buffers;
use crate::shapes;
pub use matmul::CpuWeight;
use pool::ThreadPool;

/// The instruction sets a kernel may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust, any target.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/VNNI (plus AVX2 + FMA + F16C).
    Avx512,
}

impl SimdLevel {
    /// The best level this machine supports.
    pub fn detect() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            if avx2 && avx512 {
                return SimdLevel::Avx512;
            }
            if avx2 {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Scalar
    }

    /// Every level this machine supports, lowest first.
    pub fn available() -> Vec<SimdLevel> {
        let best = SimdLevel::detect();
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|l| *l <= best)
            .collect()
    }
}

/// The optimized CPU backend: f32 host buffers, repacked weights, a persistent thread pool.
pub struct CpuBackend {
    pool: ThreadPool,
    level: SimdLevel,
    /// Reused buffers for quantized activations.
    scratch: Mutex<Vec<layout::ABuf>>,
    rope: elementwise::RopeLock,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CpuBackend({:?}, {} threads)",
            self.level,
            self.pool.threads()
        )
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// One thread per available core, the best SIMD level of this machine.
    pub fn new() -> CpuBackend {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(n)
    }

    /// `threads` threads in all (the caller included).
    pub fn with_threads(threads: usize) -> CpuBackend {
        CpuBackend {
            pool: ThreadPool::new(threads),
            level: SimdLevel::detect(),
            scratch: Mutex::new(Vec::new()),
            rope: Mutex::new(Default::default()),
        }
    }

    /// Uses `level` instead of the detected one; an error if this machine lacks it.
    pub fn with_level(mut self, level: SimdLevel) -> Result<CpuBackend> {
        if level > SimdLevel::detect() {
            return Err(OpError::Unsupported {
                op: "CpuBackend",
                what: format!("{level:?} on this machine"),
            });
        }
        self.level = level;
        Ok(self)
    }

    pub fn level(&self) -> SimdLevel {
        self.level
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn take_scratch(&self) -> layout::ABuf {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        s.pop().unwrap_or_else(|| layout::ABuf::zeroed(0))
    }

    fn put_scratch(&self, b: layout::ABuf) {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < 8 {
            s.push(b);
        }
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;

    fn name(&self) -> &'static str {
        "cpu"
    }

    /// Quantized weights meet activations quantized to 8 bits per block.
    fn precision(&self, weights: plumb_core::GgmlType) -> crate::Precision {
        if weights.is_quantized() {
            crate::Precision::EightBitActivations
        } else {
            crate::Precision::Accurate
        }
    }

    host_buffers!();

    fn upload_weight(&self, w: &HostWeight) -> Result<CpuWeight> {
        CpuWeight::upload(w)
    }

    fn embedding(&self, table: &CpuWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        shapes::embedding((table.rows, table.cols), ids, out.len())?;
        let dim = table.cols;
        let op = matmul::SendPtr(out.as_mut_ptr());
        let err = Mutex::new(None);
        self.par_ranges(ids.len(), 1, ids.len() * dim * 8, &|r| {
            for t in r {
                // SAFETY: row `t` lies within `out` (checked above) and belongs to this
                // share alone.
                let o = unsafe { std::slice::from_raw_parts_mut(op.get().add(t * dim), dim) };
                if let Err(e) = table.dequant_row(ids[t] as usize, o) {
                    *err.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            }
        });
        match err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
        elementwise::rms_norm(self, x, w, eps, rows, dim, out)
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
        elementwise::add_rms_norm(self, residual, x, w, eps, rows, dim, out)
    }

    fn matmul(&self, w: &CpuWeight, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        matmul::matmul(self, w, x, n, out)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        elementwise::add_bias(self, x, bias, rows, dim)
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
        elementwise::rope(
            self,
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
        attention::attention(self, q, k, v, p, out)
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

    /// Gathers each sequence's blocks (whole blocks at a time) into a contiguous scratch cache
    /// and runs the blocked attention kernel on it: the KV rows are read twice, but every
    /// sequence gets the same kernel as a contiguous cache (and so the same bits).
    fn attention_paged(
        &self,
        q: &Vec<f32>,
        k_pool: &Vec<f32>,
        v_pool: &Vec<f32>,
        seqs: &[PagedSeq<'_>],
        p: PagedParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        shapes::attention_paged(q.len(), k_pool.len(), v_pool.len(), seqs, &p, out.len())?;
        let (kv_dim, q_dim, bs) = (
            p.n_kv_heads * p.head_dim,
            p.n_heads * p.head_dim,
            p.block_size,
        );
        let (mut k, mut v, mut qs, mut os) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in seqs {
            let n_kv = s.pos0 + s.n_tokens;
            k.resize(n_kv * kv_dim, 0.0);
            v.resize(n_kv * kv_dim, 0.0);
            for (i, &blk) in s.blocks.iter().enumerate() {
                let start = i * bs;
                if start >= n_kv {
                    break;
                }
                let rows = bs.min(n_kv - start) * kv_dim;
                // The used part of each block lies inside both pools (checked above).
                let from = blk as usize * bs * kv_dim;
                k[start * kv_dim..start * kv_dim + rows].copy_from_slice(&k_pool[from..][..rows]);
                v[start * kv_dim..start * kv_dim + rows].copy_from_slice(&v_pool[from..][..rows]);
            }
            let rows = s.q_row * q_dim..(s.q_row + s.n_tokens) * q_dim;
            qs.clear();
            qs.extend_from_slice(&q[rows.clone()]);
            os.resize(s.n_tokens * q_dim, 0.0);
            attention::attention(self, &qs, &k, &v, p.seq_attn(s), &mut os)?;
            out[rows].copy_from_slice(&os);
        }
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        elementwise::swiglu(self, gate, up, len, out)
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        elementwise::add(self, x, y, len)
    }

    fn geglu(&self, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        gelu::geglu(self, gate, up, len, out)
    }

    fn gelu(&self, x: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        gelu::gelu(self, x, len, out)
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32, len: usize) -> Result<()> {
        gelu::scale(self, x, s, len)
    }

    fn softcap(&self, x: &mut Vec<f32>, cap: f32, len: usize) -> Result<()> {
        gelu::softcap(self, x, cap, len)
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
        elementwise::layer_norm(self, x, w, b, eps, rows, dim, out)
    }

    fn argmax(&self, x: &Vec<f32>, len: usize) -> Result<u32> {
        elementwise::argmax(self, x, len)
    }

    /// The reference's draws (`ops::sample`), a row per pool task, each on its own copy of
    /// its row: the same tokens as the reference whatever the threads.
    fn sample_rows(
        &self,
        logits: &Vec<f32>,
        vocab: usize,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<Sampled>> {
        shapes::sample_rows(logits.len(), vocab, rows)?;
        let out: Vec<Mutex<Option<Sampled>>> = rows.iter().map(|_| Mutex::new(None)).collect();
        self.pool.run(rows.len(), &|r| {
            let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
            let s = crate::ops::sample::sample_row(&mut row, &rows[r]);
            if let Ok(mut o) = out[r].lock() {
                *o = Some(s);
            }
        });
        out.into_iter()
            .map(|m| m.into_inner().ok().flatten())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| OpError::Unsupported {
                op: "sample_rows",
                what: "a row whose draw failed".into(),
            })
    }

    fn argmax_rows(&self, x: &Vec<f32>, rows: usize, len: usize) -> Result<Vec<u32>> {
        shapes::argmax(x.len(), rows, len)?;
        if len == 0 {
            return Ok(vec![0; rows]);
        }
        x.chunks(len)
            .take(rows)
            .map(|row| elementwise::argmax(self, row, len))
            .collect()
    }
}
