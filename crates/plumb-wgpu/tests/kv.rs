//! kv_write_slots (shaders/kv.wgsl), which the check harness has no case of: scattered rows
//! land in their slots of the pool and every other slot keeps its values, as the trait's
//! default (one copy per slot, here on the reference backend) does.

use plumb_ops::{Backend, ReferenceBackend};
use plumb_wgpu::WgpuBackend;

#[test]
fn slot_writes_match_the_reference_and_leave_other_slots_alone() {
    let gpu = WgpuBackend::new(0).expect("a wgpu adapter (scripts/test sets up lavapipe)");
    let mut rng = plumb_core::rng::Rng::new(5);
    // kv_dim 72 (not a multiple of the workgroup), 40 slots, 6 rows in scattered order with
    // the last slot of the pool among them.
    let (kv_dim, n_slots) = (72, 40);
    let slots = [39u32, 0, 17, 16, 3, 31];
    let src: Vec<f32> = (0..slots.len() * kv_dim).map(|_| rng.normal()).collect();
    let pool: Vec<f32> = (0..n_slots * kv_dim).map(|_| rng.normal()).collect();
    let want = write(&ReferenceBackend::default(), &src, &pool, &slots, kv_dim);
    let got = write(&gpu, &src, &pool, &slots, kv_dim);
    assert_ne!(want, pool, "the writes change the pool");
    assert_eq!(got, want);
}

/// The pool after `kv_write_slots` of `src` on `b`.
fn write<B: Backend>(b: &B, src: &[f32], pool: &[f32], slots: &[u32], kv_dim: usize) -> Vec<f32> {
    let s = b.upload(src).unwrap();
    let mut p = b.upload(pool).unwrap();
    b.kv_write_slots(&s, &mut p, slots, kv_dim).unwrap();
    let mut out = vec![0f32; pool.len()];
    b.download(&p, &mut out).unwrap();
    out
}
