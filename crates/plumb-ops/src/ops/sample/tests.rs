use plumb_core::rng::Rng;

use super::*;

fn params(temperature: f32) -> SampleParams {
    SampleParams {
        temperature,
        ..SampleParams::greedy()
    }
}

fn row(params: SampleParams, u: f64) -> SampleRow<'static> {
    SampleRow {
        params,
        history: &[],
        mask: None,
        bias: &[],
        u,
    }
}

fn id(logits: &[f32], row: &SampleRow<'_>) -> u32 {
    sample_row(&mut logits.to_vec(), row).id
}

/// The spec written the slow way: every candidate sorted, probabilities normalized, the
/// cuts and the walk over whole vectors (in id order with f32 weights when nothing is cut).
fn full_sort(logits: &[f32], r: &SampleRow<'_>) -> u32 {
    let p = &r.params;
    let mut c: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|&(i, v)| v.is_finite() && allowed(r.mask, i))
        .map(|(i, &v)| (i as u32, v))
        .collect();
    if p.top_p >= 1.0 && p.min_p <= 0.0 && (p.top_k == 0 || p.top_k >= c.len()) {
        let max = c.iter().map(|e| e.1).fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = c
            .iter()
            .map(|e| ((e.1 - max) / p.temperature).exp() as f64)
            .collect();
        let target = r.u * w.iter().sum::<f64>();
        let mut cum = 0.0;
        let at = w.iter().position(|x| {
            cum += x;
            target < cum
        });
        return c[at.unwrap_or(c.len() - 1)].0;
    }
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        c.truncate(p.top_k);
    }
    let max = c[0].1 as f64;
    let w1: Vec<f64> = c.iter().map(|e| (e.1 as f64 - max).exp()).collect();
    let z: f64 = w1.iter().sum();
    let mut keep = c.len();
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        keep = 1 + w1
            .iter()
            .position(|w| {
                cum += w / z;
                cum >= p.top_p as f64
            })
            .unwrap_or(c.len() - 1);
    }
    let floor = w1[0] / z * p.min_p as f64;
    let by_min_p = w1.iter().take_while(|&&w| w / z >= floor).count();
    c.truncate(keep.min(by_min_p).max(1));
    let wt: Vec<f64> = c
        .iter()
        .map(|e| ((e.1 as f64 - max) / p.temperature as f64).exp())
        .collect();
    let mut rest = r.u * wt.iter().sum::<f64>();
    for (e, w) in c.iter().zip(&wt) {
        if rest < *w {
            return e.0;
        }
        rest -= w;
    }
    c[c.len() - 1].0
}

/// Top-k by selection and the lazily sorted walk draw what a full sort draws. Coarse values
/// make ties (broken by id) common.
#[test]
fn selection_and_lazy_sorting_equal_a_full_sort() {
    let mut rng = Rng::new(7);
    for case in 0..60u64 {
        let logits: Vec<f32> = (0..3000)
            .map(|_| (rng.next_f64() * 40.0).floor() as f32 / 4.0)
            .collect();
        let r = row(
            SampleParams {
                temperature: [0.6, 1.0, 1.7][case as usize % 3],
                top_k: [1 + (case as usize * 37) % 200, 0, 2999, 5000][case as usize % 4],
                top_p: [1.0, 0.95, 0.5][case as usize % 3],
                min_p: [0.0, 0.05][case as usize % 2],
                ..SampleParams::greedy()
            },
            rng.next_f64(),
        );
        assert_eq!(
            id(&logits, &r),
            full_sort(&logits, &r),
            "case {case}: {r:?}"
        );
    }
}

/// Without top-k, a 128k vocabulary: the draws equal a full sort's, whichever depth the cut
/// or the draw reaches.
#[test]
fn a_large_vocabulary_draws_what_a_full_sort_draws() {
    let mut rng = Rng::new(11);
    let logits: Vec<f32> = rng.normals(128_256, 2.0);
    for (top_p, min_p, t) in [(0.5f32, 0.0f32, 1.5f32), (1.0, 0.2, 1.0), (0.9, 0.01, 0.7)] {
        for k in 0..20 {
            let r = row(
                SampleParams {
                    temperature: t,
                    top_p,
                    min_p,
                    ..SampleParams::greedy()
                },
                (k as f64 + 0.5) / 20.0,
            );
            assert_eq!(id(&logits, &r), full_sort(&logits, &r), "{r:?}");
        }
    }
    // Temperature alone: the walk reaches deep into the order for u near 1.
    for u in [0.0, 0.3, 0.999, 0.999_999] {
        let r = row(params(2.0), u);
        assert_eq!(id(&logits, &r), full_sort(&logits, &r), "u {u}");
    }
}

#[test]
fn greedy_takes_the_first_allowed_maximum() {
    let g = row(params(0.0), 0.5);
    assert_eq!(id(&[0.1, 3.0, 3.0, -1.0], &g), 1);
    assert_eq!(id(&[f32::NAN, -1.0], &g), 1);
    assert_eq!(id(&[f32::NEG_INFINITY; 3], &g), 0);
    // Token 1 forbidden: the maximum among the others.
    let mask = [0b1101u32];
    let m = SampleRow {
        mask: Some(&mask),
        bias: &[],
        ..g
    };
    assert_eq!(id(&[0.1, 3.0, 3.0, -1.0], &m), 2);
    assert_eq!(id(&[0.1, 3.0, f32::NAN, -1.0], &m), 0);
}

/// A cut row is walked best first, ties by lower id: with min-p 0.01 (which keeps all four)
/// logits 1, 3, 3, 2 are walked as tokens 1, 2, 3, 0 with weights e³, e³, e², e¹, and u picks
/// the token whose cumulative weight passes it. Uncut, the walk goes in id order: 0, 1, 2, 3.
#[test]
fn the_walk_goes_best_first_when_cut_and_in_id_order_when_not() {
    let logits = [1.0f32, 3.0, 3.0, 2.0];
    let weight = |t: usize| (logits[t] as f64).exp();
    let cut = SampleParams {
        min_p: 0.01,
        ..params(1.0)
    };
    for (p, order) in [(cut, [1usize, 2, 3, 0]), (params(1.0), [0, 1, 2, 3])] {
        let total: f64 = order.iter().map(|&t| weight(t)).sum();
        let mut edge = 0.0;
        for t in order {
            let (lo, hi) = (edge / total, (edge + weight(t)) / total);
            for u in [lo + 1e-6, (lo + hi) / 2.0, hi - 1e-6] {
                assert_eq!(id(&logits, &row(p, u)), t as u32, "{p:?}, u {u}");
            }
            edge += weight(t);
        }
    }
    // Temperature 0.5 squares the weights: token 1 alone holds e⁶ / (2e⁶ + e⁴ + e²).
    let p1 = 1.0 / (2.0 + (-2f64).exp() + (-4f64).exp());
    let sharp = SampleParams {
        temperature: 0.5,
        ..cut
    };
    assert_eq!(id(&logits, &row(sharp, p1 - 1e-9)), 1);
    assert_eq!(id(&logits, &row(sharp, p1 + 1e-9)), 2);
}

/// Non-finite and forbidden logits are never candidates; the distribution follows the
/// softmax of the rest at the row's temperature.
#[test]
fn distributions_skip_non_finite_and_forbidden_tokens() {
    let logits = [
        f32::NAN,
        0.0,
        f32::NEG_INFINITY,
        3f32.ln(),
        f32::INFINITY,
        5.0,
    ];
    let mask = [0b01_1111u32];
    for (t, p3) in [(1.0f32, 0.75f64), (0.5, 0.9)] {
        let r = SampleRow {
            mask: Some(&mask),
            bias: &[],
            ..row(params(t), 0.0)
        };
        let d = distribution(&mut logits.to_vec(), &r);
        assert_eq!(
            d.iter().map(|e| e.0).collect::<Vec<_>>(),
            [1, 3],
            "id order"
        );
        assert!((d[1].1 - p3).abs() < 1e-7 && (d[0].1 - (1.0 - p3)).abs() < 1e-7);
    }
    let none = row(params(1.0), 0.5);
    assert_eq!(id(&[f32::NAN, f32::NEG_INFINITY], &none), 0);
    assert_eq!(distribution(&mut [f32::NAN], &none), [(0, 1.0)]);
}

#[test]
fn filters_cut_the_tail() {
    // p(0) = e⁵ / (e⁵ + e⁴ + 1 + e⁻¹) ≈ 0.727; token 1 is 1/e ≈ 0.37 of it.
    let logits = [5.0f32, 4.0, 0.0, -1.0];
    let cuts = [
        SampleParams {
            top_k: 1,
            ..params(1.0)
        },
        SampleParams {
            top_p: 0.5,
            ..params(1.0)
        },
        SampleParams {
            min_p: 0.5,
            ..params(1.0)
        },
    ];
    for p in cuts {
        for k in 0..50 {
            assert_eq!(id(&logits, &row(p, k as f64 / 50.0)), 0, "{p:?}");
        }
    }
    let kept = |p: SampleParams| distribution(&mut logits.to_vec(), &row(p, 0.0)).len();
    assert_eq!(
        kept(SampleParams {
            top_p: 0.9,
            ..params(1.0)
        }),
        2
    );
    assert_eq!(
        kept(SampleParams {
            min_p: 0.3,
            ..params(1.0)
        }),
        2
    );
    assert_eq!(
        kept(SampleParams {
            top_k: 3,
            ..params(1.0)
        }),
        3
    );
}

#[test]
fn penalties_change_the_pick() {
    let g = |p: SampleParams, logits: &[f32], history: &[u32]| {
        let r = SampleRow {
            history,
            ..row(p, 0.0)
        };
        id(logits, &r)
    };
    let rep = SampleParams {
        repetition_penalty: 2.0,
        ..params(0.0)
    };
    // Token 0 (logit 2, seen) halves to 1 < 1.5; a negative logit doubles away from 0.
    assert_eq!(g(rep, &[2.0, 1.5], &[0]), 1);
    assert_eq!(g(rep, &[-1.0, -1.5], &[0]), 1);
    let freq = SampleParams {
        frequency_penalty: 0.3,
        ..params(0.0)
    };
    // 2.0 − 2 × 0.3 = 1.4 < 1.5; a token beyond the vocabulary is ignored.
    assert_eq!(g(freq, &[2.0, 1.5], &[0, 0, 7]), 1);
    assert_eq!(g(freq, &[2.0, 1.5], &[0]), 0);
    let pres = SampleParams {
        presence_penalty: 0.4,
        ..params(0.0)
    };
    assert_eq!(g(pres, &[2.0, 1.7], &[0, 0, 0]), 1);
    let mut l = vec![2.0f32, 1.7];
    let r = SampleRow {
        history: &[0, 0, 0],
        ..row(pres, 0.0)
    };
    sample_row(&mut l, &r);
    assert_eq!(
        l,
        [1.6, 1.7],
        "penalties are applied in place, once per token"
    );
}

/// Logprobs are the log-softmax of the penalized row, unmasked, and the best tokens come
/// first with ties by id.
#[test]
fn logprobs_are_a_penalized_log_softmax_with_the_best_first() {
    // Logits ln 1, ln 3, ln 4, ln 4; token 3 (seen) loses ln 2 to the presence penalty:
    // probabilities 1/10, 3/10, 4/10, 2/10.
    let ln2 = 2f32.ln();
    let logits = [0.0f32, 3f32.ln(), 4f32.ln(), 4f32.ln()];
    let mask = [0b0011u32];
    let r = SampleRow {
        params: SampleParams {
            presence_penalty: ln2,
            top_logprobs: Some(3),
            ..params(0.0)
        },
        history: &[3],
        mask: Some(&mask),
        bias: &[],
        u: 0.0,
    };
    let s = sample_row(&mut logits.to_vec(), &r);
    assert_eq!(s.id, 1, "the mask leaves tokens 0 and 1");
    assert!((s.logprob.unwrap() - 0.3f32.ln()).abs() < 1e-6, "{s:?}");
    let top: Vec<u32> = s.top.iter().map(|e| e.0).collect();
    assert_eq!(top, [2, 1, 3]);
    for ((_, lp), p) in s.top.iter().zip([0.4f32, 0.3, 0.2]) {
        assert!((lp - p.ln()).abs() < 1e-6, "{s:?}");
    }
    // Ties by id; no logprobs unless asked.
    let tie = SampleRow {
        params: SampleParams {
            top_logprobs: Some(2),
            ..params(0.0)
        },
        ..row(params(0.0), 0.0)
    };
    let t = sample_row(&mut [1.0, 2.0, 2.0], &tie);
    assert_eq!((t.id, t.top[0].0, t.top[1].0), (1, 1, 2));
    let none = sample_row(&mut [1.0, 2.0], &row(params(0.0), 0.0));
    assert_eq!((none.logprob, none.top.len()), (None, 0));
}

/// Many stratified uniforms land on each token in proportion to its probability.
#[test]
fn draws_over_a_uniform_grid_follow_the_distribution() {
    let mut rng = Rng::new(3);
    let logits = rng.normals(300, 1.5);
    let p = SampleParams {
        top_k: 50,
        top_p: 0.9,
        min_p: 0.01,
        ..params(0.8)
    };
    let d = distribution(&mut logits.clone(), &row(p, 0.0));
    let sum: f64 = d.iter().map(|e| e.1).sum();
    assert!((sum - 1.0).abs() < 1e-12 && d.len() > 5 && d.len() <= 50);
    let n = 100_000;
    let mut count = vec![0usize; 300];
    for k in 0..n {
        count[id(&logits, &row(p, (k as f64 + 0.5) / n as f64)) as usize] += 1;
    }
    for (t, pr) in &d {
        let got = count[*t as usize] as f64;
        assert!(
            (got - pr * n as f64).abs() <= 1.0,
            "token {t}: {got} vs {}",
            pr * n as f64
        );
    }
    assert_eq!(d.iter().map(|e| count[e.0 as usize]).sum::<usize>(), n);
}
