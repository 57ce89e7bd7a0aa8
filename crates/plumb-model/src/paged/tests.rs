//! The pool's bookkeeping on a tiny synthetic model: allocation, forks and copy-on-write,
//! out-of-blocks, and the prefix cache (named blocks reused with the same keys and values,
//! eviction that spares held blocks).

use super::*;
use crate::synth::{write_synthetic, SynthShape};
use plumb_ops::ReferenceBackend;

fn model(name: &str) -> Model<ReferenceBackend> {
    let shape = SynthShape {
        name: "tiny",
        arch: "llama",
        n_layers: 1,
        d_model: 32,
        d_ff: 64,
        n_heads: 2,
        n_kv_heads: 1,
        vocab: 64,
        ctx: 64,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        tied: true,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    };
    let dir = std::env::temp_dir().join(format!("plumb-paged-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    write_synthetic(
        &shape,
        plumb_core::GgmlType::Q8_0,
        3,
        &path,
        std::sync::Arc::new(|_, _| {}),
    )
    .unwrap();
    let file = plumb_gguf::GgufFile::open(&path).unwrap();
    Model::load(&file, ReferenceBackend { threads: false }).unwrap()
}

#[test]
fn allocation_fork_cow_and_free_balance() {
    let m = model("a");
    let b = &m.backend;
    let mut kv = PagedKv::with_capacity_tokens(&m, 64, 4).unwrap(); // 16 blocks of 4
    assert_eq!(
        (kv.n_blocks(), kv.free_blocks(), kv.tokens_free()),
        (16, 16, 64)
    );
    assert_eq!(kv.bytes_per_block(), 2 * 4 * 16 * 4);
    let mut a = BlockTable::default();
    kv.reserve(b, &mut a, 6).unwrap(); // positions 0..6 → 2 blocks
    a.len = 6;
    assert_eq!((a.blocks.len(), kv.used_blocks()), (2, 2));
    kv.reserve(b, &mut a, 2).unwrap(); // 6..8 fit in block 1
    assert_eq!(kv.used_blocks(), 2);
    let mut f = kv.fork(&a);
    assert_eq!(kv.used_blocks(), 2);
    assert!(a.blocks.iter().all(|&x| kv.refcount(x) == 2));
    // The fork writes position 6: the shared block 1 is copied, block 0 stays shared.
    kv.reserve(b, &mut f, 1).unwrap();
    assert_eq!(kv.used_blocks(), 3);
    assert_eq!(f.blocks[0], a.blocks[0]);
    assert_ne!(f.blocks[1], a.blocks[1]);
    assert_eq!(kv.refcount(a.blocks[1]), 1);
    // The original writes too: its block is no longer shared, no copy.
    kv.reserve(b, &mut a, 1).unwrap();
    assert_eq!(kv.used_blocks(), 3);
    // A fork at a block boundary needs no copy for the next position.
    a.len = 8;
    let g = kv.fork(&a);
    let mut g2 = g.clone();
    kv.reserve(b, &mut g2, 1).unwrap();
    assert_eq!(kv.used_blocks(), 4);
    kv.free(a);
    kv.free(f);
    kv.free(g2);
    assert_eq!(kv.free_blocks(), 16);
}

#[test]
fn out_of_blocks_leaves_the_table_alone() {
    let m = model("b");
    let mut kv = PagedKv::with_capacity_tokens(&m, 8, 4).unwrap();
    let mut t = BlockTable::default();
    kv.reserve(&m.backend, &mut t, 5).unwrap();
    t.len = 5;
    let before = t.clone();
    match kv.reserve(&m.backend, &mut t, 12) {
        Err(PagedError::OutOfBlocks { needed: 3, free: 0 }) => {}
        other => panic!("expected OutOfBlocks, got {other:?}"),
    }
    assert_eq!(t, before);
    kv.free(t);
    assert_eq!(kv.free_blocks(), 2);
    assert!(PagedKv::with_capacity_tokens(&m, 0, 4).is_err());
}

/// Runs `tokens` after what `table` holds and returns the logits of the last one.
fn run(
    m: &Model<ReferenceBackend>,
    kv: &mut PagedKv<ReferenceBackend>,
    t: &mut BlockTable,
    tokens: &[u32],
) -> Vec<f32> {
    let mut items = [PagedItem { tokens, table: t }];
    m.forward_paged(kv, &mut items).unwrap().remove(0)
}

#[test]
fn a_cached_prefix_gives_the_logits_of_a_cold_run() {
    let m = model("c");
    let mut kv = PagedKv::with_capacity_tokens(&m, 64, 4).unwrap();
    let prompt: Vec<u32> = (0..11).map(|i| (i * 5 + 3) % 64).collect();
    let mut cold = BlockTable::default();
    let want = run(&m, &mut kv, &mut cold, &prompt);
    kv.commit_prefix(&cold, &prompt);
    kv.free(cold);
    // Two full blocks stay cached, the partial third is free.
    assert_eq!(
        (kv.cached_blocks(), kv.free_blocks(), kv.used_blocks()),
        (2, 16, 0)
    );

    let mut warm = kv.lookup_prefix(&prompt[..prompt.len() - 1]);
    assert_eq!((warm.len, warm.blocks.len(), kv.cached_blocks()), (8, 2, 0));
    let got = run(&m, &mut kv, &mut warm, &prompt[8..]);
    assert_eq!(got, want, "the same keys and values, bit for bit");

    // A prompt that differs in its second block reuses only the first.
    let mut other = prompt.clone();
    other[5] += 1;
    let t = kv.lookup_prefix(&other);
    assert_eq!((t.len, t.blocks[0]), (4, warm.blocks[0]));
    assert_eq!(kv.refcount(warm.blocks[0]), 2);
    kv.free(t);
    // A lookup made before the second block was filled picks it up later.
    let mut late = kv.lookup_prefix(&prompt[..5]);
    assert_eq!(late.len, 4);
    kv.extend_prefix(&mut late, &prompt);
    assert_eq!(
        late,
        BlockTable {
            blocks: warm.blocks[..2].to_vec(),
            len: 8
        }
    );
    // A table with blocks reserved past its length does not grow.
    let mut reserved = kv.lookup_prefix(&prompt[..4]);
    kv.reserve(&m.backend, &mut reserved, 1).unwrap();
    kv.extend_prefix(&mut reserved, &prompt);
    assert_eq!((reserved.len, reserved.blocks.len()), (4, 2));
    for t in [late, reserved, warm] {
        kv.free(t);
    }
    assert_eq!((kv.used_blocks(), kv.free_blocks()), (0, 16));
}

#[test]
fn eviction_takes_idle_blocks_least_recently_used_first_and_spares_held_ones() {
    let m = model("d");
    let b = &m.backend;
    let mut kv = PagedKv::with_capacity_tokens(&m, 16, 4).unwrap(); // 4 blocks of 4
    let full = |kv: &mut PagedKv<ReferenceBackend>, tokens: &[u32]| {
        let mut t = BlockTable::default();
        kv.reserve(b, &mut t, tokens.len()).unwrap();
        t.len = tokens.len();
        kv.commit_prefix(&t, tokens);
        t
    };
    let (a, x, y) = ([1, 2, 3, 4, 5, 6, 7, 8], [9u32; 4], [10u32; 4]);
    let held = full(&mut kv, &a);
    let tx = full(&mut kv, &x);
    let ty = full(&mut kv, &y);
    kv.free(ty); // y idle first, then x: x is the most recently used
    kv.free(tx);
    assert_eq!((kv.cached_blocks(), kv.free_blocks()), (2, 2));
    let mut c = BlockTable::default();
    kv.reserve(b, &mut c, 4).unwrap(); // no free block: evicts y
    assert_eq!(kv.lookup_prefix(&y).len, 0);
    let tx = kv.lookup_prefix(&x);
    assert_eq!(tx.len, 4, "x was used more recently and stays");
    // Every block is held now: nothing can be evicted.
    assert!(matches!(
        kv.reserve(b, &mut c, 8),
        Err(PagedError::OutOfBlocks { needed: 1, free: 0 })
    ));
    let again = kv.lookup_prefix(&a);
    assert_eq!(again.blocks, held.blocks, "held blocks keep their names");
    for t in [held, tx, c, again] {
        kv.free(t);
    }
    assert_eq!(kv.free_blocks(), 4);
}

#[test]
fn forks_of_a_cached_prefix_copy_only_what_they_write() {
    let m = model("e");
    let b = &m.backend;
    let mut kv = PagedKv::with_capacity_tokens(&m, 64, 4).unwrap();
    let prompt: Vec<u32> = (0..10).collect();
    let mut t = BlockTable::default();
    run(&m, &mut kv, &mut t, &prompt);
    kv.commit_prefix(&t, &prompt);
    kv.free(t);
    let base = kv.lookup_prefix(&prompt); // 2 blocks, len 8
    let mut f = kv.fork(&base);
    let mut g = kv.fork(&base);
    assert!(base.blocks.iter().all(|&x| kv.refcount(x) == 3));
    // Both continue from position 8, a block boundary: new blocks, nothing copied.
    kv.reserve(b, &mut f, 3).unwrap();
    kv.reserve(b, &mut g, 1).unwrap();
    assert_eq!(kv.used_blocks(), 4);
    assert_eq!(f.blocks[..2], base.blocks[..]);
    // A fork inside a partial block copies it on write.
    f.len = 10;
    let mut h = kv.fork(&f);
    kv.reserve(b, &mut h, 1).unwrap();
    assert_ne!(h.blocks[2], f.blocks[2]);
    assert_eq!(kv.used_blocks(), 5);
    for t in [base, f, g, h] {
        kv.free(t);
    }
    assert_eq!((kv.used_blocks(), kv.cached_blocks()), (0, 2));
}

#[test]
fn a_launch_gives_logits_to_the_items_that_ask_only() {
    let m = model("f");
    let (pa, pb): (Vec<u32>, Vec<u32>) = ((0..6).collect(), vec![7, 9, 11]);
    let mut kv = PagedKv::with_capacity_tokens(&m, 64, 4).unwrap();
    let want_b = run(&m, &mut kv, &mut BlockTable::default(), &pb);
    let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
    let mut items = [
        PagedItem {
            tokens: &pa,
            table: &mut a,
        },
        PagedItem {
            tokens: &pb,
            table: &mut b,
        },
    ];
    let launched = m
        .forward_paged_launch(&mut kv, &mut items, &[false, true])
        .unwrap();
    assert_eq!(launched.rows(), 1);
    let mut out = vec![f32::NAN; 3];
    launched.read(&mut out).unwrap();
    assert_eq!(out, want_b);
    assert_eq!((a.len, b.len), (6, 3));
    let mut items = [PagedItem {
        tokens: &pa[..1],
        table: &mut a,
    }];
    let none = m
        .forward_paged_launch(&mut kv, &mut items, &[false])
        .unwrap();
    assert_eq!(none.rows(), 0);
    none.read(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(a.len, 7);
    let mut items = [PagedItem {
        tokens: &pa[..1],
        table: &mut a,
    }];
    assert!(m.forward_paged_launch(&mut kv, &mut items, &[]).is_err());
}
