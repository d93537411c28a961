//! Statistical tests of the samplers against their exact distributions.
//!
//! Each check computes a p-value (binomial z or χ² goodness of fit) and fails
//! below 1e-8; a test with k checks therefore fails for a correct sampler with
//! probability < k·1e-8 < 1e-6. Seeds are fixed, so the outcome is reproducible.

use super::*;
use crate::privacy::special::{chi2_sf, normal_sf};
use rand::SeedableRng;

const P_FAIL: f64 = 1e-8;

fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// χ² test of integer samples against a pmf over ℤ; cells with expected count
/// below 20 are pooled into the two tails.
fn chi2_check(samples: &[i128], pmf: impl Fn(i128) -> f64, what: &str) {
    let n = samples.len() as f64;
    let mut counts = std::collections::BTreeMap::<i128, u64>::new();
    for &s in samples {
        *counts.entry(s).or_default() += 1;
    }
    // find the central range where expected ≥ 20
    let mut lo = 0i128;
    while n * pmf(lo - 1) >= 20.0 {
        lo -= 1;
    }
    let mut hi = 0i128;
    while n * pmf(hi + 1) >= 20.0 {
        hi += 1;
    }
    let central: f64 = (lo..=hi).map(&pmf).sum();
    let below_mass: f64 = (1.0 - central) / 2.0; // pmfs here are symmetric
    let mut stat = 0.0;
    let mut cells = 0;
    for x in lo..=hi {
        let e = n * pmf(x);
        let o = *counts.get(&x).unwrap_or(&0) as f64;
        stat += (o - e) * (o - e) / e;
        cells += 1;
    }
    let obs_below: u64 = counts.range(..lo).map(|(_, c)| c).sum();
    let obs_above: u64 = counts.range(hi + 1..).map(|(_, c)| c).sum();
    for o in [obs_below, obs_above] {
        let e = n * below_mass;
        if e > 1e-9 {
            stat += (o as f64 - e) * (o as f64 - e) / e;
            cells += 1;
        } else {
            assert_eq!(o, 0, "{what}: samples in a tail of negligible mass");
        }
    }
    let p = chi2_sf(stat, (cells - 1) as f64);
    assert!(p > P_FAIL, "{what}: χ²={stat:.1} on {} df, p={p:.2e}", cells - 1);
}

fn binomial_check(successes: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1e-12);
    let z = (successes as f64 - mean).abs() / sd;
    let pval = 2.0 * normal_sf(z);
    assert!(pval > P_FAIL, "{what}: {successes}/{n} vs p={p}, z={z:.2}, p-value {pval:.2e}");
}

#[test]
fn bernoulli_exp_matches_exp_minus_gamma() {
    let mut r = rng(1);
    let n = 100_000u64;
    for &(num, den) in &[(0u128, 1u128), (1, 3), (1, 1), (5, 2), (7, 1), (123_456_789, 1_000_000_000)] {
        let hits = (0..n).filter(|_| bernoulli_exp(&mut r, num, den)).count() as u64;
        let p = (-(num as f64) / den as f64).exp();
        if num == 0 {
            assert_eq!(hits, n);
        } else {
            binomial_check(hits, n, p, &format!("Bernoulli(exp(-{num}/{den}))"));
        }
    }
}

#[test]
fn bernoulli_exp_big_matches() {
    let mut r = rng(2);
    let n = 50_000u64;
    for &(num, den) in &[(2u64, 3u64), (9, 4), (1, 10)] {
        let hits = (0..n).filter(|_| bernoulli_exp_big(&mut r, &BigUint::from(num), &BigUint::from(den))).count() as u64;
        binomial_check(hits, n, (-(num as f64) / den as f64).exp(), &format!("big Bernoulli(exp(-{num}/{den}))"));
    }
}

#[test]
fn uniform_big_is_uniform() {
    let mut r = rng(3);
    let n = BigUint::from(7u32);
    let samples: Vec<i128> = (0..70_000).map(|_| uniform_big(&mut r, &n).to_i64().unwrap() as i128 - 3).collect();
    chi2_check(&samples, |x| if (-3..=3).contains(&x) { 1.0 / 7.0 } else { 0.0 }, "uniform_big(7)");
}

/// Exact discrete Laplace pmf: tanh(1/(2b)) · exp(−|x|/b).
pub fn dlap_pmf(b: f64, x: i128) -> f64 {
    (1.0 / (2.0 * b)).tanh() * (-(x.unsigned_abs() as f64) / b).exp()
}

#[test]
fn discrete_laplace_matches_pmf() {
    let mut r = rng(4);
    for &(t, s) in &[(1u128, 1u128), (3, 2), (10, 1), (7, 3)] {
        let scale = Scale::new_at_least(t, s);
        let samples: Vec<i128> = (0..100_000).map(|_| discrete_laplace(&mut r, scale)).collect();
        let b = t as f64 / s as f64;
        chi2_check(&samples, |x| dlap_pmf(b, x), &format!("discrete Laplace {t}/{s}"));
    }
}

/// Exact discrete Gaussian pmf by normalising over a wide window.
pub fn dgauss_pmf(sigma2: f64) -> impl Fn(i128) -> f64 {
    let w = (sigma2.sqrt() * 40.0) as i128 + 10;
    let z: f64 = (-w..=w).map(|x| (-((x * x) as f64) / (2.0 * sigma2)).exp()).sum();
    move |x| (-((x * x) as f64) / (2.0 * sigma2)).exp() / z
}

#[test]
fn discrete_gaussian_matches_pmf() {
    let mut r = rng(5);
    for &(num, den) in &[(1u64, 1u64), (5, 2), (10, 1), (9, 4)] {
        let v = Variance { num: BigUint::from(num), den: BigUint::from(den) };
        let samples: Vec<i128> = (0..60_000).map(|_| discrete_gaussian(&mut r, &v)).collect();
        chi2_check(&samples, dgauss_pmf(num as f64 / den as f64), &format!("discrete Gaussian σ²={num}/{den}"));
    }
}

#[test]
fn scale_rounds_up_only() {
    let (t, d) = (u128::MAX - 5, 1u128 << 70);
    let s = Scale::new_at_least(t, d);
    assert!(s.t <= 1 << 63 && s.s <= 1 << 63);
    // exact comparison t'/s' ≥ t/d  ⇔  t'·d ≥ t·s' (in 256-bit via BigUint)
    assert!(BigUint::from(s.t) * BigUint::from(d) >= BigUint::from(t) * BigUint::from(s.s));
    assert!(std::panic::catch_unwind(|| Scale::new_at_least(u128::MAX, 1)).is_err());
    let s = Scale::new_at_least(6, 4);
    assert_eq!((s.t, s.s), (3, 2));
}

#[test]
fn a_broken_sampler_is_caught() {
    // The χ² check must have power: samples drawn with a 5 % smaller scale fail.
    let mut r = rng(6);
    let samples: Vec<i128> = (0..100_000).map(|_| discrete_laplace(&mut r, Scale::new_at_least(95, 10))).collect();
    let result = std::panic::catch_unwind(|| chi2_check(&samples, |x| dlap_pmf(10.0, x), "deliberately wrong"));
    assert!(result.is_err(), "a 5 % scale error went unnoticed");
}

#[test]
fn variance_to_f64_handles_any_sizes() {
    use num_bigint::BigUint;
    let v = Variance { num: BigUint::from(1u32) << 200u32, den: BigUint::from(3u32) };
    let want = 2f64.powi(200) / 3.0;
    assert!((v.to_f64() / want - 1.0).abs() < 1e-15, "{}", v.to_f64());
    let v = Variance { num: BigUint::from(5u32), den: BigUint::from(1u32) << 100u32 };
    assert!((v.to_f64() / (5.0 * 2f64.powi(-100)) - 1.0).abs() < 1e-15);
    // σ² ≈ 2^60: was +inf
    let v = Variance {
        num: (BigUint::from(1u32) << 80u32) * BigUint::from(1_000_000_000_000_000_000u128),
        den: (BigUint::from(2u32) * BigUint::from(1_000_000_000_000_000_000u128)) >> 0u32,
    };
    assert!(v.to_f64().is_finite());
}
