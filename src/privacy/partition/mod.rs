//! Partition (key) selection for GROUP BY keys that have no public domain.
//!
//! Releasing a key reveals that someone has it, so a key without a declared
//! domain is released only by a randomised decision that is (ε, δ)-DP in the
//! presence of any one unit. Each unit contributes to at most L0 keys; the
//! per-key budget is ε/L0, δ/L0 (basic composition over the keys a unit touches),
//! and the input is n, the number of distinct units holding the key (after
//! bounding, so it changes by at most 1 per key when one unit is added/removed).
//!
//! * [`Optimal`] — the optimal mechanism of Desfontaines, Voss, Gipson, Mandayam,
//!   *Differentially private partition selection*, PoPETs 2022: keep a key with
//!   probability π(n), π(0) = 0,
//!   π(n) = min(e^ε π(n−1) + δ, 1 − e^{−ε}(1 − π(n−1) − δ), 1).
//!   π(1) = δ/L0 exactly, which is the release probability of a key held by one unit.
//! * [`LaplaceThreshold`] — n + Z ≥ τ with Z discrete Laplace of scale L0/ε. A key
//!   is kept when the noisy count is **≥** τ, so its δ is the *inclusive* tail
//!   P(Z ≥ τ − 1) for a key held by one unit; τ is the smallest integer for which
//!   that tail is ≤ δ/L0. (Computing δ from the strict tail while keeping on ≥ is
//!   the bug class of OpenDP #2922.)
//!
//! Keep decisions are drawn exactly: π(n) is rounded *down* to a multiple of 2⁻⁶⁴
//! and compared with a uniform 64-bit integer; the Laplace noise is exact.

use rand::{CryptoRng, Rng, RngCore};

use super::amount::Amount;
use super::noise::Noise;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartitionError {
    #[error("keys without a domain need δ > 0 to be released; pass --delta (e.g. 1e-8) or declare a domain for the GROUP BY column in dpq.toml")]
    NeedDelta,
    #[error("δ per key ({0:e}) is too small to select keys reliably; raise --delta")]
    DeltaTooSmall(f64),
    #[error("ε must be > 0")]
    ZeroEpsilon,
}

/// Probability that a key with `n` units is kept, as an exact fraction k/2⁶⁴.
pub trait Selector {
    /// Keep this key? `n` is its bounded count of distinct units.
    fn keep<R: RngCore + CryptoRng>(&self, rng: &mut R, n: u64) -> bool;
    /// The exact probability that a key held by exactly one unit is kept.
    fn single_unit_release_probability(&self) -> f64;
    /// Units needed for a key to be kept with probability ≥ 1/2 (for explain).
    fn n_for_half(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct Optimal {
    /// π(n) as numerators over 2⁶⁴ for n = 0..; beyond the end, π = 1.
    probs: Vec<u64>,
    eps_key: f64,
    delta_key: f64,
}

impl Optimal {
    pub fn new(epsilon: Amount, delta: Amount, l0: u64) -> Result<Optimal, PartitionError> {
        if epsilon.is_zero() {
            return Err(PartitionError::ZeroEpsilon);
        }
        if delta.is_zero() {
            return Err(PartitionError::NeedDelta);
        }
        let l0 = l0.max(1) as f64;
        let eps = epsilon.to_f64() / l0;
        let delta_key = delta.to_f64() / l0;
        if delta_key < 1e-15 {
            return Err(PartitionError::DeltaTooSmall(delta_key));
        }
        // a tiny relative slack absorbs f64 rounding in the recursion
        let d = delta_key * (1.0 - 1e-9);
        let e = eps.exp();
        let em = (-eps).exp();
        let mut probs = vec![0u64];
        let mut prev = 0.0f64;
        loop {
            let p = (e * prev + d).min(1.0 - em * (1.0 - prev - d)).min(1.0);
            if p >= 1.0 - 1e-18 || probs.len() > 10_000_000 {
                break;
            }
            probs.push(floor_2_64(p));
            prev = p;
        }
        Ok(Optimal { probs, eps_key: eps, delta_key })
    }

    /// π(n) as f64.
    pub fn probability(&self, n: u64) -> f64 {
        match self.probs.get(n as usize) {
            Some(&k) => k as f64 / 18_446_744_073_709_551_616.0,
            None => 1.0,
        }
    }

    pub fn per_key(&self) -> (f64, f64) {
        (self.eps_key, self.delta_key)
    }
}

fn floor_2_64(p: f64) -> u64 {
    if p <= 0.0 {
        return 0;
    }
    let x = p * 18_446_744_073_709_551_616.0;
    if x >= u64::MAX as f64 { u64::MAX } else { x.floor() as u64 }
}

impl Selector for Optimal {
    fn keep<R: RngCore + CryptoRng>(&self, rng: &mut R, n: u64) -> bool {
        match self.probs.get(n as usize) {
            Some(&k) => rng.random::<u64>() < k,
            None => true,
        }
    }
    fn single_unit_release_probability(&self) -> f64 {
        self.probability(1)
    }
    fn n_for_half(&self) -> u64 {
        (0..).find(|&n| self.probability(n) >= 0.5).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone)]
pub struct LaplaceThreshold {
    pub noise: Noise,
    /// Keep when n + Z ≥ threshold.
    pub threshold: i128,
    alpha: f64,
}

impl LaplaceThreshold {
    pub fn new(epsilon: Amount, delta: Amount, l0: u64) -> Result<LaplaceThreshold, PartitionError> {
        if epsilon.is_zero() {
            return Err(PartitionError::ZeroEpsilon);
        }
        if delta.is_zero() {
            return Err(PartitionError::NeedDelta);
        }
        let l0 = l0.max(1);
        // each unit changes ≤ l0 keys' counts by 1: L1 sensitivity l0
        let noise = Noise::laplace(l0 as u128, epsilon).map_err(|_| PartitionError::ZeroEpsilon)?;
        let b = noise.scale();
        let alpha = (-1.0 / b).exp();
        let delta_key = delta.to_f64() / l0 as f64;
        if delta_key < 1e-300 {
            return Err(PartitionError::DeltaTooSmall(delta_key));
        }
        // P(Z ≥ m) = α^m / (1 + α) for m ≥ 1; need P(Z ≥ τ − 1) ≤ δ_key
        let mut m = (((delta_key * (1.0 + alpha)).ln() / alpha.ln()).ceil() as i128).max(1);
        while upper_tail(alpha, m) > delta_key {
            m += 1;
        }
        while m > 1 && upper_tail(alpha, m - 1) <= delta_key {
            m -= 1;
        }
        Ok(LaplaceThreshold { noise, threshold: m + 1, alpha })
    }
}

/// P(Z ≥ m) for discrete Laplace with parameter α (m ≥ 1).
fn upper_tail(alpha: f64, m: i128) -> f64 {
    alpha.powf(m as f64) / (1.0 + alpha)
}

impl Selector for LaplaceThreshold {
    fn keep<R: RngCore + CryptoRng>(&self, rng: &mut R, n: u64) -> bool {
        n as i128 + self.noise.sample(rng) >= self.threshold
    }
    fn single_unit_release_probability(&self) -> f64 {
        // P(1 + Z ≥ τ) = P(Z ≥ τ − 1), inclusive
        upper_tail(self.alpha, self.threshold - 1)
    }
    fn n_for_half(&self) -> u64 {
        self.threshold.max(0) as u64
    }
}

#[cfg(test)]
mod test;
