//! Launcher of kernels/sample.cu (plumb_ops::ops::sample): `sample_rows`, one block per row,
//! one launch per call. The rows' records, histories and masks go up as one packed upload
//! into a persistent buffer (src/paged.rs's `upload_u32s`), the ids and asked logprobs come
//! back in one small copy; every device buffer is kept and grown, so a warm call allocates
//! nothing on the device.

use cudarc::driver::{CudaSlice, PushKernelArg};
use plumb_ops::{shapes, OpError, Result, SampleRow, Sampled, MAX_TOP_LOGPROBS};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, poisoned, shape};
use crate::paged::Upload;

/// u32 words of a row's record (ROW_WORDS in sample.cu; the R_* order).
const ROW_WORDS: usize = 16;
/// u32 words of a row's result: id, logprob bits, n, then n (id, logprob bits) pairs.
const OUT_WORDS: usize = 3 + 2 * MAX_TOP_LOGPROBS;
/// "No logprobs" and "no mask" in a record.
const NONE: u32 = u32::MAX;
/// The largest vocabulary: sample.cu sums weights of at most 2⁴⁰ each in 64 bits.
const MAX_VOCAB: usize = 1 << 23;

/// sample.cu's meta words: one record per row, then each row's history, mask and biases
/// (token, f32 bits), which the record points at. Two rows of vocab 40, the second with history [7, 7] and a 2-word mask:
/// records at 0 and 16, the history at 32..34, the mask at 34..36.
pub(crate) fn sample_meta(rows: &[SampleRow<'_>], vocab: usize) -> Result<Vec<u32>> {
    let words = vocab.div_ceil(32);
    let extra: usize = rows
        .iter()
        .map(|r| r.history.len() + r.mask.map_or(0, |_| words) + 2 * r.bias.len())
        .sum();
    let len = rows.len() * ROW_WORDS + extra;
    if len >= NONE as usize {
        return Err(shape(
            "sample_rows",
            format!("{len} words of rows exceed 32-bit offsets"),
        ));
    }
    let mut meta = vec![0u32; rows.len() * ROW_WORDS];
    meta.reserve(extra);
    for (r, row) in rows.iter().enumerate() {
        let p = &row.params;
        let u = row.u.to_bits();
        let hist = meta.len() as u32;
        meta.extend_from_slice(row.history);
        let mask = match row.mask {
            Some(m) => {
                let at = meta.len() as u32;
                meta.extend_from_slice(&m[..words]);
                at
            }
            None => NONE,
        };
        let bias = meta.len() as u32;
        for &(t, b) in row.bias {
            meta.extend_from_slice(&[t, b.to_bits()]);
        }
        let rec = [
            p.temperature.to_bits(),
            p.top_k.min(vocab) as u32,
            p.top_p.to_bits(),
            p.min_p.to_bits(),
            p.repetition_penalty.to_bits(),
            p.presence_penalty.to_bits(),
            p.frequency_penalty.to_bits(),
            p.top_logprobs.map_or(NONE, |n| n as u32),
            u as u32,
            (u >> 32) as u32,
            hist,
            row.history.len() as u32,
            mask,
            bias,
            row.bias.len() as u32,
        ];
        meta[r * ROW_WORDS..r * ROW_WORDS + rec.len()].copy_from_slice(&rec);
    }
    Ok(meta)
}

/// The rows' results from sample.cu's output words.
pub(crate) fn sampled(out: &[u32], rows: &[SampleRow<'_>]) -> Vec<Sampled> {
    rows.iter()
        .zip(out.chunks(OUT_WORDS))
        .map(|(row, o)| match row.params.top_logprobs {
            None => Sampled {
                id: o[0],
                logprob: None,
                top: Vec::new(),
            },
            Some(_) => Sampled {
                id: o[0],
                logprob: Some(f32::from_bits(o[1])),
                top: (0..(o[2] as usize).min(MAX_TOP_LOGPROBS))
                    .map(|j| (o[3 + 2 * j], f32::from_bits(o[4 + 2 * j])))
                    .collect(),
            },
        })
        .collect()
}

impl CudaBackend {
    pub(crate) fn sample_rows_impl(
        &self,
        logits: &CudaSlice<f32>,
        vocab: usize,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<Sampled>> {
        shapes::sample_rows(logits.len(), vocab, rows)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if vocab > MAX_VOCAB {
            return Err(shape(
                "sample_rows",
                format!("a vocabulary of {vocab} (at most {MAX_VOCAB})"),
            ));
        }
        u32::try_from(rows.len())
            .map_err(|_| shape("sample_rows", format!("{} rows too many", rows.len())))?;
        let meta = sample_meta(rows, vocab)?;
        let meta_ptr = self.upload_u32s(Upload::SampleMeta, &meta, "sampling rows")?;
        // Penalized copies and counts exist only for rows that penalize or bias.
        let penalized = rows
            .iter()
            .any(|r| (r.params.penalizes() && !r.history.is_empty()) || !r.bias.is_empty());
        let work_len = if penalized { rows.len() * vocab } else { 1 };
        let mut guard = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let g = &mut *guard;
        let work = self.ensure_len(&mut g.sample_work, work_len)?;
        let counts = self.ensure_len(&mut g.sample_counts, work_len)?;
        let out = self.ensure_len(&mut g.sample_out, rows.len() * OUT_WORDS)?;
        let f = self.func("sample.cu", None, "sample_rows")?;
        let vocab32 = vocab as u32;
        let mut b = self.stream.launch_builder(&f);
        b.arg(logits).arg(&vocab32).arg(&meta_ptr);
        b.arg(&*work).arg(&*counts).arg(&*out);
        // SAFETY: logits hold rows·vocab floats and every mask covers the vocabulary (checked
        // above); meta holds a record per row and the histories and masks they point at
        // (copied above, in stream order); work and counts hold rows·vocab elements when a
        // row penalizes or biases (only those rows touch them) and counts are zero (zeroed at
        // allocation, left zero by the kernel); out holds rows·OUT_WORDS words; block r reads
        // row r and writes its own words; 1024 threads and static shared memory as sample.cu
        // is written for.
        unsafe { b.launch(grid1(rows.len(), 1024, 0)) }.ctx(|| "launching sample_rows".into())?;
        let mut host = vec![0u32; rows.len() * OUT_WORDS];
        self.stream
            .memcpy_dtoh(&out.slice(0..host.len()), &mut host)
            .ctx(|| "reading the sampled ids".into())?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for sample_rows".into())?;
        Ok(sampled(&host, rows))
    }
}

#[cfg(test)]
mod tests {
    use plumb_ops::SampleParams;

    use super::*;

    #[test]
    fn meta_layout() {
        let mask = [u32::MAX, 0xff];
        let p = SampleParams {
            temperature: 0.5,
            top_k: 1000,
            top_logprobs: Some(3),
            ..SampleParams::greedy()
        };
        let rows = [
            SampleRow {
                params: SampleParams::greedy(),
                history: &[],
                mask: None,
                bias: &[],
                u: 0.25,
            },
            SampleRow {
                params: p,
                history: &[7, 7],
                mask: Some(&mask),
                bias: &[],
                u: 0.75,
            },
        ];
        let m = sample_meta(&rows, 40).unwrap();
        assert_eq!(m.len(), 36);
        let rec1 = &m[16..32];
        assert_eq!(f32::from_bits(rec1[0]), 0.5);
        assert_eq!(
            (rec1[1], rec1[7]),
            (40, 3),
            "top-k clamped to the vocabulary"
        );
        let u = f64::from_bits(rec1[8] as u64 | (rec1[9] as u64) << 32);
        assert_eq!((u, rec1[10], rec1[11], rec1[12]), (0.75, 32, 2, 34));
        assert_eq!((m[7], m[12]), (NONE, NONE), "row 0: no logprobs, no mask");
        assert_eq!(&m[32..], &[7, 7, u32::MAX, 0xff]);
        // Results: row 0 without logprobs, row 1 with two of them.
        let mut out = vec![0u32; 2 * OUT_WORDS];
        out[0] = 5;
        out[OUT_WORDS..OUT_WORDS + 7].copy_from_slice(&[
            9,
            (-0.5f32).to_bits(),
            2,
            9,
            (-0.5f32).to_bits(),
            3,
            0,
        ]);
        let s = sampled(&out, &rows);
        assert_eq!((s[0].id, s[0].logprob, s[0].top.len()), (5, None, 0));
        assert_eq!((s[1].id, s[1].logprob), (9, Some(-0.5)));
        assert_eq!(s[1].top, [(9, -0.5), (3, 0.0)]);
    }
}
