//! Input a forward cannot run is an error that says why, and moves no cache or block table.

mod common;

use common::{max_diff, tiny_model};
use plumb_model::{BlockTable, Logits, ModelError, PagedItem, PagedKv};

#[test]
fn contiguous_forward_rejects_bad_tokens_and_overflow() {
    let m = tiny_model("bad-contiguous");
    let mut c = m.new_cache(4).unwrap();
    m.forward(&[1, 2], &mut c, Logits::Last).unwrap();
    let e = m.forward(&[], &mut c, Logits::Last).unwrap_err();
    assert!(matches!(e, ModelError::Config(_)), "{e}");
    for (tokens, want) in [(&[3, 300][..], Logits::Last), (&[300], Logits::Last)] {
        match m.forward(tokens, &mut c, want) {
            Err(ModelError::BadToken {
                id: 300,
                vocab: 300,
            }) => {}
            other => panic!("expected BadToken, got {other:?}"),
        }
    }
    match m.decode_argmax(301, &mut c) {
        Err(ModelError::BadToken {
            id: 301,
            vocab: 300,
        }) => {}
        other => panic!("expected BadToken, got {other:?}"),
    }
    match m.forward(&[1, 2, 3], &mut c, Logits::All) {
        Err(ModelError::ContextFull {
            needed: 5,
            capacity: 4,
        }) => {}
        other => panic!("expected ContextFull, got {other:?}"),
    }
    assert_eq!(c.len, 2);
    // The rejected calls left the cache as it was: it goes on as a fresh prefill does.
    let went_on = m.forward(&[1, 2], &mut c, Logits::Last).unwrap();
    let mut fresh = m.new_cache(4).unwrap();
    let whole = m.forward(&[1, 2, 1, 2], &mut fresh, Logits::Last).unwrap();
    assert!(max_diff(&went_on, &whole) < 1e-4);
    match m.decode_argmax(1, &mut c) {
        Err(ModelError::ContextFull {
            needed: 5,
            capacity: 4,
        }) => {}
        other => panic!("expected ContextFull, got {other:?}"),
    }
    assert_eq!(c.len, 4);
}

#[test]
fn paged_forward_rejects_bad_items_and_moves_no_table() {
    let m = tiny_model("bad-paged");
    let mut kv = PagedKv::with_capacity_tokens(&m, 32, 4).unwrap();
    let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
    let cases: [(&[u32], &[u32]); 2] = [(&[1, 2], &[]), (&[1, 2], &[5, 299, 300])];
    for (ta, tb) in cases {
        let mut items = [
            PagedItem {
                tokens: ta,
                table: &mut a,
            },
            PagedItem {
                tokens: tb,
                table: &mut b,
            },
        ];
        let e = m.forward_paged(&mut kv, &mut items).unwrap_err();
        if tb.is_empty() {
            assert!(matches!(e, ModelError::Config(_)), "{e}");
        } else {
            assert!(
                matches!(
                    e,
                    ModelError::BadToken {
                        id: 300,
                        vocab: 300
                    }
                ),
                "{e}"
            );
        }
    }
    assert_eq!((a.len, b.len), (0, 0));
    assert_eq!(kv.free_blocks(), kv.n_blocks(), "nothing reserved");
}
