//! Cases of `sample_rows`: greedy and top-k = 1 rows, sampled rows with fixed uniforms, and
//! many draws from one row tested against its distribution.
//!
//! Ids must equal the reference's and logprobs be within 1e-4, with one allowance: a backend's
//! weights differ from the reference's by rounding (f32 exponentials, fixed-point sums), so a
//! sampled row whose uniform, top-p or min-p lies within [`EPS`] of a boundary may land on
//! either side. The chosen position moves monotonically with each of the three (a larger
//! uniform or top-p, a smaller min-p never choose an earlier token), so the reference run with
//! all three moved by ε one way and the other bounds what such a backend may choose; a row
//! whose two bounds differ is *near a boundary*, may give any of the reference's three ids,
//! and is counted in the case's name. Greedy and top-k = 1 rows have no boundary: exact.

use plumb_core::rng::Rng;

use super::{tolerance, Ctx, Output};
use crate::backend::{Backend, SampleParams, SampleRow, Sampled, MAX_TOP_LOGPROBS};
use crate::check::stats::chi_square;
use crate::ops::sample;
use plumb_core::GgmlType;

/// How far a uniform, top-p (absolute) or min-p (relative) is moved to bound a backend's
/// rounding: above the 8·10⁻⁶ that docs/sampling.md derives for a cumulative weight's
/// relative error in these cases.
pub(super) const EPS: f64 = 1e-5;

pub(super) fn sample<B: Backend>(cx: &mut Ctx<B>) {
    for (rows, vocab, ties) in [
        (1, 7, false),
        (5, 1000, true),
        (16, 4099, false),
        (64, 32003, true),
        (4, 151_936, false),
    ] {
        for greedy in [true, false] {
            rows_case(cx, rows, vocab, ties, greedy);
        }
    }
    for p in draw_params() {
        draws_case(cx, p);
    }
}

/// The parameter sets of the draw cases, each drawn 20 000 times from one row and held to
/// its distribution: top-k with top-p, a whole-row top-p with min-p, temperature alone, and a
/// top-k of 1100 (above the 1024 a GPU block gathers) with top-p.
pub fn draw_params() -> [SampleParams; 4] {
    let base = SampleParams::greedy();
    [
        SampleParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            ..base
        },
        SampleParams {
            temperature: 1.3,
            top_p: 0.95,
            min_p: 0.02,
            ..base
        },
        SampleParams {
            temperature: 1.0,
            ..base
        },
        SampleParams {
            temperature: 0.7,
            top_k: 1100,
            top_p: 0.97,
            ..base
        },
    ]
}

/// The parameters of row `r`: greedy rows alternate temperature 0 and top-k 1; sampled rows
/// cycle through the engine's and the server's defaults, a whole-row top-p, a top-k above
/// the 1024 a GPU block gathers, min-p alone and top-k equal to the vocabulary.
fn params(r: usize, vocab: usize, greedy: bool) -> SampleParams {
    let base = SampleParams::greedy();
    let sampled = [
        SampleParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            ..base
        },
        SampleParams {
            temperature: 1.0,
            ..base
        },
        SampleParams {
            temperature: 1.3,
            top_p: 0.9,
            ..base
        },
        SampleParams {
            temperature: 0.7,
            top_k: 2000,
            top_p: 0.8,
            min_p: 0.01,
            ..base
        },
        SampleParams {
            temperature: 2.0,
            min_p: 0.1,
            ..base
        },
        SampleParams {
            temperature: 0.9,
            top_k: vocab,
            ..base
        },
    ];
    let mut p = if greedy {
        let t = if r.is_multiple_of(2) { 0.0 } else { 0.9 };
        SampleParams {
            temperature: t,
            top_k: 1,
            ..base
        }
    } else {
        sampled[r % sampled.len()]
    };
    if r % 3 == 1 {
        p.repetition_penalty = 1.3;
        p.presence_penalty = 0.2;
        p.frequency_penalty = 0.1;
    }
    if r.is_multiple_of(5) {
        p.top_logprobs = Some(r % (MAX_TOP_LOGPROBS + 1));
    }
    p
}

/// A row's histories and masks, drawn once so that the rows can borrow them.
struct Inputs {
    logits: Vec<f32>,
    history: Vec<Vec<u32>>,
    mask: Vec<Option<Vec<u32>>>,
    /// Logit biases (distinct ids in increasing order) on every fourth row.
    bias: Vec<Vec<(u32, f32)>>,
    u: Vec<f64>,
}

fn inputs(rng: &mut Rng, rows: usize, vocab: usize, ties: bool) -> Inputs {
    let mut logits = rng.normals(rows * vocab, 2.0);
    if ties {
        logits
            .iter_mut()
            .for_each(|v| *v = (*v * 2.0).floor() / 2.0);
    }
    let words = vocab.div_ceil(32);
    let mut history = Vec::new();
    let mut mask = Vec::new();
    let mut bias = Vec::new();
    for r in 0..rows {
        let row = &mut logits[r * vocab..(r + 1) * vocab];
        if r == 2 {
            row[0] = f32::NAN;
            row[vocab / 2] = f32::NEG_INFINITY;
            row[vocab / 3] = f32::INFINITY;
        }
        // Some tokens past the vocabulary, repeats among the rest.
        let n = rng.below(40) as usize;
        history.push(
            (0..n)
                .map(|_| rng.below(vocab as u64 / 4 + 3) as u32)
                .collect(),
        );
        let mut b: Vec<(u32, f32)> = (0..if r % 4 == 3 { 1 + rng.below(12) } else { 0 })
            .map(|_| (rng.below(vocab as u64) as u32, rng.normal() * 3.0))
            .collect();
        b.sort_by_key(|x| x.0);
        b.dedup_by_key(|x| x.0);
        bias.push(b);
        mask.push((r % 4 == 2).then(|| {
            let m: Vec<u32> = (0..words)
                .map(|_| rng.next_u64() as u32 | 0x1111_1111)
                .collect();
            if r == 6 {
                vec![0; words]
            } else {
                m
            }
        }));
    }
    let u = (0..rows).map(|_| rng.next_f64()).collect();
    Inputs {
        logits,
        history,
        bias,
        mask,
        u,
    }
}

/// `row` with its uniform, top-p and min-p moved by ε towards later tokens (`dir` 1) or
/// earlier ones (`dir` −1), each staying in range and a cut staying a cut.
fn moved<'a>(row: &SampleRow<'a>, dir: f64) -> SampleRow<'a> {
    let p = row.params;
    let below_one = 1.0 - f32::EPSILON as f64 / 2.0;
    SampleRow {
        params: SampleParams {
            top_p: if p.top_p < 1.0 {
                (p.top_p as f64 + dir * EPS).clamp(EPS, below_one) as f32
            } else {
                1.0
            },
            min_p: (p.min_p as f64 * (1.0 - dir * EPS)).min(1.0) as f32,
            ..p
        },
        u: (row.u + dir * EPS).clamp(0.0, 1.0 - f64::EPSILON),
        ..*row
    }
}

/// The reference at a row's own parameters and at the two ε-moved corners.
struct Expect {
    at: Sampled,
    earlier: Sampled,
    later: Sampled,
}

impl Expect {
    fn new(logits: &[f32], row: &SampleRow<'_>) -> Expect {
        let run = |r: &SampleRow<'_>| sample::sample_row(&mut logits.to_vec(), r);
        Expect {
            at: run(row),
            earlier: run(&moved(row, -1.0)),
            later: run(&moved(row, 1.0)),
        }
    }

    /// For draws without logprobs: the ids the three walks give.
    fn ids(at: u32, earlier: u32, later: u32) -> Expect {
        let s = |id| Sampled {
            id,
            logprob: None,
            top: Vec::new(),
        };
        Expect {
            at: s(at),
            earlier: s(earlier),
            later: s(later),
        }
    }

    fn near(&self) -> bool {
        self.earlier.id != self.later.id
    }

    /// What a backend that chose `id` must have returned.
    fn matching(&self, id: u32) -> &Sampled {
        [&self.at, &self.earlier, &self.later]
            .into_iter()
            .find(|s| s.id == id)
            .unwrap_or(&self.at)
    }
}

/// Ids, logprobs and top lists of `got` against the expectations, as one output whose every
/// element has scale 1 (an id off by one is an error of 1).
fn compared(got: &[Sampled], want: &[Expect]) -> Output {
    let (mut g, mut w) = (Vec::new(), Vec::new());
    let mut push = |a: f32, b: f32| {
        // Equal infinities or NaNs are equal here (a difference of theirs is not a number).
        let same = a == b || (a.is_nan() && b.is_nan());
        g.push(if same { 0.0 } else { a });
        w.push(if same { 0.0 } else { b });
    };
    for (s, e) in got.iter().zip(want) {
        let m = e.matching(s.id);
        push(s.id as f32, m.id as f32);
        match (s.logprob, m.logprob) {
            (None, None) => {}
            (a, b) => push(a.unwrap_or(f32::NAN), b.unwrap_or(f32::NAN)),
        }
        push(s.top.len() as f32, m.top.len() as f32);
        for (a, b) in s.top.iter().zip(&m.top) {
            push(a.0 as f32, b.0 as f32);
            push(a.1, b.1);
        }
    }
    push(got.len() as f32, want.len() as f32);
    let n = g.len();
    Output::scaled(g, w, vec![1.0; n])
}

fn rows_case<B: Backend>(cx: &mut Ctx<B>, rows: usize, vocab: usize, ties: bool, greedy: bool) {
    let inp = inputs(&mut cx.rng, rows, vocab, ties);
    let row_of = |r: usize| SampleRow {
        params: params(r, vocab, greedy),
        history: &inp.history[r],
        mask: inp.mask[r].as_deref(),
        bias: &inp.bias[r],
        u: inp.u[r],
    };
    let srows: Vec<SampleRow<'_>> = (0..rows).map(row_of).collect();
    let want: Vec<Expect> = srows
        .iter()
        .enumerate()
        .map(|(r, row)| Expect::new(&inp.logits[r * vocab..(r + 1) * vocab], row))
        .collect();
    let near = want.iter().filter(|e| e.near()).count();
    let run = (|| {
        let buf = cx.b.upload(&inp.logits)?;
        let got = cx.b.sample_rows(&buf, vocab, &srows)?;
        Ok(vec![compared(&got, &want)])
    })();
    let kind = if greedy { "greedy/top-1" } else { "sampled" };
    let ties = if ties { ", ties" } else { "" };
    cx.case(
        "sample",
        "F32".into(),
        format!("{rows}×{vocab} {kind}{ties}, {near} near ε"),
        tolerance("sample", GgmlType::F32),
        run,
    );
}

/// The reference's walk of one row, for many uniforms at once: its distribution in walk order
/// with the cumulative probabilities.
struct Walk {
    dist: Vec<(u32, f64)>,
    cum: Vec<f64>,
}

impl Walk {
    fn new(logits: &[f32], row: &SampleRow<'_>) -> Walk {
        let dist = sample::distribution(&mut logits.to_vec(), row);
        let mut c = 0.0;
        let cum = dist.iter().map(|d| {
            c += d.1;
            c
        });
        Walk {
            cum: cum.collect(),
            dist,
        }
    }

    /// The first token whose cumulative probability exceeds `u`.
    fn pick(&self, u: f64) -> u32 {
        let at = self.cum.partition_point(|&c| c <= u);
        self.dist[at.min(self.dist.len() - 1)].0
    }
}

/// Draws from one row of logits with 20,000 uniforms, 1,000 rows per call: every draw against
/// the reference's (as in the other cases, the reference's walk of its distribution standing
/// for its draw: they differ only where a uniform is within rounding of a boundary, which is
/// near ε), and the draws together against the row's distribution by a chi-square test (its
/// excess over the threshold, 0 when it passes).
fn draws_case<B: Backend>(cx: &mut Ctx<B>, params: SampleParams) {
    let (vocab, n, batch) = (1200, 20_000, 1000);
    let logits = cx.rng.normals(vocab, 2.0);
    let us: Vec<f64> = (0..n).map(|_| cx.rng.next_f64()).collect();
    let row = |u: f64| SampleRow {
        params,
        history: &[],
        mask: None,
        bias: &[],
        u,
    };
    let walks = [-1.0, 0.0, 1.0].map(|dir| Walk::new(&logits, &moved(&row(0.5), dir)));
    let want: Vec<Expect> = us
        .iter()
        .map(|&u| {
            let pick = |k: usize, dir: f64| walks[k].pick(moved(&row(u), dir).u);
            Expect::ids(pick(1, 0.0), pick(0, -1.0), pick(2, 1.0))
        })
        .collect();
    let dist = &walks[1].dist;
    let near = want.iter().filter(|e| e.near()).count();
    let run = (|| {
        let buf = cx.b.upload(&logits.repeat(batch))?;
        let mut got = Vec::with_capacity(n);
        for chunk in us.chunks(batch) {
            let rows: Vec<SampleRow<'_>> = chunk.iter().map(|&u| row(u)).collect();
            got.extend(cx.b.sample_rows(&buf, vocab, &rows)?);
        }
        let ids: Vec<u32> = got.iter().map(|s| s.id).collect();
        let excess = chi_square(&ids, dist).excess() as f32;
        Ok(vec![
            compared(&got, &want),
            Output::scaled(vec![excess], vec![0.0], vec![1.0]),
        ])
    })();
    let p = &params;
    cx.case(
        "sample",
        "F32".into(),
        format!(
            "{n} draws, T {} k {} p {} min-p {}: χ², {near} near ε",
            p.temperature, p.top_k, p.top_p, p.min_p
        ),
        tolerance("sample", GgmlType::F32),
        run,
    );
}
