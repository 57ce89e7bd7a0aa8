//! Pearson's chi-square test of a sampler's draws against the distribution they should follow
//! (`crate::ops::sample::distribution`).
//!
//! Bins: every token expected at least 5 times is a bin; the rarer tokens are pooled into one
//! bin (into the smallest bin when the pool itself is expected fewer than 5 times). A draw of a
//! token the distribution gives probability 0 fails the test by itself. The statistic
//! `Σ (observed − expected)² / expected` follows χ² with `bins − 1` degrees of freedom when the
//! draws follow the distribution, and is rejected above that law's 1 − [`ALPHA`] quantile.

use std::collections::HashMap;

/// The false-alarm rate: a correct sampler fails one test in a million seeds. A planted bias
/// (a walk off by one position, a temperature ignored) moves the statistic by thousands.
pub const ALPHA: f64 = 1e-6;

/// The standard normal quantile of 1 − [`ALPHA`].
const Z: f64 = 4.753_424_308_822_899;

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct ChiSquare {
    pub stat: f64,
    pub dof: usize,
    pub threshold: f64,
    /// Draws of tokens with probability 0.
    pub outside: usize,
}

impl ChiSquare {
    pub fn passes(&self) -> bool {
        self.outside == 0 && self.stat <= self.threshold
    }

    /// How far the test is from failing: 0 while it passes, the statistic's excess over its
    /// threshold (relative to it) when it does not, infinite for a draw outside the support.
    pub fn excess(&self) -> f64 {
        if self.outside > 0 {
            f64::INFINITY
        } else {
            (self.stat / self.threshold - 1.0).max(0.0)
        }
    }
}

/// The 1 − [`ALPHA`] quantile of χ² with `dof` degrees of freedom by the Wilson–Hilferty
/// approximation `k (1 − 2/(9k) + z √(2/(9k)))³`. It lies above the exact quantile (by 15% at
/// k = 1, 2% at k = 10, 0.2% at k = 100), so it errs towards passing a correct sampler.
/// 0 degrees of freedom (a single bin) give 0: the statistic is then 0.
pub fn threshold(dof: usize) -> f64 {
    if dof == 0 {
        return 0.0;
    }
    let k = dof as f64;
    let c = 2.0 / (9.0 * k);
    k * (1.0 - c + Z * c.sqrt()).powi(3)
}

/// Tests the draws `ids` against `probs`, (token, probability) pairs of distinct tokens.
pub fn chi_square(ids: &[u32], probs: &[(u32, f64)]) -> ChiSquare {
    let n = ids.len() as f64;
    let index: HashMap<u32, usize> = probs.iter().enumerate().map(|(i, p)| (p.0, i)).collect();
    let mut observed = vec![0f64; probs.len()];
    let mut outside = 0;
    for id in ids {
        match index.get(id) {
            Some(&i) if probs[i].1 > 0.0 => observed[i] += 1.0,
            _ => outside += 1,
        }
    }
    // (expected, observed) per bin.
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut pool = (0.0, 0.0);
    for (p, &o) in probs.iter().zip(&observed) {
        let e = n * p.1;
        if e >= 5.0 {
            bins.push((e, o));
        } else {
            pool = (pool.0 + e, pool.1 + o);
        }
    }
    match bins.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
        Some(smallest) if pool.0 < 5.0 => {
            smallest.0 += pool.0;
            smallest.1 += pool.1;
        }
        _ => bins.push(pool),
    }
    let stat = bins
        .iter()
        .filter(|b| b.0 > 0.0)
        .map(|&(e, o)| (o - e) * (o - e) / e)
        .sum();
    let dof = bins.len() - 1;
    ChiSquare {
        stat,
        dof,
        threshold: threshold(dof),
        outside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the exact 1 − 10⁻⁶ quantiles of χ² (from the regularized incomplete gamma
    /// function): never below, at most 15% above.
    #[test]
    fn the_threshold_bounds_the_exact_quantile_from_above() {
        let exact = [
            (1, 23.928127),
            (2, 27.631021),
            (5, 35.888187),
            (10, 46.863047),
            (50, 112.60809),
            (100, 182.12678),
            (1000, 1227.1524),
        ];
        for (k, q) in exact {
            let t = threshold(k);
            assert!(t >= q && t <= 1.15 * q, "dof {k}: {t} against {q}");
        }
    }

    #[test]
    fn bins_pool_rare_tokens_and_catch_impossible_draws() {
        // 1000 draws: tokens 0 and 1 expected 600 and 397 times, 2 and 3 pooled (3 times)
        // into the smaller bin.
        let probs = [(0, 0.6), (1, 0.397), (2, 0.002), (3, 0.001)];
        let mut ids = vec![0u32; 600];
        ids.extend(std::iter::repeat_n(1, 397));
        ids.extend([2, 3, 3]);
        let c = chi_square(&ids, &probs);
        assert_eq!((c.dof, c.outside), (1, 0));
        assert!(c.stat < 1e-12 && c.passes() && c.excess() == 0.0, "{c:?}");
        // A token outside the support fails however close the rest is.
        ids[0] = 9;
        let c = chi_square(&ids, &probs);
        assert!(!c.passes() && c.excess().is_infinite());
        // Every draw on token 0: 400² / 600 + 400² / 400, far above the threshold.
        let c = chi_square(&[0; 1000], &probs);
        assert!((c.stat - 2000.0 / 3.0).abs() < 1e-9, "{c:?}");
        assert!(!c.passes() && (c.excess() - (c.stat / c.threshold - 1.0)).abs() < 1e-12);
    }
}
