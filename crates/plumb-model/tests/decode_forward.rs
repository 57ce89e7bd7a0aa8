//! A decode step (one token through the kept, recordable workspace) gives what a prefill of
//! the same tokens gives for its last row.

mod common;

use common::{max_diff, tiny_model};
use plumb_model::Logits;

#[test]
fn decode_equals_prefill() {
    let m = tiny_model("decode");
    let prompts: [&[u32]; 3] = [&[5, 17, 200, 3], &[9], &[42, 42, 7, 1, 299, 8, 77]];
    for p in prompts {
        let mut c = m.new_cache(32).unwrap();
        m.forward(p, &mut c, Logits::Last).unwrap();
        let decoded = m.forward(&[11], &mut c, Logits::Last).unwrap();
        assert_eq!(c.len, p.len() + 1);
        let mut c2 = m.new_cache(32).unwrap();
        let mut all = p.to_vec();
        all.push(11);
        let pre = m.forward(&all, &mut c2, Logits::Last).unwrap();
        let d = max_diff(&pre, &decoded);
        assert!(d < 1e-4, "prompt of {}: decode differs by {d}", p.len());
    }
}
