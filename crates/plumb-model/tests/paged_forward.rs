//! The paged forward gives the logits of the contiguous one: mixed prefill + decode batches,
//! positions across block boundaries, and a forked sequence after copy-on-write.

mod common;

use common::{max_diff, tiny_model};
use plumb_model::{BlockTable, Logits, Model, PagedItem, PagedKv};
use plumb_ops::ReferenceBackend;

/// Logits of the last token of `tokens` run alone through a contiguous cache.
fn alone(m: &Model<ReferenceBackend>, tokens: &[u32]) -> Vec<f32> {
    let mut c = m.new_cache(64).unwrap();
    m.forward(tokens, &mut c, Logits::Last).unwrap()
}

#[test]
fn paged_equals_contiguous() {
    let m = tiny_model("paged");
    // Blocks of 4 positions: prompts of 3, 6 and 9 cross block boundaries as they grow.
    let mut kv = PagedKv::with_capacity_tokens(&m, 4 * 16, 4).unwrap();
    let seqs: Vec<Vec<u32>> = vec![
        vec![5, 17, 200],
        vec![9, 8, 7, 6, 5, 4],
        vec![42, 42, 7, 1, 299, 8, 77, 3, 2],
    ];
    let mut tables = vec![BlockTable::default(); 3];
    let mut hist: Vec<Vec<u32>> = vec![Vec::new(); 3];

    // Step 1: the first two prefill; step 2: they decode while the third prefills;
    // steps 3..6: all decode.
    let plan: Vec<Vec<(usize, Vec<u32>)>> = vec![
        vec![(0, seqs[0].clone()), (1, seqs[1].clone())],
        vec![(0, vec![11]), (2, seqs[2].clone()), (1, vec![12])],
        vec![(0, vec![13]), (1, vec![14]), (2, vec![15])],
        vec![(2, vec![16]), (0, vec![17, 18]), (1, vec![19])],
        vec![(0, vec![20]), (1, vec![21]), (2, vec![22])],
    ];
    for step in plan {
        let mut items: Vec<PagedItem<'_>> = Vec::new();
        let mut rest: Vec<Option<&mut BlockTable>> = tables.iter_mut().map(Some).collect();
        for (i, toks) in &step {
            items.push(PagedItem {
                tokens: toks,
                table: rest[*i].take().unwrap(),
            });
        }
        let logits = m.forward_paged(&mut kv, &mut items).unwrap();
        for ((i, toks), l) in step.iter().zip(&logits) {
            hist[*i].extend_from_slice(toks);
            let d = max_diff(l, &alone(&m, &hist[*i]));
            assert!(
                d < 1e-4,
                "sequence {i} at {}: paged logits differ by {d}",
                hist[*i].len()
            );
        }
    }
    for (t, h) in tables.iter().zip(&hist) {
        assert_eq!(t.len, h.len());
        assert_eq!(t.blocks.len(), h.len().div_ceil(4));
    }

    // Fork sequence 1 (11 positions: block 2 is partly filled and shared), then both write.
    let used = kv.used_blocks();
    let mut fork = kv.fork(&tables[1]);
    assert_eq!(kv.used_blocks(), used);
    let mut fh = hist[1].clone();
    let mut items = vec![
        PagedItem {
            tokens: &[100],
            table: &mut fork,
        },
        PagedItem {
            tokens: &[200, 201],
            table: &mut tables[1],
        },
    ];
    let logits = m.forward_paged(&mut kv, &mut items).unwrap();
    assert_eq!(kv.used_blocks(), used + 1, "one copied block");
    fh.push(100);
    hist[1].extend_from_slice(&[200, 201]);
    assert!(max_diff(&logits[0], &alone(&m, &fh)) < 1e-4);
    assert!(max_diff(&logits[1], &alone(&m, &hist[1])) < 1e-4);
    // The fork keeps its own copy after more tokens.
    let mut items = vec![PagedItem {
        tokens: &[101, 102, 103, 104, 105],
        table: &mut fork,
    }];
    let logits = m.forward_paged(&mut kv, &mut items).unwrap();
    fh.extend_from_slice(&[101, 102, 103, 104, 105]);
    assert!(max_diff(&logits[0], &alone(&m, &fh)) < 1e-4);

    kv.free(fork);
    for t in tables {
        kv.free(t);
    }
    assert_eq!(kv.free_blocks(), kv.n_blocks());
}

#[test]
fn paged_argmax_is_the_greedy_token_of_the_paged_logits() {
    let m = tiny_model("paged-am");
    let (mut kv_l, mut kv_a) = (
        PagedKv::with_capacity_tokens(&m, 4 * 16, 4).unwrap(),
        PagedKv::with_capacity_tokens(&m, 4 * 16, 4).unwrap(),
    );
    let mut tl = vec![BlockTable::default(); 3];
    let mut ta = vec![BlockTable::default(); 3];
    let mut next: Vec<Vec<u32>> = vec![
        vec![3, 1, 4, 1, 5],
        vec![9, 2, 6],
        vec![5, 3, 5, 8, 9, 7, 9],
    ];
    assert!(m
        .forward_paged_argmax(&mut kv_a, &mut [])
        .unwrap()
        .is_empty());
    for step in 0..6 {
        let mut items: Vec<PagedItem<'_>> = next
            .iter()
            .zip(tl.iter_mut())
            .map(|(t, table)| PagedItem { tokens: t, table })
            .collect();
        let logits = m.forward_paged(&mut kv_l, &mut items).unwrap();
        let mut items: Vec<PagedItem<'_>> = next
            .iter()
            .zip(ta.iter_mut())
            .map(|(t, table)| PagedItem { tokens: t, table })
            .collect();
        let ids = m.forward_paged_argmax(&mut kv_a, &mut items).unwrap();
        let want: Vec<u32> = logits
            .iter()
            .map(|l| {
                let mut best = 0;
                for (i, &v) in l.iter().enumerate() {
                    if v > l[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect();
        assert_eq!(ids, want, "step {step}");
        assert_eq!(
            tl.iter().map(|t| t.len).collect::<Vec<_>>(),
            ta.iter().map(|t| t.len).collect::<Vec<_>>()
        );
        next = ids.iter().map(|&i| vec![i]).collect();
    }
}
