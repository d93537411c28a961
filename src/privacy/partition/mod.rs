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
    /// The exact per-key parameters the probabilities satisfy.
    pub epsilon_key: Amount,
    pub delta_key_exact: Amount,
}

const TWO64: u128 = 1 << 64;

impl Optimal {
    /// The optimal selector for a person touching at most `l0` keys, with
    /// per-key budget (⌊ε/l0⌋, ⌊δ/l0⌋).
    ///
    /// **Outward rounding.** Every π(n) is a numerator over 2⁶⁴ computed from
    /// the previous (already rounded) one with a *lower* bound on e^ε (from an
    /// ε no larger than the key's), a *lower* bound on δ and an *upper* bound on
    /// e^{−ε}, and then rounded down; so both DVGM22 constraints,
    /// π(n) ≤ e^ε π(n−1) + δ and π(n) ≤ 1 − e^{−ε}(1 − π(n−1) − δ), hold
    /// exactly for the probabilities that are sampled. (`test.rs` checks them
    /// with rational arithmetic.)
    pub fn new(epsilon: Amount, delta: Amount, l0: u64) -> Result<Optimal, PartitionError> {
        if epsilon.is_zero() {
            return Err(PartitionError::ZeroEpsilon);
        }
        if delta.is_zero() {
            return Err(PartitionError::NeedDelta);
        }
        let l0 = l0.max(1);
        let epsilon_key = epsilon.mul_ratio_floor(1, l0 as u128);
        let delta_key_exact = delta.mul_ratio_floor(1, l0 as u128);
        let eps = epsilon_key.to_f64();
        let delta_key = delta_key_exact.to_f64();
        if delta_key < 1e-15 || epsilon_key.is_zero() {
            return Err(PartitionError::DeltaTooSmall(delta_key));
        }
        let slack = 1.0 - 8.0 * f64::EPSILON;
        let eps_lo = eps * slack;
        // fixed point with 64 fractional bits
        let e_lo: u128 = ((eps_lo.exp() * slack) * TWO64 as f64).floor() as u128;
        let e_neg_hi: u128 = (((-eps_lo).exp() / slack) * TWO64 as f64).ceil() as u128;
        let d_lo: u128 = {
            use num_bigint::BigUint;
            use num_traits::ToPrimitive;
            let v = BigUint::from(delta_key_exact.atto()) * BigUint::from(TWO64) / BigUint::from(crate::privacy::amount::SCALE);
            v.to_u128().unwrap_or(u128::MAX)
        };
        let mut probs = vec![0u64];
        let mut prev: u128 = 0;
        loop {
            // a = ⌊e_lo·π/2⁶⁴⌋ + ⌊δ·2⁶⁴⌋  ≤ e^ε·π + δ
            let a = mul_shift(e_lo, prev).saturating_add(d_lo);
            // b = 2⁶⁴ − ⌈e_neg_hi·(2⁶⁴ − π − δ)/2⁶⁴⌉  ≤ 1 − e^{−ε}(1 − π − δ)
            let rest = TWO64.saturating_sub(prev).saturating_sub(d_lo);
            let b = TWO64.saturating_sub(mul_shift_ceil(e_neg_hi, rest));
            let next = a.min(b).max(prev);
            if next >= TWO64 || probs.len() > 10_000_000 {
                break;
            }
            probs.push(next as u64);
            if next == prev && next > 0 {
                // no progress is possible at this precision: π = 1 from here on would break the
                // constraints, so keep the last probability (valid for every larger n)
                break;
            }
            prev = next;
        }
        Ok(Optimal { probs, eps_key: eps, delta_key, epsilon_key, delta_key_exact })
    }

    /// π(n) as f64.
    pub fn probability(&self, n: u64) -> f64 {
        match self.probs.get(n as usize) {
            Some(&k) => k as f64 / 18_446_744_073_709_551_616.0,
            None => self.beyond(),
        }
    }

    fn beyond(&self) -> f64 {
        if self.saturated() { 1.0 } else { *self.probs.last().unwrap() as f64 / 18_446_744_073_709_551_616.0 }
    }

    /// Whether the table ends because π reached 1 (else it stalled below 1).
    fn saturated(&self) -> bool {
        self.probs.len() < 2 || self.probs[self.probs.len() - 1] != self.probs[self.probs.len() - 2]
    }

    /// The numerators π(n)·2⁶⁴ (for the exact test).
    pub fn numerators(&self) -> &[u64] {
        &self.probs
    }

    pub fn per_key(&self) -> (f64, f64) {
        (self.eps_key, self.delta_key)
    }
}

/// ⌊a·b / 2⁶⁴⌋ without overflow.
fn mul_shift(a: u128, b: u128) -> u128 {
    use num_bigint::BigUint;
    use num_traits::ToPrimitive;
    ((BigUint::from(a) * BigUint::from(b)) >> 64u32).to_u128().unwrap_or(u128::MAX)
}

/// ⌈a·b / 2⁶⁴⌉ without overflow.
fn mul_shift_ceil(a: u128, b: u128) -> u128 {
    use num_bigint::BigUint;
    use num_traits::ToPrimitive;
    let p = BigUint::from(a) * BigUint::from(b);
    let q = &p >> 64u32;
    let exact = (&q << 64u32) == p;
    (if exact { q } else { q + 1u32 }).to_u128().unwrap_or(u128::MAX)
}

impl Selector for Optimal {
    fn keep<R: RngCore + CryptoRng>(&self, rng: &mut R, n: u64) -> bool {
        match self.probs.get(n as usize) {
            Some(&k) => rng.random::<u64>() < k,
            None if self.saturated() => true,
            None => rng.random::<u64>() < *self.probs.last().unwrap(),
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
        // a relative margin absorbs f64 rounding in the tail: the δ charged is never exceeded
        let target = delta_key * (1.0 - 1e-9);
        while upper_tail(alpha, m) > target {
            m += 1;
        }
        while m > 1 && upper_tail(alpha, m - 1) <= target {
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
