//! Cases of attention over a contiguous cache, over a paged pool, and bidirectional.

use plumb_core::GgmlType;

use super::{tolerance, Ctx, Output};
use crate::backend::{AttnParams, Backend, FullAttnParams, PagedParams, PagedSeq};
use crate::ops;

pub(super) fn attention<B: Backend>(cx: &mut Ctx<B>, quick: bool) {
    // (n_tokens, pos0, n_heads, n_kv_heads, head_dim, window): decode and prefill, GQA
    // 1/3/4/8, sliding windows that cut every row, some rows, or none (a window past the
    // start), head_dim 256 (Gemma 3).
    let mut cases = vec![
        (1, 0, 4, 4, 64, None),
        (1, 37, 9, 3, 64, None),
        (7, 0, 9, 3, 64, None),
        (16, 21, 8, 2, 128, None),
        (5, 3, 8, 1, 64, None),
        (33, 100, 4, 4, 64, None),
        (1, 600, 4, 1, 64, Some(512)),
        (16, 21, 8, 2, 128, Some(8)),
        (33, 100, 4, 4, 64, Some(120)),
        (3, 40, 4, 1, 256, Some(16)),
        (5, 2, 4, 1, 256, None),
    ];
    if !quick {
        cases.push((1, 4000, 32, 8, 128, None));
        cases.push((128, 0, 9, 3, 64, None));
        cases.push((64, 1000, 8, 8, 128, None));
        cases.push((1, 4000, 32, 8, 128, Some(1000)));
        cases.push((128, 500, 9, 3, 64, Some(512)));
    }
    for (n, pos0, h, kvh, hd, window) in cases {
        let cap = pos0 + n + 3; // a cache larger than what is attended
        let q = cx.rng.normals(n * h * hd, 1.0);
        let k = cx.rng.normals(cap * kvh * hd, 1.0);
        let v = cx.rng.normals(cap * kvh * hd, 1.0);
        let p = AttnParams {
            n_tokens: n,
            pos0,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let run = (|| {
            let mut want = vec![0f32; n * h * hd];
            ops::attention::reference(&q, &k, &v, p, &mut want)?;
            let mut out = cx.poisoned(n * h * hd)?;
            cx.b.attention(
                &cx.b.upload(&q)?,
                &cx.b.upload(&k)?,
                &cx.b.upload(&v)?,
                p,
                &mut out,
            )?;
            Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
        })();
        let shape = format!(
            "{n} tok at {pos0}, heads {h}/{kvh}, dim {hd}{}",
            window_text(window)
        );
        cx.case(
            "attention",
            "F32".into(),
            shape,
            tolerance("attention", GgmlType::F32),
            run,
        );
    }
}

pub(super) fn attention_paged<B: Backend>(cx: &mut Ctx<B>) {
    // (sequences as (n_tokens, pos0), heads, kv heads, head_dim, block size): decode batches,
    // mixed prefill and decode, GQA 1/3/4/8, positions that end mid-block.
    // Then the same with sliding windows (one of them cutting mid-block). And a decode batch
    // of 40 sequences × 8 KV heads: enough (item, KV head) pairs that a GPU launcher may not
    // split the keys, where the smaller batches are split.
    type Case = (
        &'static [(usize, usize)],
        usize,
        usize,
        usize,
        usize,
        Option<usize>,
    );
    const MANY: &[(usize, usize)] = &[
        (1, 20),
        (1, 57),
        (1, 94),
        (1, 131),
        (1, 168),
        (1, 55),
        (1, 92),
        (1, 129),
        (1, 166),
        (1, 53),
        (1, 90),
        (1, 127),
        (1, 164),
        (1, 51),
        (1, 88),
        (1, 125),
        (1, 162),
        (1, 49),
        (1, 86),
        (1, 123),
        (1, 160),
        (1, 47),
        (1, 84),
        (1, 121),
        (1, 158),
        (1, 45),
        (1, 82),
        (1, 119),
        (1, 156),
        (1, 43),
        (1, 80),
        (1, 117),
        (1, 154),
        (1, 41),
        (1, 78),
        (1, 115),
        (1, 152),
        (1, 39),
        (1, 76),
        (1, 113),
    ];
    let cases: [Case; 9] = [
        (&[(1, 0), (1, 17), (1, 40)], 9, 3, 64, 16, None),
        (&[(5, 0), (1, 100), (3, 31)], 8, 2, 128, 16, None),
        (&[(1, 63), (1, 64), (1, 65), (1, 1)], 8, 1, 64, 32, None),
        (&[(7, 9)], 4, 4, 64, 16, None),
        (&[(2, 200), (16, 0)], 32, 8, 128, 16, None),
        (&[(5, 0), (1, 100), (3, 31)], 8, 2, 128, 16, Some(20)),
        (&[(1, 63), (1, 64), (1, 65), (1, 1)], 8, 1, 64, 32, Some(37)),
        (&[(4, 60), (1, 9)], 4, 1, 256, 16, Some(16)),
        (MANY, 32, 8, 128, 16, None),
    ];
    for (seq_shapes, h, kvh, hd, bs, window) in cases {
        let kv_dim = kvh * hd;
        // Give every sequence enough blocks, drawn from a shuffled pool so tables are scattered.
        let need: Vec<usize> = seq_shapes
            .iter()
            .map(|&(n, p0)| (p0 + n).div_ceil(bs))
            .collect();
        let n_blocks: usize = need.iter().sum::<usize>() + 3;
        let mut order: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..order.len()).rev() {
            let j = cx.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut tables = Vec::new();
        let mut next = 0;
        for &nb in &need {
            tables.push(order[next..next + nb].to_vec());
            next += nb;
        }
        let rows: usize = seq_shapes.iter().map(|s| s.0).sum();
        let q = cx.rng.normals(rows * h * hd, 1.0);
        let k = cx.rng.normals(n_blocks * bs * kv_dim, 1.0);
        let v = cx.rng.normals(n_blocks * bs * kv_dim, 1.0);
        let mut row = 0;
        let seqs: Vec<PagedSeq<'_>> = seq_shapes
            .iter()
            .zip(&tables)
            .map(|(&(n, p0), t)| {
                let s = PagedSeq {
                    q_row: row,
                    n_tokens: n,
                    pos0: p0,
                    blocks: t,
                };
                row += n;
                s
            })
            .collect();
        let p = PagedParams {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            block_size: bs,
            window,
        };
        let run = (|| {
            let mut want = vec![0f32; rows * h * hd];
            ops::paged_attention::reference(&q, &k, &v, &seqs, p, &mut want)?;
            let mut out = cx.poisoned(rows * h * hd)?;
            cx.b.attention_paged(
                &cx.b.upload(&q)?,
                &cx.b.upload(&k)?,
                &cx.b.upload(&v)?,
                &seqs,
                p,
                &mut out,
            )?;
            Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
        })();
        let shape = format!(
            "{} seqs, heads {h}/{kvh}, dim {hd}, block {bs}{}",
            seqs.len(),
            window_text(window)
        );
        let tol = tolerance("attention_paged", GgmlType::F32);
        cx.case("attention_paged", "F32".into(), shape, tol, run);
    }
}

/// Bidirectional attention: one token (a row that sees only itself), sentence lengths of an
/// encoder batch, GQA 1 and 3.
pub(super) fn attention_full<B: Backend>(cx: &mut Ctx<B>) {
    for (n, h, kvh, hd) in [
        (1, 12, 12, 32),
        (7, 12, 12, 32),
        (33, 9, 3, 64),
        (128, 4, 4, 64),
    ] {
        let q = cx.rng.normals(n * h * hd, 1.0);
        let k = cx.rng.normals(n * kvh * hd, 1.0);
        let v = cx.rng.normals(n * kvh * hd, 1.0);
        let p = FullAttnParams {
            n_tokens: n,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let run = (|| {
            let mut want = vec![0f32; n * h * hd];
            ops::attention::full(&q, &k, &v, p, &mut want)?;
            let mut out = cx.poisoned(n * h * hd)?;
            let (qb, kb, vb) = (cx.b.upload(&q)?, cx.b.upload(&k)?, cx.b.upload(&v)?);
            cx.b.attention_full(&qb, &kb, &vb, p, &mut out)?;
            Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
        })();
        let shape = format!("{n} tok, heads {h}/{kvh}, dim {hd}");
        let tol = tolerance("attention_full", GgmlType::F32);
        cx.case("attention_full", "F32".into(), shape, tol, run);
    }
}

fn window_text(window: Option<usize>) -> String {
    window.map_or(String::new(), |w| format!(", window {w}"))
}
