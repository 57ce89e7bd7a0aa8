//! Sampling one token from each row of logits.
//!
//! Row `r` of `logits` holds the `vocab` logits at `r * vocab`; its [`SampleRow`] says how it is
//! sampled. In this order:
//!
//! 1. **Penalties** over the row's `history` (the penalty window, already cut by the caller):
//!    each distinct token seen `c` times has its logit divided by `repetition_penalty` when
//!    positive (multiplied otherwise), then `presence_penalty + frequency_penalty · c`
//!    subtracted, in f32. History tokens outside the vocabulary are ignored. Then each
//!    `bias` is added (f32) to its token's logit.
//! 2. **Log-probabilities** (when `top_logprobs` is `Some(n)`), under the penalized row at
//!    temperature 1, unfiltered and unmasked: `logprob(t) = l_t − (max + ln Σ exp(l − max))`
//!    over the finite logits (max the largest finite one), and `top` = the `n` best tokens by
//!    logit (IEEE total order, so a positive NaN sorts first), ties by lower id.
//! 3. **The allow-mask**: token `t` may be chosen only when bit `t % 32` of word `t / 32` is set.
//! 4. **Greedy** when `temperature ≤ 0`: the first largest allowed logit (NaN never wins; 0
//!    when no allowed logit exceeds −∞).
//! 5. **Candidates** otherwise: the allowed finite logits (none: id 0), *best first*: logit
//!    descending, ties by lower id. Top-k keeps the first `top_k` (0 keeps all). With
//!    `top_p < 1` or `min_p > 0`, each candidate weighs `w = exp(l − max)` at temperature 1
//!    (max the best candidate's logit) and `Z` is the sum over the top-k set: top-p keeps the
//!    shortest prefix whose Σw ≥ `top_p · Z`, min-p keeps the candidates with `w ≥ min_p`; the
//!    best is always kept.
//! 6. **The draw**: the kept candidates weigh `exp((l − max) / temperature)`; the chosen one is
//!    the first whose cumulative weight exceeds `u · Σ` (the last one when rounding leaves
//!    none), walking them best first — except when nothing is cut (no top-p, no min-p, top-k
//!    0 or at least the number of candidates), where the walk goes over the whole row in id
//!    order with f32 weights, which needs no sort.
//!
//! Weights (but those of the uncut walk), sums and the walk are f64. The best-first order is
//! sorted lazily (a prefix of 64, grown ×4 while a walk needs more), so a 128k vocabulary is
//! sorted only as far as the cut or the draw reaches. [`distribution`] gives the probabilities
//! a row's draw follows.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::backend::{argmax_host, SampleParams, SampleRow, Sampled};
use crate::error::Result;
use crate::shapes;

#[cfg(test)]
mod tests;

/// Samples every row of `logits` (`rows.len()` rows of `vocab`); the penalties are applied to
/// `logits` in place.
pub fn reference(logits: &mut [f32], vocab: usize, rows: &[SampleRow<'_>]) -> Result<Vec<Sampled>> {
    shapes::sample_rows(logits.len(), vocab, rows)?;
    Ok(logits
        .chunks_mut(vocab)
        .zip(rows)
        .map(|(l, row)| sample_row(l, row))
        .collect())
}

/// Samples one row of logits (the penalties are applied to `logits` in place). Never panics,
/// whatever the parameters; [`shapes::sample_rows`] says which ones are in range.
pub fn sample_row(logits: &mut [f32], row: &SampleRow<'_>) -> Sampled {
    let p = &row.params;
    penalize(logits, row.history, p);
    add_bias(logits, row.bias);
    let lse = p.top_logprobs.map(|_| log_sum_exp(logits));
    let id = if p.temperature <= 0.0 {
        greedy(logits, row.mask)
    } else if uncut(logits, row) {
        uncut_weights(logits, row).map_or(0, |(w, last)| walk_in_id_order(&w, last, row.u))
    } else {
        Kept::new(logits, row).map_or(0, |k| k.draw(row.u))
    };
    let lp = |t: u32| {
        logits.get(t as usize).map_or(f32::NEG_INFINITY, |&v| {
            (v as f64 - lse.unwrap_or(0.0)) as f32
        })
    };
    Sampled {
        id,
        logprob: lse.map(|_| lp(id)),
        top: match p.top_logprobs {
            Some(n) => best(logits, n).into_iter().map(|t| (t, lp(t))).collect(),
            None => Vec::new(),
        },
    }
}

/// The tokens a row's draw chooses among, in the order of its walk, with their probabilities
/// (the penalties are applied to `logits` in place): a greedy row gives its one token with
/// probability 1.
pub fn distribution(logits: &mut [f32], row: &SampleRow<'_>) -> Vec<(u32, f64)> {
    penalize(logits, row.history, &row.params);
    add_bias(logits, row.bias);
    let weighted: Vec<(u32, f64)> = if row.params.temperature <= 0.0 {
        vec![(greedy(logits, row.mask), 1.0)]
    } else if uncut(logits, row) {
        let (w, _) = uncut_weights(logits, row).unwrap_or_default();
        let tokens = w.iter().enumerate().filter(|(_, &x)| x > 0.0);
        tokens.map(|(i, &x)| (i as u32, x as f64)).collect()
    } else if let Some(mut k) = Kept::new(logits, row) {
        (0..k.keep)
            .map(|i| {
                let (id, v) = k.order.get(i);
                (id, k.weight(v))
            })
            .collect()
    } else {
        vec![]
    };
    if weighted.is_empty() {
        return vec![(0, 1.0)];
    }
    let total: f64 = weighted.iter().map(|w| w.1).sum();
    weighted
        .into_iter()
        .map(|(id, w)| (id, w / total))
        .collect()
}

/// Whether the mask (if any) allows token `t`.
#[inline]
pub fn allowed(mask: Option<&[u32]>, t: usize) -> bool {
    mask.is_none_or(|m| m.get(t / 32).is_some_and(|w| (w >> (t % 32)) & 1 == 1))
}

/// Adds each bias to its token's logit (ids past the logits are skipped).
fn add_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(t, b) in bias {
        if let Some(l) = logits.get_mut(t as usize) {
            *l += b;
        }
    }
}

fn penalize(logits: &mut [f32], history: &[u32], p: &SampleParams) {
    if !p.penalizes() {
        return;
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in history {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &c) in &counts {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        if *l > 0.0 {
            *l /= p.repetition_penalty;
        } else {
            *l *= p.repetition_penalty;
        }
        *l -= p.presence_penalty + p.frequency_penalty * c as f32;
    }
}

/// `max + ln Σ exp(l − max)` over the finite logits.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64 - max).exp())
        .sum();
    max + sum.ln()
}

/// The `n` best tokens of `logits` (every logit, total order), best first, ties by id.
fn best(logits: &[f32], n: usize) -> Vec<u32> {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let n = n.min(all.len());
    if n > 0 && n < all.len() {
        all.select_nth_unstable_by(n - 1, best_first);
    }
    all.truncate(n);
    all.sort_by(best_first);
    all.into_iter().map(|(t, _)| t).collect()
}

/// The first largest allowed logit (NaN never wins; 0 when none exceeds −∞).
fn greedy(logits: &[f32], mask: Option<&[u32]>) -> u32 {
    if mask.is_none() {
        return argmax_host(logits);
    }
    let mut top = (0usize, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > top.1 && allowed(mask, i) {
            top = (i, v);
        }
    }
    top.0 as u32
}

#[inline]
fn candidate(mask: Option<&[u32]>, i: usize, v: f32) -> bool {
    v.is_finite() && allowed(mask, i)
}

/// Whether a sampled row keeps every candidate: no top-p, no min-p, and top-k off or at least
/// the number of candidates.
fn uncut(logits: &[f32], row: &SampleRow<'_>) -> bool {
    let p = &row.params;
    let count = || {
        let c = logits
            .iter()
            .enumerate()
            .filter(|&(i, &v)| candidate(row.mask, i, v));
        c.count()
    };
    !p.filters() && (p.top_k == 0 || p.top_k >= count())
}

/// The f32 weights `exp((l − max) / T)` of an uncut row, token by token (0 for a
/// non-candidate), and its last candidate; None without candidates.
fn uncut_weights(logits: &[f32], row: &SampleRow<'_>) -> Option<(Vec<f32>, usize)> {
    let max = logits
        .iter()
        .enumerate()
        .filter(|&(i, &v)| candidate(row.mask, i, v))
        .map(|(_, &v)| v)
        .reduce(f32::max)?;
    let t = row.params.temperature;
    let mut last = 0;
    let w = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if candidate(row.mask, i, v) {
                last = i;
                ((v - max) / t).exp()
            } else {
                0.0
            }
        })
        .collect();
    Some((w, last))
}

/// The first token whose cumulative weight (f64) exceeds `u · Σ`, in id order; `last` when
/// rounding leaves none.
fn walk_in_id_order(w: &[f32], last: usize, u: f64) -> u32 {
    let target = u * w.iter().map(|&x| x as f64).sum::<f64>();
    let mut cum = 0.0;
    for (i, &x) in w.iter().enumerate() {
        cum += x as f64;
        if target < cum {
            return i as u32;
        }
    }
    last as u32
}

/// Best first: logit descending (total order), then lower id.
fn best_first(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The first sorted prefix of a lazily sorted best-first order.
const PREFIX: usize = 64;

/// Candidates in best-first order, sorted lazily: `c[..sorted]` is in its final order and
/// every entry of it beats every later one.
struct BestFirst {
    c: Vec<(u32, f32)>,
    sorted: usize,
}

impl BestFirst {
    /// The `i`-th best candidate (`i < len`).
    fn get(&mut self, i: usize) -> (u32, f32) {
        if i >= self.sorted {
            // ×4 at a time, so that a walk to position m costs O(len · log m) selections.
            let m = (i + 1).max(PREFIX).max(self.sorted * 4).min(self.c.len());
            let rest = &mut self.c[self.sorted..];
            let k = m - self.sorted;
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, best_first);
            }
            rest[..k].sort_by(best_first);
            self.sorted = m;
        }
        self.c[i]
    }
}

/// A sampled row's kept candidates: the first `keep` of `order`.
struct Kept {
    order: BestFirst,
    keep: usize,
    /// The best candidate's logit.
    max: f64,
    temperature: f64,
}

impl Kept {
    /// The candidates of `logits` (penalized) after top-k, top-p and min-p; None when no
    /// allowed logit is finite.
    fn new(logits: &[f32], row: &SampleRow<'_>) -> Option<Kept> {
        let p = &row.params;
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|&(i, &v)| candidate(row.mask, i, v))
            .map(|(i, &v)| (i as u32, v))
            .collect();
        if c.is_empty() {
            return None;
        }
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, best_first);
            c.truncate(p.top_k);
        }
        let max = c.iter().map(|e| e.1).fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut order = BestFirst { c, sorted: 0 };
        let keep = if p.filters() {
            cut(&mut order, max, p.top_p, p.min_p)
        } else {
            order.c.len()
        };
        Some(Kept {
            order,
            keep,
            max,
            temperature: p.temperature as f64,
        })
    }

    /// A kept candidate's weight at the row's temperature.
    fn weight(&self, v: f32) -> f64 {
        ((v as f64 - self.max) / self.temperature).exp()
    }

    /// The first kept candidate, best first, whose cumulative weight exceeds `u · Σ`.
    fn draw(mut self, u: f64) -> u32 {
        // `c[..keep]` is the kept set (sorted when a cut made it a prefix, else the top-k
        // set); any order sums it.
        let total: f64 = self.order.c[..self.keep]
            .iter()
            .map(|e| self.weight(e.1))
            .sum();
        let target = u * total;
        let mut cum = 0.0;
        for i in 0..self.keep {
            let (id, v) = self.order.get(i);
            cum += self.weight(v);
            if target < cum {
                return id;
            }
        }
        self.order.get(self.keep - 1).0
    }
}

/// How many of the best-first candidates survive top-p (the shortest prefix whose weight at
/// temperature 1 reaches `top_p` of the total) and min-p (weights at least `min_p` of the
/// best's); at least one.
fn cut(order: &mut BestFirst, max: f64, top_p: f32, min_p: f32) -> usize {
    let w = |v: f32| (v as f64 - max).exp();
    let z: f64 = order.c.iter().map(|e| w(e.1)).sum();
    let mut cum = 0.0;
    for i in 0..order.c.len() {
        let wi = w(order.get(i).1);
        if min_p > 0.0 && wi < min_p as f64 {
            return i.max(1);
        }
        cum += wi;
        if top_p < 1.0 && cum >= top_p as f64 * z {
            return i + 1;
        }
    }
    order.c.len()
}
