//! Per-op timing against the memory roofline: each op runs on the shapes of a model, and its
//! bytes moved (weights + activations read and written) over its time is set against the
//! machine's measured read bandwidth.

use std::time::Instant;

use plumb_core::rng::Rng;
use plumb_core::HostWeight;
use plumb_gguf::GgufFile;
use plumb_model::ModelConfig;
use plumb_ops::{AttnParams, Backend, RopeParams};

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct OpTiming {
    pub op: String,
    pub shape: String,
    pub dtype: String,
    /// Median seconds per call.
    pub seconds: f64,
    pub bytes: f64,
    pub flops: f64,
}

impl OpTiming {
    pub fn gbps(&self) -> f64 {
        self.bytes / self.seconds / 1e9
    }
}

/// Median time of `reps` calls of `f` after two warm-up calls.
fn time<B: Backend>(b: &B, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    b.synchronize()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        b.synchronize()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Times the ops of one decode step (n = 1) and one prefill chunk of `n_prefill` tokens on the
/// shapes of the model in `file`, with the attention at context `ctx`.
pub fn bench_model_ops<B: Backend>(
    b: &B,
    file: &GgufFile,
    n_prefill: usize,
    ctx: usize,
    reps: usize,
) -> Result<Vec<OpTiming>> {
    let mut ob = OpBench {
        b,
        cfg: ModelConfig::from_gguf(file)?,
        reps,
        rng: Rng::new(7),
        out: Vec::new(),
    };
    for n in [1, n_prefill] {
        ob.matmuls(file, n)?;
    }
    ob.norm_and_swiglu(n_prefill)?;
    ob.rope_and_attention(n_prefill, ctx)?;
    Ok(ob.out)
}

/// The state of [`bench_model_ops`]: one random stream for every input, the timings so far.
struct OpBench<'a, B: Backend> {
    b: &'a B,
    cfg: ModelConfig,
    reps: usize,
    rng: Rng,
    out: Vec<OpTiming>,
}

impl<B: Backend> OpBench<'_, B> {
    /// Each distinct matrix times `n` rows, taken from every layer in turn so that repeated
    /// calls stream from memory rather than from a cache; plus the output head.
    fn matmuls(&mut self, file: &GgufFile, n: usize) -> Result<()> {
        let b = self.b;
        let head = if file.tensor("output.weight").is_some() {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let kinds = [
            "attn_q.weight",
            "attn_k.weight",
            "ffn_gate.weight",
            "ffn_down.weight",
            head,
        ];
        for kind in kinds {
            let names: Vec<String> = if kind == head {
                vec![head.to_string()]
            } else {
                (0..self.cfg.n_layers)
                    .map(|l| format!("blk.{l}.{kind}"))
                    .collect()
            };
            let host: Vec<HostWeight> = names
                .iter()
                .map(|nm| file.weight(nm))
                .collect::<std::result::Result<_, _>>()?;
            let ws: Vec<B::Weight> = host
                .iter()
                .map(|h| b.upload_weight(h))
                .collect::<std::result::Result<_, _>>()?;
            let hw = &host[0];
            let x = b.upload(&self.rng.normals(n * hw.cols, 1.0))?;
            let mut y = b.alloc(n * hw.rows)?;
            let s = time(b, self.reps, || {
                for w in &ws {
                    b.matmul(w, &x, n, &mut y)?;
                }
                Ok(())
            })? / ws.len() as f64;
            self.out.push(OpTiming {
                op: "matmul".into(),
                shape: format!(
                    "{} {}×{} n={n}",
                    names[0].replace("blk.0.", "blk.*."),
                    hw.rows,
                    hw.cols
                ),
                dtype: hw.ty.name().into(),
                seconds: s,
                bytes: (hw.data.len() + 4 * n * (hw.cols + hw.rows)) as f64,
                flops: 2.0 * (n * hw.rows * hw.cols) as f64,
            });
        }
        Ok(())
    }

    /// rms_norm and swiglu on 1 and on `n` rows.
    fn norm_and_swiglu(&mut self, n: usize) -> Result<()> {
        let (b, cfg, reps) = (self.b, &self.cfg, self.reps);
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let xs = b.upload(&self.rng.normals(n * ff, 1.0))?;
        let ys = b.upload(&self.rng.normals(n * ff, 1.0))?;
        let wn = b.upload(&self.rng.normals(d, 1.0))?;
        let mut o = b.alloc(n * ff)?;
        for rows in [1, n] {
            let s = time(b, reps, || {
                Ok(b.rms_norm(&xs, &wn, cfg.rms_eps, rows, d, &mut o)?)
            })?;
            self.out.push(OpTiming {
                op: "rms_norm".into(),
                shape: format!("{rows}×{d}"),
                dtype: "F32".into(),
                seconds: s,
                bytes: (8 * rows * d + 4 * d) as f64,
                flops: 3.0 * (rows * d) as f64,
            });
            let s = time(b, reps, || Ok(b.swiglu(&xs, &ys, rows * ff, &mut o)?))?;
            self.out.push(OpTiming {
                op: "swiglu".into(),
                shape: format!("{rows}×{ff}"),
                dtype: "F32".into(),
                seconds: s,
                bytes: (12 * rows * ff) as f64,
                flops: 6.0 * (rows * ff) as f64,
            });
        }
        Ok(())
    }

    /// RoPE on `n` tokens' queries at position `ctx`, then attention of one token at `ctx` and
    /// of `n` tokens from position 0 (a causal prefill).
    fn rope_and_attention(&mut self, n: usize, ctx: usize) -> Result<()> {
        let (b, cfg, reps) = (self.b, &self.cfg, self.reps);
        let rope = RopeParams {
            style: cfg.rope_style,
            theta: cfg.rope_theta,
            n_rot: cfg.n_rot,
        };
        let positions: Vec<u32> = (0..n as u32).map(|p| p + ctx as u32).collect();
        let mut q = b.upload(&self.rng.normals(n * cfg.q_dim(), 1.0))?;
        let s = time(b, reps, || {
            Ok(b.rope(&mut q, &positions, cfg.n_heads, cfg.head_dim, rope, None)?)
        })?;
        self.out.push(OpTiming {
            op: "rope".into(),
            shape: format!("{n}×{}×{}", cfg.n_heads, cfg.head_dim),
            dtype: "F32".into(),
            seconds: s,
            bytes: (8 * n * cfg.q_dim()) as f64,
            flops: 6.0 * (n * cfg.q_dim()) as f64,
        });
        let cap = ctx + n;
        let k = b.upload(&self.rng.normals(cap * cfg.kv_dim(), 1.0))?;
        let v = b.upload(&self.rng.normals(cap * cfg.kv_dim(), 1.0))?;
        let mut ao = b.alloc(n * cfg.q_dim())?;
        for (nt, pos0) in [(1, ctx), (n, 0)] {
            let p = AttnParams {
                n_tokens: nt,
                pos0,
                n_heads: cfg.n_heads,
                n_kv_heads: cfg.n_kv_heads,
                head_dim: cfg.head_dim,
                scale: 1.0 / (cfg.head_dim as f32).sqrt(),
                window: None,
            };
            let kv_read = (pos0 + nt) * cfg.kv_dim() * 8;
            let s = time(b, reps, || Ok(b.attention(&q, &k, &v, p, &mut ao)?))?;
            // Causal prefill touches about half the score matrix.
            let pairs = if nt == 1 {
                (pos0 + 1) as f64
            } else {
                (nt * (nt + 1) / 2) as f64
            };
            self.out.push(OpTiming {
                op: "attention".into(),
                shape: format!(
                    "{nt} tok at {pos0}, heads {}/{} × {}",
                    cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
                ),
                dtype: "F32".into(),
                seconds: s,
                bytes: (kv_read + 8 * nt * cfg.q_dim()) as f64,
                flops: 4.0 * pairs * (cfg.n_heads * cfg.head_dim) as f64,
            });
        }
        Ok(())
    }
}

/// Read bandwidth of host memory in bytes/s: every core sums its share of a 1 GiB buffer
/// (32× a large L3, so the caches do not help) with wide, independent accumulators; the best
/// of five passes.
pub fn host_read_bandwidth() -> f64 {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let words = (1usize << 30) / 8;
    let data: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = data
                .chunks(chunk)
                .map(|c| {
                    s.spawn(move || {
                        let mut acc = [0u64; 8];
                        for w in c.chunks_exact(8) {
                            for (a, x) in acc.iter_mut().zip(w) {
                                *a = a.wrapping_add(*x);
                            }
                        }
                        acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((words * 8) as f64 / t0.elapsed().as_secs_f64());
    }
    best
}

/// Copy bandwidth of a backend's own memory in bytes/s (bytes read plus bytes written), from
/// the best of five copies of a `mib` MiB buffer: the roofline of GPU backends.
pub fn backend_copy_bandwidth<B: Backend>(b: &B, mib: usize) -> Result<f64> {
    let len = (mib << 20) / 4;
    let src = b.upload(&vec![1.0f32; len])?;
    let mut dst = b.alloc(len)?;
    let s = time(b, 5, || Ok(b.copy(&src, 0, &mut dst, 0, len)?))?;
    Ok(2.0 * (len * 4) as f64 / s)
}
