//! The cases of each op: shapes (adversarial ones included), input draws, reference, tolerance.

mod attention;
mod matmul;
mod sample;
mod small;

pub use sample::draw_params as sample_draw_params;

use plumb_core::rng::Rng;
use plumb_core::{GgmlType, HostWeight};

use super::compare::{compare_with, Scale, Tolerance};
use super::{CaseResult, CheckOptions, Status};
use crate::backend::Backend;
use crate::error::Result;

/// The GGUF formats a model may store its matrices in (the matmul and embedding cases run
/// these, then every MLX affine format: [`weight_types`]).
const GGUF_WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Weight formats of the matmul and embedding cases: the GGUF formats, then every MLX affine
/// format (bits × group size, [`GgmlType::MLX`]).
pub(super) fn weight_types() -> impl Iterator<Item = GgmlType> {
    GGUF_WEIGHT_TYPES
        .iter()
        .chain(GgmlType::MLX.iter())
        .copied()
}

/// What each op allows, over the whole output (NMSE) and for its worst element (relative to
/// the output scale: each element's own `Σ_k (w_k x_k)²` for a matmul, the reference's RMS
/// otherwise).
///
/// The NMSE bounds are each op's expected rounding: quantized matmuls may quantize the
/// activations to 8 bits per block (about 0.6% of an element's scale, RMS), float matmuls
/// may round them to f16 (cuBLAS prefill), the rest is f32 arithmetic with approximate
/// `exp`/`sin`/`tanh`/`erf` and reordered sums; embedding and argmax are exact. The worst-element bound is
/// 10·√NMSE, room for an error ten times the RMS a backend at the NMSE bound would have,
/// except for quantized matmuls, whose rounding is known: 0.1, against a worst of 0.028 over
/// every CPU level and three seeds. A wrong element, row or region is off by a large part of
/// the output's scale and fails both ways (`self_test`). Sampling compares ids (exact:
/// any wrong id is off by at least 1) and logprobs (1e-4 absolute: every element has scale 1).
pub(super) fn tolerance(op: &str, ty: GgmlType) -> Tolerance {
    let float = |nmse: f64| Tolerance::new(nmse, 10.0 * nmse.sqrt());
    match op {
        "matmul" if ty.is_quantized() => Tolerance::new(5e-4, 0.1),
        "matmul" => float(1e-6),
        "rms_norm" | "add_rms_norm" | "layer_norm" => float(1e-10),
        "rope" => float(1e-9),
        "attention" | "attention_paged" | "attention_full" => float(1e-7),
        "swiglu" | "geglu" | "gelu" | "softcap" => float(1e-8),
        "add" | "add_bias" | "scale" => float(1e-12),
        "sample" => Tolerance::new(1e-8, 1e-4),
        _ => Tolerance::EXACT,
    }
}

/// One output of a case: what the backend wrote, what the reference wrote, and optionally
/// each element's squared scale.
pub(super) struct Output {
    got: Vec<f32>,
    want: Vec<f32>,
    scales: Option<Vec<f64>>,
}

impl Output {
    pub(super) fn new(got: Vec<f32>, want: Vec<f32>) -> Output {
        Output {
            got,
            want,
            scales: None,
        }
    }

    pub(super) fn scaled(got: Vec<f32>, want: Vec<f32>, scales: Vec<f64>) -> Output {
        Output {
            got,
            want,
            scales: Some(scales),
        }
    }
}

pub(super) struct Ctx<'a, B: Backend> {
    pub(super) b: &'a B,
    pub(super) rng: Rng,
    on_result: &'a mut dyn FnMut(&CaseResult),
    out: Vec<CaseResult>,
}

impl<B: Backend> Ctx<'_, B> {
    /// Records one case: `run` returns its outputs, or an error that becomes SKIP for an
    /// unsupported case and FAIL otherwise.
    pub(super) fn case(
        &mut self,
        op: &'static str,
        dtype: String,
        shape: String,
        tol: Tolerance,
        run: Result<Vec<Output>>,
    ) {
        let mut r = CaseResult {
            op,
            backend: self.b.name().to_string(),
            dtype,
            shape,
            status: Status::Pass,
            nmse: 0.0,
            max_rel: 0.0,
            tolerance: tol,
            max_abs: 0.0,
            detail: String::new(),
        };
        match run {
            Err(crate::OpError::Unsupported { what, .. }) => {
                r.status = Status::Skip;
                r.detail = format!("unsupported: {what}");
            }
            Err(e) => {
                r.status = Status::Fail;
                r.nmse = f64::INFINITY;
                r.max_rel = f64::INFINITY;
                r.detail = format!("error: {e}");
            }
            Ok(outputs) => {
                for (i, o) in outputs.iter().enumerate() {
                    let scale = o.scales.as_deref().map_or(Scale::Rms, Scale::PerElement);
                    let c = compare_with(&o.got, &o.want, scale);
                    r.max_abs = r.max_abs.max(c.max_abs);
                    r.max_rel = r.max_rel.max(c.max_rel);
                    if c.nmse > r.nmse || c.nmse.is_nan() {
                        r.nmse = c.nmse;
                    }
                    if !c.within(tol) && r.status == Status::Pass {
                        r.status = Status::Fail;
                        r.detail = format!(
                            "output {i}: {} non-finite; worst element {} (|Δ| {:.3e}, {:.3e} of \
                             its scale); worst (index, got, want): {:?}",
                            c.non_finite, c.worst, c.max_abs, c.max_rel, c.worst_elements
                        );
                    }
                }
            }
        }
        (self.on_result)(&r);
        self.out.push(r);
    }

    /// An output buffer of `len` NaNs.
    pub(super) fn poisoned(&self, len: usize) -> Result<B::Buf> {
        self.b.upload(&vec![f32::NAN; len])
    }

    pub(super) fn down(&self, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
        let mut v = vec![0f32; len];
        self.b.download(buf, &mut v)?;
        Ok(v)
    }

    /// A `rows × cols` weight of normals × `scale`, quantized to `ty`.
    pub(super) fn weight(
        &mut self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        scale: f32,
    ) -> Result<HostWeight> {
        let vals = self.rng.normals(rows * cols, scale);
        let row_bytes = ty.row_bytes(cols)?;
        let mut bytes = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            plumb_core::quant::quantize_row(
                ty,
                &vals[r * cols..(r + 1) * cols],
                &mut bytes[r * row_bytes..(r + 1) * row_bytes],
            )?;
        }
        Ok(HostWeight::new(
            "check",
            ty,
            rows,
            cols,
            plumb_core::Bytes::from_vec(bytes),
        )?)
    }
}

/// Runs every case of `op`, reporting each to `on_result` as it finishes.
pub fn run_op<B: Backend>(
    b: &B,
    op: &'static str,
    opts: &CheckOptions,
    on_result: &mut dyn FnMut(&CaseResult),
) -> Vec<CaseResult> {
    // A separate stream per op, so `--op X` sees the same inputs as a full run.
    let salt = op
        .bytes()
        .fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
    let mut cx = Ctx {
        b,
        rng: Rng::new(opts.seed ^ salt),
        on_result,
        out: Vec::new(),
    };
    match op {
        "embedding" => small::embedding(&mut cx),
        "rms_norm" | "add_rms_norm" | "layer_norm" => small::norms(&mut cx, op),
        "matmul" => matmul::matmul(&mut cx, opts.quick),
        "add_bias" | "swiglu" | "add" | "geglu" | "gelu" | "scale" | "softcap" => {
            small::elementwise(&mut cx, op)
        }
        "rope" => small::rope(&mut cx),
        "attention" => attention::attention(&mut cx, opts.quick),
        "attention_paged" => attention::attention_paged(&mut cx),
        "attention_full" => attention::attention_full(&mut cx),
        "argmax" => small::argmax(&mut cx),
        "sample" => sample::sample(&mut cx),
        _ => {}
    }
    cx.out
}

/// `wanted` rounded up to whole blocks of `ty`.
pub(super) fn cols_for(ty: GgmlType, wanted: usize) -> usize {
    let bs = ty.block_size();
    wanted.div_ceil(bs) * bs
}
