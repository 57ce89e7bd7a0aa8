//! The shape checks of the [`Backend`](crate::Backend) ops, written once for every backend.
//!
//! Each function takes the arguments of the op of the same name, in the same order, with every
//! buffer replaced by its length in f32 values (so that device buffers can be checked as well
//! as host ones), a weight by its `(rows, cols)` and rope's parameters by `n_rot`, and returns
//! [`OpError::Shape`] naming the op and what does not fit before the op touches memory.
//! [`argmax`] checks `argmax_rows`; [`paged_params`] and [`paged_tables`] are the parts of
//! [`attention_paged`] that need no buffer. Sizes are multiplied and added with overflow checks: absurd arguments are
//! errors, never panics. An op that passes its check may index every element it is specified
//! to read or write.

use crate::backend::{
    AttnParams, FullAttnParams, PagedParams, PagedSeq, SampleRow, MAX_TOP_LOGPROBS,
};
use crate::error::{ensure, OpError, Result};

/// The product of `dims`, or a shape error of `op` when it overflows.
fn size(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::Shape {
            op,
            msg: format!("the size {dims:?} overflows"),
        })
}

/// `a + b`, or a shape error of `op` when it overflows.
fn sum(op: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_add(b).ok_or_else(|| OpError::Shape {
        op,
        msg: format!("{a} + {b} overflows"),
    })
}

/// `download`: the first `out` values of a buffer of `buf`.
pub fn download(buf: usize, out: usize) -> Result<()> {
    ensure(out <= buf, "download", || {
        format!("{out} values asked of a buffer of {buf}")
    })
}

/// `copy`: `len` values from `src_off` of a buffer of `src` to `dst_off` of a buffer of `dst`.
pub fn copy(src: usize, src_off: usize, dst: usize, dst_off: usize, len: usize) -> Result<()> {
    let fits = |off: usize, buf: usize| off.checked_add(len).is_some_and(|end| end <= buf);
    ensure(fits(src_off, src) && fits(dst_off, dst), "copy", || {
        format!("{len} values from {src_off} of {src} to {dst_off} of {dst} are out of bounds")
    })
}

/// `embedding`: a table of `table = (rows, cols)`, ids below `rows`, `out` of `ids.len()` rows.
pub fn embedding(table: (usize, usize), ids: &[u32], out: usize) -> Result<()> {
    let (rows, cols) = table;
    let need = size("embedding", &[ids.len(), cols])?;
    ensure(out >= need, "embedding", || {
        format!("output holds {out} values, need {need}")
    })?;
    match ids.iter().find(|&&id| id as usize >= rows) {
        Some(id) => Err(OpError::Shape {
            op: "embedding",
            msg: format!("token id {id} is outside the vocabulary of {rows} rows"),
        }),
        None => Ok(()),
    }
}

/// The checks both norms share; returns `rows × dim`.
fn norm(
    op: &'static str,
    x: usize,
    w: usize,
    rows: usize,
    dim: usize,
    out: usize,
) -> Result<usize> {
    let n = size(op, &[rows, dim])?;
    ensure(w >= dim && x >= n && out >= n, op, || {
        format!("rows {rows} × dim {dim} do not fit x ({x}), weight ({w}) and out ({out})")
    })?;
    Ok(n)
}

/// `rms_norm`: `x` and `out` of `rows × dim`, a weight of `dim`.
pub fn rms_norm(x: usize, w: usize, rows: usize, dim: usize, out: usize) -> Result<()> {
    norm("rms_norm", x, w, rows, dim, out).map(drop)
}

/// `add_rms_norm`: as [`rms_norm`], and a residual of `rows × dim`.
pub fn add_rms_norm(
    residual: usize,
    x: usize,
    w: usize,
    rows: usize,
    dim: usize,
    out: usize,
) -> Result<()> {
    let n = norm("add_rms_norm", x, w, rows, dim, out)?;
    ensure(residual >= n, "add_rms_norm", || {
        format!("the residual holds {residual} values, need rows {rows} × dim {dim}")
    })
}

/// `matmul`: `W` of `w = (rows, cols)`, `x` of `n × cols`, `out` of `n × rows`.
pub fn matmul(w: (usize, usize), x: usize, n: usize, out: usize) -> Result<()> {
    let (rows, cols) = w;
    let (nx, nout) = (size("matmul", &[n, cols])?, size("matmul", &[n, rows])?);
    ensure(x >= nx && out >= nout, "matmul", || {
        format!("W is {rows}×{cols}: x needs {nx} values (has {x}), out {nout} (has {out})")
    })
}

/// `add`: `x` and `y` of at least `len`.
pub fn add(x: usize, y: usize, len: usize) -> Result<()> {
    ensure(x >= len && y >= len, "add", || {
        format!("len {len} exceeds x ({x}) or y ({y})")
    })
}

/// `add_bias`: `x` of `rows × dim`, a bias of `dim`.
pub fn add_bias(x: usize, bias: usize, rows: usize, dim: usize) -> Result<()> {
    let n = size("add_bias", &[rows, dim])?;
    ensure(x >= n && bias >= dim, "add_bias", || {
        format!("rows {rows} × dim {dim} do not fit x ({x}) and the bias ({bias})")
    })
}

/// `swiglu`: `gate`, `up` and `out` of at least `len`.
pub fn swiglu(gate: usize, up: usize, len: usize, out: usize) -> Result<()> {
    gated("swiglu", gate, up, len, out)
}

/// A gated activation `op` (`swiglu`, `geglu`): `gate`, `up` and `out` of at least `len`.
pub fn gated(op: &'static str, gate: usize, up: usize, len: usize, out: usize) -> Result<()> {
    ensure(gate >= len && up >= len && out >= len, op, || {
        format!("len {len} exceeds gate ({gate}), up ({up}) or out ({out})")
    })
}

/// An elementwise `op` of one input (`gelu`; `scale` and `softcap` in place, with `out` = `x`):
/// `x` and `out` of at least `len`.
pub fn unary(op: &'static str, x: usize, len: usize, out: usize) -> Result<()> {
    ensure(x >= len && out >= len, op, || {
        format!("len {len} exceeds x ({x}) or out ({out})")
    })
}

/// `layer_norm`: as [`rms_norm`], and a bias of `dim`.
pub fn layer_norm(x: usize, w: usize, b: usize, rows: usize, dim: usize, out: usize) -> Result<()> {
    norm("layer_norm", x, w, rows, dim, out)?;
    ensure(b >= dim, "layer_norm", || {
        format!("the bias holds {b} values, need dim {dim}")
    })
}

/// `rope`: `x` of `n_tokens × n_heads × head_dim` (`n_tokens` = the number of positions), an
/// even `n_rot ≤ head_dim`, and `n_rot / 2` frequency factors when there are any.
pub fn rope(
    x: usize,
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    freq_factors: Option<usize>,
) -> Result<()> {
    let need = size("rope", &[n_tokens, n_heads, head_dim])?;
    ensure(x >= need, "rope", || {
        format!("x holds {x} values, need {n_tokens} tokens × {n_heads} heads × {head_dim}")
    })?;
    ensure(n_rot <= head_dim && n_rot.is_multiple_of(2), "rope", || {
        format!("n_rot {n_rot} must be even and ≤ head_dim {head_dim}")
    })?;
    let half = n_rot / 2;
    match freq_factors {
        Some(f) if f < half => Err(OpError::Shape {
            op: "rope",
            msg: format!("{f} freq factors, need {half}"),
        }),
        _ => Ok(()),
    }
}

/// Query heads that share KV heads evenly (grouped-query attention).
fn heads(op: &'static str, n_heads: usize, n_kv_heads: usize) -> Result<()> {
    ensure(
        n_kv_heads > 0 && n_heads.is_multiple_of(n_kv_heads),
        op,
        || format!("{n_heads} query heads are not a multiple of {n_kv_heads} KV heads"),
    )
}

/// `attention`: `q` and `out` of `n_tokens × n_heads × head_dim`, caches `k` and `v` of at
/// least `pos0 + n_tokens` positions of `n_kv_heads × head_dim`, `n_heads` a multiple of
/// `n_kv_heads`.
pub fn attention(q: usize, k: usize, v: usize, p: &AttnParams, out: usize) -> Result<()> {
    const OP: &str = "attention";
    heads(OP, p.n_heads, p.n_kv_heads)?;
    window(OP, p.window)?;
    let n_kv = sum(OP, p.pos0, p.n_tokens)?;
    let kv_dim = size(OP, &[p.n_kv_heads, p.head_dim])?;
    let cache = size(OP, &[n_kv, kv_dim])?;
    ensure(k >= cache && v >= cache, OP, || {
        let held = k.min(v) / kv_dim.max(1);
        format!("the cache holds {held} positions, need {n_kv}")
    })?;
    let rows = size(OP, &[p.n_tokens, p.n_heads, p.head_dim])?;
    ensure(q >= rows && out >= rows, OP, || {
        format!(
            "q ({q}) or out ({out}) holds fewer than {} tokens × {} heads × {} values",
            p.n_tokens, p.n_heads, p.head_dim
        )
    })
}

/// A window, when there is one, holds at least the query's own position.
fn window(op: &'static str, window: Option<usize>) -> Result<()> {
    ensure(window != Some(0), op, || "a window of 0 positions".into())
}

/// `attention_full`: `q`, `out`, `k` and `v` of `n_tokens` rows (`n_heads × head_dim` for
/// `q` and `out`, `n_kv_heads × head_dim` for `k` and `v`), `n_heads` a multiple of
/// `n_kv_heads`.
pub fn attention_full(q: usize, k: usize, v: usize, p: &FullAttnParams, out: usize) -> Result<()> {
    const OP: &str = "attention_full";
    heads(OP, p.n_heads, p.n_kv_heads)?;
    let kv = size(OP, &[p.n_tokens, p.n_kv_heads, p.head_dim])?;
    let rows = size(OP, &[p.n_tokens, p.n_heads, p.head_dim])?;
    ensure(q >= rows && out >= rows && k >= kv && v >= kv, OP, || {
        format!(
            "{} tokens need q and out of {rows} values (have {q}, {out}), k and v of {kv} \
             (have {k}, {v})",
            p.n_tokens
        )
    })
}

/// The parameters of `attention_paged`: GQA heads, a positive block size, a window of at
/// least one position.
pub fn paged_params(p: &PagedParams) -> Result<()> {
    heads("attention_paged", p.n_heads, p.n_kv_heads)?;
    window("attention_paged", p.window)?;
    ensure(p.block_size > 0, "attention_paged", || {
        "the block size must be positive".into()
    })
}

/// The block tables of `attention_paged`: each sequence lists a block for every position it
/// attends to (`pos0 + n_tokens` of them).
pub fn paged_tables(seqs: &[PagedSeq<'_>], p: &PagedParams) -> Result<()> {
    for (i, s) in seqs.iter().enumerate() {
        let n_kv = sum("attention_paged", s.pos0, s.n_tokens)?;
        ensure(
            s.blocks.len() >= n_kv.div_ceil(p.block_size.max(1)),
            "attention_paged",
            || {
                format!(
                    "sequence {i}: {n_kv} positions need more than {} blocks of {}",
                    s.blocks.len(),
                    p.block_size
                )
            },
        )?;
    }
    Ok(())
}

/// `attention_paged`: [`paged_params`], [`paged_tables`], every slot a sequence reads inside
/// both pools (`[n_blocks × block_size, n_kv_heads × head_dim]`), and its query rows inside
/// `q` and `out` (`n_heads × head_dim` values each).
pub fn attention_paged(
    q: usize,
    k_pool: usize,
    v_pool: usize,
    seqs: &[PagedSeq<'_>],
    p: &PagedParams,
    out: usize,
) -> Result<()> {
    const OP: &str = "attention_paged";
    paged_params(p)?;
    paged_tables(seqs, p)?;
    let kv_dim = size(OP, &[p.n_kv_heads, p.head_dim])?;
    let q_dim = size(OP, &[p.n_heads, p.head_dim])?;
    let pool = k_pool.min(v_pool);
    let bs = p.block_size;
    for (i, s) in seqs.iter().enumerate() {
        let n_kv = s.pos0 + s.n_tokens;
        for (j, &blk) in s.blocks.iter().take(n_kv.div_ceil(bs)).enumerate() {
            // The slots of block `j` that the sequence reads: all but those past `n_kv`.
            let used = (n_kv - j * bs).min(bs);
            let end = sum(OP, size(OP, &[blk as usize, bs])?, used)?;
            ensure(size(OP, &[end, kv_dim])? <= pool, OP, || {
                format!(
                    "sequence {i}: block {blk} is outside pools of {} slots",
                    pool / kv_dim.max(1)
                )
            })?;
        }
        let rows = size(OP, &[sum(OP, s.q_row, s.n_tokens)?, q_dim])?;
        ensure(q >= rows && out >= rows, OP, || {
            let (first, end) = (s.q_row, s.q_row + s.n_tokens);
            format!(
                "sequence {i}: rows {first}..{end} of {q_dim} do not fit q ({q}) and out ({out})"
            )
        })?;
    }
    Ok(())
}

/// `kv_write`: `n` rows of `kv_dim` from `src` to positions `pos0 ..` of `cache`.
pub fn kv_write(src: usize, cache: usize, pos0: usize, n: usize, kv_dim: usize) -> Result<()> {
    let len = size("kv_write", &[n, kv_dim])?;
    let end = size("kv_write", &[sum("kv_write", pos0, n)?, kv_dim])?;
    ensure(src >= len && cache >= end, "kv_write", || {
        format!("{n} rows of {kv_dim} at {pos0} do not fit the cache ({cache}) or src ({src})")
    })
}

/// `kv_write_slots`: `slots.len()` rows of `kv_dim` in `src`, every slot inside `pool`.
pub fn kv_write_slots(src: usize, pool: usize, slots: &[u32], kv_dim: usize) -> Result<()> {
    let n = slots.len();
    let need = size("kv_write_slots", &[n, kv_dim])?;
    ensure(src >= need, "kv_write_slots", || {
        format!("{n} rows of {kv_dim}: the source holds only {src} values")
    })?;
    let Some(&max) = slots.iter().max() else {
        return Ok(());
    };
    let end = size("kv_write_slots", &[max as usize + 1, kv_dim])?;
    ensure(end <= pool, "kv_write_slots", || {
        format!(
            "slot {max} is outside the pool of {} slots",
            pool / kv_dim.max(1)
        )
    })
}

/// `argmax_rows` (`argmax` is one row): `rows × len` values in `x`.
pub fn argmax(x: usize, rows: usize, len: usize) -> Result<()> {
    let need = size("argmax", &[rows, len])?;
    ensure(need <= x, "argmax", || {
        format!("{rows} rows of {len} exceed a buffer of {x}")
    })
}

/// `sample_rows`: `rows.len()` rows of `vocab` logits in a buffer of `logits`; every row's
/// mask covers the vocabulary, its parameters are in range and its uniform is in [0, 1).
pub fn sample_rows(logits: usize, vocab: usize, rows: &[SampleRow<'_>]) -> Result<()> {
    let op = "sample_rows";
    ensure(vocab > 0, op, || "a vocabulary of 0 tokens".into())?;
    let need = size(op, &[rows.len(), vocab])?;
    ensure(need <= logits, op, || {
        format!("{} rows of {vocab} exceed a buffer of {logits}", rows.len())
    })?;
    let words = vocab.div_ceil(32);
    for (r, row) in rows.iter().enumerate() {
        let p = &row.params;
        let bad = |what: String| OpError::Shape {
            op,
            msg: format!("row {r}: {what}"),
        };
        if let Some(m) = row.mask.filter(|m| m.len() < words) {
            return Err(bad(format!(
                "a mask of {} words for {vocab} tokens (needs {words})",
                m.len()
            )));
        }
        if !p.temperature.is_finite() {
            return Err(bad(format!("temperature {}", p.temperature)));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            return Err(bad(format!("top_p {} outside (0, 1]", p.top_p)));
        }
        if !(0.0..=1.0).contains(&p.min_p) {
            return Err(bad(format!("min_p {} outside [0, 1]", p.min_p)));
        }
        let finite = [
            p.repetition_penalty,
            p.presence_penalty,
            p.frequency_penalty,
        ]
        .iter()
        .all(|x| x.is_finite());
        if !(finite && p.repetition_penalty > 0.0) {
            return Err(bad(
                "penalties must be finite, repetition_penalty > 0".into()
            ));
        }
        let mut last = None;
        for &(t, b) in row.bias {
            if t as usize >= vocab || !b.is_finite() || last.is_some_and(|l| l >= t) {
                return Err(bad(format!(
                    "logit bias {b} of token {t}: biases need finite values and distinct \
                     ids below {vocab} in increasing order"
                )));
            }
            last = Some(t);
        }
        if let Some(n) = p.top_logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(bad(format!(
                "{n} top logprobs (at most {MAX_TOP_LOGPROBS})"
            )));
        }
        if !(0.0..1.0).contains(&row.u) {
            return Err(bad(format!("uniform {} outside [0, 1)", row.u)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::{CpuBackend, GgmlBackend, ReferenceBackend};

    /// The op a shape error names, and its message.
    fn shape_err(r: Result<()>) -> (&'static str, String) {
        match r {
            Err(OpError::Shape { op, msg }) => (op, msg),
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    fn attn(n_heads: usize, n_kv_heads: usize) -> AttnParams {
        AttnParams {
            n_tokens: 2,
            pos0: 3,
            n_heads,
            n_kv_heads,
            head_dim: 8,
            scale: 1.0,
            window: None,
        }
    }

    fn paged(n_heads: usize, n_kv_heads: usize, block_size: usize) -> PagedParams {
        PagedParams {
            n_heads,
            n_kv_heads,
            head_dim: 4,
            scale: 1.0,
            block_size,
            window: None,
        }
    }

    #[test]
    fn a_buffer_one_value_short_is_an_error_naming_the_op() {
        // Exact fits pass; one value less in any buffer fails. Sizes by hand: W 3×5, n = 2.
        matmul((3, 5), 10, 2, 6).unwrap();
        let (op, msg) = shape_err(matmul((3, 5), 9, 2, 6));
        assert_eq!(op, "matmul");
        assert!(msg.contains("x needs 10 values (has 9)"), "{msg}");
        assert_eq!(shape_err(matmul((3, 5), 10, 2, 5)).0, "matmul");
        rms_norm(12, 4, 3, 4, 12).unwrap();
        assert_eq!(shape_err(rms_norm(11, 4, 3, 4, 12)).0, "rms_norm");
        assert_eq!(shape_err(rms_norm(12, 3, 3, 4, 12)).0, "rms_norm");
        add_rms_norm(12, 12, 4, 3, 4, 12).unwrap();
        assert_eq!(
            shape_err(add_rms_norm(11, 12, 4, 3, 4, 12)).0,
            "add_rms_norm"
        );
        assert_eq!(shape_err(add(4, 3, 4)).0, "add");
        assert_eq!(shape_err(add_bias(6, 2, 2, 3)).0, "add_bias");
        assert_eq!(shape_err(swiglu(4, 4, 4, 3)).0, "swiglu");
        embedding((10, 4), &[0, 9], 8).unwrap();
        assert_eq!(shape_err(embedding((10, 4), &[0, 9], 7)).0, "embedding");
        let (op, msg) = shape_err(embedding((10, 4), &[10], 4));
        assert_eq!(op, "embedding");
        assert!(msg.contains("token id 10"), "{msg}");
        argmax(6, 2, 3).unwrap();
        assert_eq!(shape_err(argmax(5, 2, 3)).0, "argmax");
        download(4, 4).unwrap();
        assert_eq!(shape_err(download(4, 5)).0, "download");
        copy(4, 1, 6, 3, 3).unwrap();
        assert_eq!(shape_err(copy(4, 2, 6, 0, 3)).0, "copy");
        assert_eq!(shape_err(copy(4, 0, 6, 4, 3)).0, "copy");
        // Attention: 5 positions of 2 KV heads × 8 in the caches, 2 tokens × 4 heads × 8.
        let p = attn(4, 2);
        attention(64, 80, 80, &p, 64).unwrap();
        let (op, msg) = shape_err(attention(64, 79, 80, &p, 64));
        assert_eq!(op, "attention");
        assert!(msg.contains("need 5"), "{msg}");
        assert_eq!(shape_err(attention(64, 80, 80, &p, 63)).0, "attention");
        kv_write(8, 24, 1, 2, 4).unwrap();
        assert_eq!(shape_err(kv_write(7, 24, 1, 2, 4)).0, "kv_write");
        assert_eq!(shape_err(kv_write(8, 11, 1, 2, 4)).0, "kv_write");
    }

    #[test]
    fn a_bad_gqa_ratio_is_an_error_naming_the_op() {
        let (op, msg) = shape_err(attention(1 << 20, 1 << 20, 1 << 20, &attn(4, 3), 1 << 20));
        assert_eq!(op, "attention");
        assert!(
            msg.contains("4 query heads are not a multiple of 3 KV heads"),
            "{msg}"
        );
        assert_eq!(
            shape_err(attention(64, 80, 80, &attn(4, 0), 64)).0,
            "attention"
        );
        assert_eq!(
            shape_err(paged_params(&paged(9, 2, 16))).0,
            "attention_paged"
        );
        assert_eq!(
            shape_err(paged_params(&paged(8, 2, 0))).0,
            "attention_paged"
        );
        paged_params(&paged(9, 3, 16)).unwrap();
    }

    #[test]
    fn an_odd_or_too_large_n_rot_is_an_error_naming_the_op() {
        rope(16, 2, 2, 4, 4, Some(2)).unwrap();
        rope(16, 2, 2, 4, 0, None).unwrap();
        let (op, msg) = shape_err(rope(16, 2, 2, 4, 3, None));
        assert_eq!(op, "rope");
        assert!(msg.contains("n_rot 3 must be even"), "{msg}");
        assert_eq!(shape_err(rope(16, 2, 2, 4, 6, None)).0, "rope");
        assert_eq!(shape_err(rope(16, 2, 2, 4, 4, Some(1))).0, "rope");
        assert_eq!(shape_err(rope(15, 2, 2, 4, 4, None)).0, "rope");
    }

    #[test]
    fn paged_tables_and_pools_are_checked_per_sequence() {
        // Blocks of 2 slots of kv_dim 4 (one KV head): pools of 3 blocks hold 24 values.
        let p = paged(2, 1, 2);
        let seq = |blocks, pos0, n_tokens| PagedSeq {
            q_row: 1,
            n_tokens,
            pos0,
            blocks,
        };
        // Positions 0..3 in blocks [2, 0]: block 2 whole, slot 0 of block 0. Rows 1..2 of q.
        let ok = [seq(&[2, 0][..], 2, 1)];
        attention_paged(16, 24, 24, &ok, &p, 16).unwrap();
        // Block 2 read whole needs 24 values.
        let (op, msg) = shape_err(attention_paged(16, 23, 24, &ok, &p, 16));
        assert_eq!(op, "attention_paged");
        assert!(msg.contains("sequence 0: block 2"), "{msg}");
        // Only the used slot of the last block counts: block 3's slot 0 ends at value 28.
        let last = [seq(&[0, 3][..], 2, 1)];
        attention_paged(16, 28, 28, &last, &p, 16).unwrap();
        assert!(attention_paged(16, 27, 28, &last, &p, 16).is_err());
        // Four positions need two blocks.
        let (op, msg) = shape_err(attention_paged(16, 24, 24, &[seq(&[0][..], 2, 2)], &p, 16));
        assert_eq!(op, "attention_paged");
        assert!(
            msg.contains("4 positions need more than 1 blocks of 2"),
            "{msg}"
        );
        // Query rows 1..2 of 8 values: 16 needed.
        assert!(attention_paged(15, 24, 24, &ok, &p, 16).is_err());
        assert!(attention_paged(16, 24, 24, &ok, &p, 15).is_err());
        kv_write_slots(8, 24, &[5, 0], 4).unwrap();
        let (op, msg) = shape_err(kv_write_slots(8, 24, &[6, 0], 4));
        assert_eq!(op, "kv_write_slots");
        assert!(msg.contains("slot 6"), "{msg}");
        assert_eq!(
            shape_err(kv_write_slots(7, 24, &[5, 0], 4)).0,
            "kv_write_slots"
        );
    }

    #[test]
    fn sizes_that_overflow_are_errors_not_panics() {
        assert_eq!(shape_err(matmul((3, usize::MAX), 0, 2, 0)).0, "matmul");
        assert_eq!(shape_err(copy(4, usize::MAX, 6, 0, 2)).0, "copy");
        assert_eq!(shape_err(argmax(4, usize::MAX, 2)).0, "argmax");
        let p = AttnParams {
            pos0: usize::MAX,
            ..attn(4, 2)
        };
        assert_eq!(shape_err(attention(64, 80, 80, &p, 64)).0, "attention");
        assert_eq!(shape_err(kv_write(8, 24, usize::MAX, 2, 4)).0, "kv_write");
    }

    #[test]
    fn sample_rows_checks_masks_parameters_and_uniforms() {
        let row = |f: &dyn Fn(&mut SampleRow<'static>)| {
            let mut r = SampleRow {
                params: crate::SampleParams::greedy(),
                history: &[7, 100_000],
                mask: None,
                bias: &[],
                u: 0.5,
            };
            f(&mut r);
            r
        };
        let ok = row(&|_| {});
        sample_rows(66, 33, &[ok, ok]).unwrap();
        let msg = |r: Result<()>| shape_err(r).1;
        assert!(msg(sample_rows(65, 33, &[ok, ok])).contains("2 rows of 33"));
        assert!(msg(sample_rows(0, 0, &[])).contains("0 tokens"));
        assert_eq!(
            shape_err(sample_rows(8, usize::MAX, &[ok, ok])).0,
            "sample_rows"
        );
        static ONE: [u32; 1] = [u32::MAX];
        static TWO: [u32; 2] = [u32::MAX; 2];
        assert!(msg(sample_rows(33, 33, &[row(&|r| r.mask = Some(&ONE))])).contains("needs 2"));
        sample_rows(33, 33, &[row(&|r| r.mask = Some(&TWO))]).unwrap();
        let bad: [&dyn Fn(&mut SampleRow<'static>); 7] = [
            &|r| r.params.temperature = f32::NAN,
            &|r| r.params.top_p = 0.0,
            &|r| r.params.min_p = 1.5,
            &|r| r.params.repetition_penalty = 0.0,
            &|r| r.params.frequency_penalty = f32::INFINITY,
            &|r| r.params.top_logprobs = Some(MAX_TOP_LOGPROBS + 1),
            &|r| r.u = 1.0,
        ];
        for f in bad {
            let m = msg(sample_rows(66, 33, &[ok, row(f)]));
            assert!(m.starts_with("row 1: "), "{m}");
        }
    }

    /// The host backends report a bad call alike: they share these checks.
    fn bad_calls<B: Backend<Buf = Vec<f32>>>(b: &B) -> Vec<(&'static str, String)> {
        let r = |r: Result<()>| shape_err(r);
        let buf = |n: usize| vec![0f32; n];
        let rp = crate::RopeParams {
            style: crate::RopeStyle::Normal,
            theta: 1e4,
            n_rot: 3,
        };
        vec![
            r(b.rms_norm(&buf(11), &buf(4), 1e-5, 3, 4, &mut buf(12))),
            r(b.swiglu(&buf(4), &buf(3), 4, &mut buf(4))),
            r(b.add(&mut buf(3), &buf(4), 4)),
            r(b.rope(&mut buf(16), &[0, 1], 2, 4, rp, None)),
            r(b.attention(&buf(64), &buf(80), &buf(80), attn(4, 3), &mut buf(64))),
            r(b.attention(&buf(64), &buf(79), &buf(80), attn(4, 2), &mut buf(64))),
            r(b.kv_write_slots(&buf(8), &mut buf(24), &[6, 0], 4)),
            r(b.copy(&buf(4), 2, &mut buf(6), 0, 3)),
        ]
    }

    #[test]
    fn the_host_backends_give_the_same_errors() {
        let want = bad_calls(&ReferenceBackend::default());
        let ops: Vec<&str> = want.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            ops,
            [
                "rms_norm",
                "swiglu",
                "add",
                "rope",
                "attention",
                "attention",
                "kv_write_slots",
                "copy"
            ]
        );
        assert_eq!(bad_calls(&CpuBackend::with_threads(1)), want);
        assert_eq!(bad_calls(&GgmlBackend::default()), want);
    }
}
