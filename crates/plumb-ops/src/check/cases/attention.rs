//! Cases of attention over a contiguous cache and over a paged pool.

use plumb_core::GgmlType;

use super::{tolerance, Ctx, Output};
use crate::backend::{AttnParams, Backend, PagedParams, PagedSeq};
use crate::ops;

pub(super) fn attention<B: Backend>(cx: &mut Ctx<B>, quick: bool) {
    // (n_tokens, pos0, n_heads, n_kv_heads, head_dim): decode and prefill, GQA 1/3/4/8.
    let mut cases = vec![
        (1, 0, 4, 4, 64),
        (1, 37, 9, 3, 64),
        (7, 0, 9, 3, 64),
        (16, 21, 8, 2, 128),
        (5, 3, 8, 1, 64),
        (33, 100, 4, 4, 64),
    ];
    if !quick {
        cases.push((1, 4000, 32, 8, 128));
        cases.push((128, 0, 9, 3, 64));
        cases.push((64, 1000, 8, 8, 128));
    }
    for (n, pos0, h, kvh, hd) in cases {
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
        let shape = format!("{n} tok at {pos0}, heads {h}/{kvh}, dim {hd}");
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
    type Case = (&'static [(usize, usize)], usize, usize, usize, usize);
    let cases: [Case; 5] = [
        (&[(1, 0), (1, 17), (1, 40)], 9, 3, 64, 16),
        (&[(5, 0), (1, 100), (3, 31)], 8, 2, 128, 16),
        (&[(1, 63), (1, 64), (1, 65), (1, 1)], 8, 1, 64, 32),
        (&[(7, 9)], 4, 4, 64, 16),
        (&[(2, 200), (16, 0)], 32, 8, 128, 16),
    ];
    for (seq_shapes, h, kvh, hd, bs) in cases {
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
        let shape = format!("{} seqs, heads {h}/{kvh}, dim {hd}, block {bs}", seqs.len());
        let tol = tolerance("attention_paged", GgmlType::F32);
        cx.case("attention_paged", "F32".into(), shape, tol, run);
    }
}
