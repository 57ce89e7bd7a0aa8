//! Matmul dispatch: weight upload (repacking), activation quantization, and the split of
//! weight rows over the thread pool.

use plumb_core::{GgmlType, HostWeight};

use super::float::{self, FloatRows, OutPtr};
use super::layout::{repack, QFmt, QWeight};
use super::pool::split;
use super::{act, scalar, CpuBackend};
use crate::error::Result;
use crate::shapes;

/// A weight resident on the CPU backend, repacked for its kernels.
#[derive(Clone)]
pub struct CpuWeight {
    pub(crate) ty: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) kind: Kind,
}

#[derive(Clone)]
pub(crate) enum Kind {
    Quant(QWeight),
    F32(Vec<f32>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
    /// Formats without a kernel of their own (Q8_K): dequantized a row at a time.
    Raw(HostWeight),
}

impl std::fmt::Debug for CpuWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuWeight({} {}×{})", self.ty, self.rows, self.cols)
    }
}

impl CpuWeight {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held by this weight.
    pub fn size_bytes(&self) -> usize {
        match &self.kind {
            Kind::Quant(q) => q.data.len(),
            Kind::F32(v) => 4 * v.len(),
            Kind::F16(v) | Kind::BF16(v) => 2 * v.len(),
            Kind::Raw(h) => h.data.len(),
        }
    }

    pub(crate) fn upload(w: &HostWeight) -> Result<CpuWeight> {
        let b = w.data.as_slice();
        let halfs = || {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<u16>>()
        };
        let kind = match w.ty {
            GgmlType::F32 => Kind::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            GgmlType::F16 => Kind::F16(halfs()),
            GgmlType::BF16 => Kind::BF16(halfs()),
            ty => match QFmt::from_ggml(ty) {
                Some(fmt) => Kind::Quant(repack(w, fmt)?),
                None => Kind::Raw(w.clone()),
            },
        };
        Ok(CpuWeight {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            kind,
        })
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub(crate) fn dequant_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let c = self.cols;
        match &self.kind {
            Kind::Quant(q) => scalar::dequant_row(q, r, out),
            Kind::F32(v) => out.copy_from_slice(&v[r * c..(r + 1) * c]),
            Kind::F16(v) => {
                for (o, h) in out.iter_mut().zip(&v[r * c..(r + 1) * c]) {
                    *o = half::f16::from_bits(*h).to_f32();
                }
            }
            Kind::BF16(v) => {
                for (o, h) in out.iter_mut().zip(&v[r * c..(r + 1) * c]) {
                    *o = f32::from_bits((*h as u32) << 16);
                }
            }
            Kind::Raw(h) => h.dequantize_row(r, out)?,
        }
        Ok(())
    }
}

/// A raw pointer that may cross to pool threads; each thread writes disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: used only to hand disjoint output ranges to the pool's threads, which all finish
// before the owning borrow ends (`ThreadPool::run` returns after every share).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer. (A method, so that closures capture the `SendPtr`, not its field.)
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Chunks of rows per pool thread: more than one, so that a thread that starts late (a
/// busy machine) only delays its last chunk; few, since each claim moves a cache line.
pub(crate) const CHUNKS_PER_THREAD: usize = 2;

/// Below this many multiply-adds a matmul runs on the calling thread alone.
const PAR_MIN_MACS: usize = 1 << 15;

pub(crate) fn matmul(
    be: &CpuBackend,
    w: &CpuWeight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let (rows, cols) = (w.rows, w.cols);
    shapes::matmul((rows, cols), x.len(), n, out.len())?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    // Rows go to the pool in chunks (a few per thread, claimed dynamically).
    let chunks = if n * rows * cols < PAR_MIN_MACS {
        1
    } else {
        // Decode: one chunk per thread (each chunk starts with cold weight streams).
        let per = if n < 4 { 1 } else { CHUNKS_PER_THREAD };
        (per * be.pool.threads()).min(rows.div_ceil(8))
    };
    let call = Call {
        be,
        x,
        n,
        rows,
        cols,
        chunks,
        out: SendPtr(out.as_mut_ptr()),
    };
    match &w.kind {
        Kind::Quant(q) => call.quant(q),
        Kind::F32(_) | Kind::F16(_) | Kind::BF16(_) => call.float(&w.kind),
        Kind::Raw(h) => call.raw(h)?,
    }
    Ok(())
}

/// One matmul call, `out[t * rows + r] = W[r] · x[t]` for `t < n`, `r < rows`, whose shapes
/// were checked: `x` holds `n * cols` values and `out` (behind `out`) `n * rows`.
#[derive(Clone, Copy)]
struct Call<'a> {
    be: &'a CpuBackend,
    x: &'a [f32],
    n: usize,
    rows: usize,
    cols: usize,
    /// Chunks of weight rows shared out to the pool.
    chunks: usize,
    out: SendPtr<f32>,
}

impl Call<'_> {
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        self.be.pool.run(self.chunks, f)
    }

    /// Quantized weights: the activations quantized once for `q`, then the level's kernel on
    /// each chunk of rows.
    fn quant(&self, q: &QWeight) {
        let Call {
            be,
            x,
            n,
            rows,
            cols,
            ..
        } = *self;
        let mut buf = be.take_scratch();
        buf.reserve_len(n * q.act_bytes);
        let ab = q.act_bytes;
        let ap = SendPtr(buf.as_mut_slice().as_mut_ptr());
        let qchunks = if n >= 8 { self.chunks.min(n) } else { 1 };
        let quant = |c: usize| {
            for t in split(n, qchunks, c, 1) {
                // SAFETY: token `t`'s bytes lie inside the buffer (reserved above) and
                // each chunk quantizes different tokens.
                let dst = unsafe { std::slice::from_raw_parts_mut(ap.get().add(t * ab), ab) };
                act::quantize_token(be.level, &q.groups, &x[t * cols..(t + 1) * cols], dst);
            }
        };
        be.pool.run(qchunks, &quant);
        let act = buf.as_slice();
        self.run(&|c| {
            let r = split(rows, self.chunks, c, 8);
            if r.is_empty() {
                return;
            }
            match be.level {
                #[cfg(target_arch = "x86_64")]
                super::SimdLevel::Avx512 => {
                    // SAFETY: the level was detected (`CpuBackend::with_level`); `act` holds
                    // `n` tokens quantized for `q` in a 64-byte aligned buffer; `r` lies in
                    // `0..rows`; `out` holds `n * rows` values (checked by `matmul`) and this
                    // chunk alone writes rows `r`.
                    unsafe { super::x86_512::matmul_rows(q, act, n, r, self.out.get()) }
                }
                #[cfg(target_arch = "x86_64")]
                super::SimdLevel::Avx2 => {
                    // SAFETY: as for AVX-512, with the AVX2 level detected.
                    unsafe { super::x86_avx2::matmul_rows(q, act, n, r, self.out.get()) }
                }
                _ => scalar::matmul_rows(q, act, n, r, &mut |t, r, v| {
                    // SAFETY: `t < n`, `r < rows` (checked by `matmul`), and each chunk
                    // writes only its own rows.
                    unsafe { *self.out.get().add(t * rows + r) = v }
                }),
            }
        });
        be.put_scratch(buf);
    }

    /// F32, F16 and BF16 weights (`kind`), four rows at a time.
    fn float(&self, kind: &Kind) {
        let Call {
            x, n, rows, cols, ..
        } = *self;
        self.run(&|c| {
            let r = split(rows, self.chunks, c, 4);
            let (a, b) = (r.start * cols, r.end * cols);
            let fr = match kind {
                Kind::F32(v) => FloatRows::F32(&v[a..b]),
                Kind::F16(v) => FloatRows::F16(&v[a..b]),
                Kind::BF16(v) => FloatRows::BF16(&v[a..b]),
                _ => return,
            };
            let o = OutPtr {
                ptr: self.out.get(),
                stride: rows,
                row0: r.start,
            };
            // SAFETY: the level was detected; `o` addresses rows `r` (within `0..rows`) of
            // `out`, which holds `n * rows` values (checked by `matmul`) and whose rows `r`
            // this chunk alone writes.
            unsafe { float::matmul_rows(self.be.level, fr, cols, x, n, r.len(), o) }
        });
    }

    /// Formats without a kernel: each row dequantized, then as an F32 row.
    fn raw(&self, h: &HostWeight) -> Result<()> {
        let Call {
            x, n, rows, cols, ..
        } = *self;
        let err = std::sync::Mutex::new(None);
        self.run(&|c| {
            let mut row = vec![0f32; cols];
            for r in split(rows, self.chunks, c, 1) {
                if let Err(e) = h.dequantize_row(r, &mut row) {
                    *err.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return;
                }
                let o = OutPtr {
                    ptr: self.out.get(),
                    stride: rows,
                    row0: r,
                };
                let level = self.be.level;
                // SAFETY: as for the float kinds, for the single row `r`.
                unsafe { float::matmul_rows(level, FloatRows::F32(&row), cols, x, n, 1, o) }
            }
        });
        match err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
