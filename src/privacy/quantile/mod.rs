//! DP quantiles over a bounded, discretised domain with the exponential mechanism.
//!
//! **Domain.** [lo, hi] is cut into B bins (one per integer for small integer
//! ranges, else 1024 equal bins). Values are clamped into [lo, hi] first; the
//! input is the histogram h of bounded values per bin.
//!
//! **Mechanism.** For q = Q/D, candidate bin k has utility
//! u(k) = −dist(Q·n, [D·below(k), D·upto(k)]) where below(k) = Σ_{j<k} h_j,
//! upto(k) = below(k) + h_k and n = Σ h. Adding or removing one unit that holds
//! at most m values changes every u(k) by at most Δu = max(Q, D−Q)·m. The
//! exponential mechanism (McSherry & Talwar 2007) picks k with probability
//! ∝ exp(ε·u(k)/(2Δu)), which is ε-DP. It is sampled **exactly**: propose k
//! uniformly and accept with Bernoulli(exp(−ε(u* − u(k))/(2Δu))) (rational
//! exponent, CKS20 Algorithm 1); the accepted k has exactly the EM distribution.
//!
//! **Accuracy.** With probability ≥ 1 − β the chosen bin has utility
//! ≥ −(2Δu/ε)(ln B + ln 1/β), i.e. its rank is within r = 2·max(q,1−q)·m·(ln B +
//! ln 1/β)/ε values of q·n. [`quantile_with_ci`] turns this into a value-space
//! interval: it releases a noisy count n̂ (lower confidence bound n_lo) and two
//! more EM quantiles at q ∓ r/n_lo; by the union bound the interval between
//! them contains the bin of the true quantile with probability ≥ the confidence.
//! The ε is split 10 % (count) / 50 % (quantile) / 20 % / 20 % (interval ends).
//!
//! **Timing.** The number of proposals depends on the utilities (private). See
//! docs/privacy.md.

use num_bigint::BigUint;
use rand::{CryptoRng, Rng, RngCore};

use super::amount::{Amount, SCALE};
use super::noise::Noise;
use super::samplers::bernoulli_exp_big;

/// Rational quantile level Q/D with D = 10⁶.
pub const LEVEL_DEN: u64 = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantileError {
    #[error("quantile level must be in (0, 1), got {0}")]
    BadLevel(f64),
    #[error("quantile domain [{lo}, {hi}] is not finite or not ordered")]
    BadDomain { lo: f64, hi: f64 },
    #[error("ε must be > 0")]
    ZeroEpsilon,
}

/// The discretised domain of a quantile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Domain {
    pub lo: f64,
    pub hi: f64,
    pub bins: usize,
    /// One bin per integer in [lo, hi].
    pub integer: bool,
}

impl Domain {
    pub fn new(lo: f64, hi: f64, integer_valued: bool) -> Result<Domain, QuantileError> {
        // the bins' width must be finite: [−1e308, 1e308] spans more than f64 holds
        if !(lo.is_finite() && hi.is_finite() && lo <= hi && (hi - lo).is_finite()) {
            return Err(QuantileError::BadDomain { lo, hi });
        }
        if integer_valued {
            let (l, h) = (lo.ceil(), hi.floor());
            if h >= l && h - l < 4096.0 {
                return Ok(Domain { lo: l, hi: h, bins: (h - l) as usize + 1, integer: true });
            }
        }
        Ok(Domain { lo, hi, bins: if hi > lo { 1024 } else { 1 }, integer: false })
    }

    /// Bin of a (finite) value, after clamping.
    pub fn bin(&self, v: f64) -> usize {
        let c = v.clamp(self.lo, self.hi);
        if self.integer {
            return (c.round() - self.lo) as usize;
        }
        let w = (self.hi - self.lo) / self.bins as f64;
        if w <= 0.0 {
            return 0;
        }
        (((c - self.lo) / w).floor() as usize).min(self.bins - 1)
    }

    /// The value released for bin k.
    pub fn representative(&self, k: usize) -> f64 {
        if self.integer {
            return self.lo + k as f64;
        }
        let w = (self.hi - self.lo) / self.bins as f64;
        self.lo + (k as f64 + 0.5) * w
    }

    /// [low edge, high edge] of bin k (within [lo, hi]).
    pub fn edges(&self, k: usize) -> (f64, f64) {
        if self.integer {
            let v = self.lo + k as f64;
            return (v, v);
        }
        let w = (self.hi - self.lo) / self.bins as f64;
        (self.lo + k as f64 * w, (self.lo + (k + 1) as f64 * w).min(self.hi))
    }
}

fn level(q: f64) -> Result<u64, QuantileError> {
    if !(q > 0.0 && q < 1.0) {
        return Err(QuantileError::BadLevel(q));
    }
    Ok(((q * LEVEL_DEN as f64).round() as u64).clamp(1, LEVEL_DEN - 1))
}

/// Exact exponential-mechanism quantile: the index of the chosen bin.
/// `m` is the most values one unit contributes to `hist`.
pub fn em_quantile<R: RngCore + CryptoRng>(rng: &mut R, hist: &[u64], q: f64, epsilon: Amount, m: u64) -> Result<usize, QuantileError> {
    em_quantile_with_prior(rng, hist, q, epsilon, m, (0, 1))
}

/// [`em_quantile`] with a data-independent base measure μ(k) = exp(−p·k),
/// p = `per_bin.0 / per_bin.1` ≥ 0: bin k is picked with probability
/// ∝ μ(k)·exp(ε·u(k)/(2Δu)).
///
/// The exponential mechanism is ε-DP for any base measure fixed before the data
/// is seen (McSherry & Talwar 2007, Theorem 6): μ cancels in the ratio of the
/// two neighbours' probabilities. A decreasing μ matters on wide geometric
/// domains (bounds chosen over log₂ bins): all the empty bins above the data
/// share the utility of "everything is below", and with few people or a small ε
/// their number, not their utility, decides — the uniform measure then picks a
/// bound far beyond every person (the `--auto-bounds` defect of 2026-11). With
/// μ(k) = exp(−p·k) those bins weigh a geometric series, and the price is a
/// shift of at most p·2Δu/ε in rank per bin toward smaller bins.
pub fn em_quantile_with_prior<R: RngCore + CryptoRng>(
    rng: &mut R,
    hist: &[u64],
    q: f64,
    epsilon: Amount,
    m: u64,
    per_bin: (u64, u64),
) -> Result<usize, QuantileError> {
    if epsilon.is_zero() {
        return Err(QuantileError::ZeroEpsilon);
    }
    assert!(per_bin.1 > 0, "prior denominator must be positive");
    let qn = level(q)? as u128;
    let d = LEVEL_DEN as u128;
    let n: u128 = hist.iter().map(|&h| h as u128).sum();
    let target = qn * n;
    // utilities as non-negative "distances" (u* − u = dist − dist_min)
    let mut below: u128 = 0;
    let mut dist = Vec::with_capacity(hist.len());
    for &h in hist {
        let upto = below + h as u128;
        let (lo, hi) = (d * below, d * upto);
        dist.push(if target < lo { lo - target } else { target.saturating_sub(hi) });
        below = upto;
    }
    let du = qn.max(d - qn) * m.max(1) as u128;
    Ok(em_pick(rng, &dist, du, epsilon, per_bin))
}

/// The exponential mechanism over bins with utility −`dist[k]` (sensitivity
/// `du`) and base measure exp(−p·k), p = `per_bin.0 / per_bin.1`, sampled
/// exactly: bin k with probability ∝ exp(−p·k − ε·dist_k/(2·du)).
pub fn em_pick<R: RngCore + CryptoRng>(rng: &mut R, dist: &[u128], du: u128, epsilon: Amount, per_bin: (u64, u64)) -> usize {
    assert!(per_bin.1 > 0 && du > 0 && !dist.is_empty() && !epsilon.is_zero());
    // γ_k = ε·dist_k/(2Δu) + p·k − min_j(…), over the common denominator
    // 2·Δu·10¹⁸·p_den: num_k = E·dist_k·p_den + p_num·k·2·Δu·10¹⁸.
    let e = BigUint::from(epsilon.atto());
    let scale_den = BigUint::from(du) * BigUint::from(SCALE) * 2u32;
    let den = &scale_den * BigUint::from(per_bin.1);
    let nums: Vec<BigUint> = dist
        .iter()
        .enumerate()
        .map(|(k, &dk)| &e * BigUint::from(dk) * BigUint::from(per_bin.1) + &scale_den * BigUint::from(per_bin.0) * BigUint::from(k))
        .collect();
    let min = nums.iter().min().expect("non-empty domain").clone();
    loop {
        let k = rng.random_range(0..dist.len());
        let num = &nums[k] - &min;
        if bernoulli_exp_big(rng, &num, &den) {
            return k;
        }
    }
}

/// ε₁ : ε₂ of [`svt_threshold`]: the threshold's noise persists over the
/// whole scan (a high draw lets it run on through the empty bins), the
/// queries' does not, so the threshold gets the larger share.
pub const SVT_SPLIT: (u128, u128) = (3, 1);

/// A contribution limit chosen by the sparse vector technique: scanning the
/// log₂ bins upward (bin k: limit 2^(k+1) − 1), the first whose count of people
/// above it, with noise, is at most `target` plus two query-noise scales
/// (2/ε₂ = 8/ε people). In the empty bins above the data, where every count
/// is 0, the margin makes each bin stop the scan with probability ≈ 0.93
/// unless the threshold's noise drew high, so it rarely runs far above them
/// (with one scale, 150 people at ε = 0.4 once ran 12 bins above: a limit
/// 4 000 times too large).
///
/// AboveThreshold (Dwork & Roth 2014, Algorithm 1) with monotone queries
/// (Lyu, Su & Li 2017, "Understanding the Sparse Vector Technique for
/// Differential Privacy", PVLDB 10(6), Algorithm 1 with c = 1 and §4.2):
/// threshold noise ρ ~ Lap(Δ/ε₁), query noise ν_k ~ Lap(Δ/ε₂), ε₁ + ε₂ = ε
/// ([`SVT_SPLIT`]);
/// halt at the first k with −#above_k + ν_k ≥ −T + ρ. Each query has
/// sensitivity Δ = 1 and all move the same way between neighbours (a person
/// added raises every #above_k by 0 or 1), so the scan is ε-DP however many
/// bins it reads. The noise is discrete Laplace on integer counts, whose
/// ratio bounds for integer shifts are the continuous ones'. `None`: no bin
/// qualified (a ⊥ answer, also private).
///
/// Unlike the exponential mechanism over the same bins (used until 2026-11-30),
/// the scan has no ties to break among the empty bins above the data, so it
/// needs no base measure pulling it down — the measure that, strong enough
/// for the ties, overruled the data on small inputs (C = 1 for 150 people at
/// ε = 0.01). Its error is the noise's, about 4·ln(bins/β)/ε people, plus the
/// margin.
pub fn svt_threshold<R: RngCore + CryptoRng>(rng: &mut R, hist: &[u64], target: u64, epsilon: Amount) -> Result<Option<usize>, QuantileError> {
    if epsilon.is_zero() {
        return Err(QuantileError::ZeroEpsilon);
    }
    let (e1, e2) = (epsilon.mul_ratio_floor(SVT_SPLIT.0, SVT_SPLIT.0 + SVT_SPLIT.1), epsilon.mul_ratio_floor(SVT_SPLIT.1, SVT_SPLIT.0 + SVT_SPLIT.1));
    let rho = Noise::laplace(1, e1).map_err(|_| QuantileError::ZeroEpsilon)?;
    let nu = Noise::laplace(1, e2).map_err(|_| QuantileError::ZeroEpsilon)?;
    // the margin: two query-noise scales, public (from ε alone)
    let margin = (2.0 / e2.to_f64()).ceil().min(1e15) as i128;
    let threshold = -(target.min(i64::MAX as u64) as i128) - margin + rho.sample(rng);
    let mut above: i128 = hist.iter().map(|&h| h as i128).sum();
    for (k, &h) in hist.iter().enumerate() {
        above -= h as i128;
        if -above + nu.sample(rng) >= threshold {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// Rank-error bound r (in values) holding with probability ≥ 1 − β.
pub fn rank_error(q: f64, m: u64, epsilon: f64, bins: usize, beta: f64) -> f64 {
    2.0 * q.max(1.0 - q) * m.max(1) as f64 * ((bins as f64).ln() + (1.0 / beta).ln()) / epsilon
}

/// A released quantile with its interval (value units).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QuantileRelease {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
    /// Approximate standard deviation: the interval's half-width over z.
    pub stddev: f64,
}

/// The ε shares of [`quantile_with_ci`]: count, quantile, lower end, upper end.
pub const SPLIT: [(u128, u128); 4] = [(1, 10), (5, 10), (2, 10), (2, 10)];

/// The levels [`quantile_with_ci`] aims its interval ends at, for a group
/// whose noisy count's lower end is `n_lo`: q ∓ (r + 1)/n_lo, with r the rank
/// error of an end's exponential mechanism at its own level (each end has 20 %
/// of `epsilon`). `None`: that end is the domain's edge. `dpq explain` states
/// the same levels, so its prediction is the release's own rule.
pub fn interval_levels(q: f64, m: u64, epsilon: Amount, bins: usize, confidence: f64, n_lo: f64) -> (Option<f64>, Option<f64>) {
    let beta = (1.0 - confidence) / 3.0;
    let part = |i: usize| epsilon.mul_ratio_floor(SPLIT[i].0, SPLIT[i].1).to_f64();
    if n_lo <= 0.0 || part(2) <= 0.0 || part(3) <= 0.0 {
        return (None, None);
    }
    let r_lo = rank_error(q, m, part(2), bins, beta);
    let mut lo = None;
    let q_lo = q - (r_lo + 1.0) / n_lo;
    if q_lo > 0.0 && level(q_lo).is_ok() {
        let r = rank_error(q_lo, m, part(2), bins, beta);
        let q_lo = q - (r + 1.0) / n_lo;
        if q_lo > 0.0 {
            lo = Some(q_lo);
        }
    }
    let r_hi = rank_error(q, m, part(3), bins, beta);
    let mut hi = None;
    let q_hi = q + (r_hi + 1.0) / n_lo;
    if q_hi < 1.0 {
        let r = rank_error(q_hi, m, part(3), bins, beta);
        let q_hi = q + (r + 1.0) / n_lo;
        if q_hi < 1.0 {
            hi = Some(q_hi);
        }
    }
    (lo, hi)
}

/// A DP quantile with a value-space confidence interval (see module docs).
pub fn quantile_with_ci<R: RngCore + CryptoRng>(
    rng: &mut R,
    hist: &[u64],
    domain: &Domain,
    q: f64,
    epsilon: Amount,
    m: u64,
    confidence: f64,
) -> Result<QuantileRelease, QuantileError> {
    let parts: Vec<Amount> = SPLIT.iter().map(|&(p, d)| epsilon.mul_ratio_floor(p, d)).collect();
    let beta = (1.0 - confidence) / 3.0;
    let n: u64 = hist.iter().sum();
    let count_noise = Noise::laplace(m.max(1) as u128, parts[0]).map_err(|_| QuantileError::ZeroEpsilon)?;
    let n_hat = n as i128 + count_noise.sample(rng);
    let n_lo = n_hat - count_noise.halfwidth(1.0 - beta) as i128;
    let k = em_quantile(rng, hist, q, parts[1], m)?;
    let mut k_lo = 0usize;
    let mut k_hi = hist.len() - 1;
    if n_lo > 0 {
        let (q_lo, q_hi) = interval_levels(q, m, epsilon, hist.len(), confidence, n_lo as f64);
        if let Some(q_lo) = q_lo {
            // EM at a lower level: with prob ≥ 1 − β its bin is ≤ the true bin
            k_lo = em_quantile(rng, hist, q_lo, parts[2], m)?;
        }
        if let Some(q_hi) = q_hi {
            k_hi = em_quantile(rng, hist, q_hi, parts[3], m)?;
        }
    }
    let value = domain.representative(k);
    let ci_low = domain.edges(k_lo).0.min(value);
    let ci_high = domain.edges(k_hi).1.max(value);
    let z = super::special::normal_isf((1.0 - confidence) / 2.0);
    Ok(QuantileRelease { value, ci_low, ci_high, confidence, stddev: (ci_high - ci_low) / (2.0 * z) })
}

#[cfg(test)]
mod test;
