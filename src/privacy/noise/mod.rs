//! Additive noise mechanisms for counts and (fixed-point) sums, with their exact
//! accuracy.
//!
//! * **Discrete Laplace** (pure ε-DP). For a query with L1 sensitivity Δ (integer,
//!   in grid units), adding Z with P(Z = z) ∝ exp(−|z|/b), b = Δ/ε, is ε-DP
//!   (Ghosh, Roughgarden, Sundararajan 2009; CKS20 §2). Var(Z) = 2α/(1−α)², α = e^{−1/b}.
//!   P(|Z| > k) = 2α^{k+1}/(1+α).
//! * **Discrete Gaussian** (ρ-zCDP). For L2 sensitivity Δ₂, Z ~ N_ℤ(0, σ²) with
//!   σ² = Δ₂²/(2ρ) is ρ-zCDP (Canonne, Kamath, Steinke 2020, Theorem 14).
//!   Var(Z) ≤ σ²; tails are summed from the exact pmf (σ ≤ 2000) or, above that,
//!   from the continuous Gaussian with continuity correction, whose error is of
//!   order e^{−2π²σ²} (Poisson summation) — far below f64 resolution.
//!
//! Confidence intervals are symmetric: the smallest integer k with P(|Z| ≤ k) ≥ the
//! confidence level, so the interval [v − k, v + k] around a released value v covers
//! the pre-noise (bounded) value with at least that probability. They cover the
//! noise only, not the bias introduced by bounding contributions.

use num_bigint::BigUint;
use rand::{CryptoRng, RngCore};

use super::amount::{Amount, SCALE};
use super::samplers::{self, Scale, Variance};
use super::special::erfc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NoiseError {
    #[error("ε must be > 0")]
    ZeroEpsilon,
    #[error("ρ must be > 0")]
    ZeroRho,
    #[error("the noise scale would be astronomically large (sensitivity {sensitivity} with ε = {epsilon}); raise ε or lower the bounds")]
    OutOfRange { sensitivity: String, epsilon: String },
}

/// The distribution of the noise added to one released value, in grid units.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    Laplace { scale: Scale },
    Gaussian { sigma2: Variance },
}

impl Noise {
    /// Discrete Laplace calibrated to L1 sensitivity `delta` (grid units) at `epsilon`.
    pub fn laplace(sensitivity: u128, epsilon: Amount) -> Result<Noise, NoiseError> {
        if epsilon.is_zero() {
            return Err(NoiseError::ZeroEpsilon);
        }
        let sens = sensitivity.max(1);
        // b = Δ / ε = Δ · 10¹⁸ / E
        let t = sens.checked_mul(SCALE).ok_or_else(|| NoiseError::OutOfRange { sensitivity: sens.to_string(), epsilon: epsilon.to_string() })?;
        if t / epsilon.atto() > 1u128 << 62 {
            return Err(NoiseError::OutOfRange { sensitivity: sens.to_string(), epsilon: epsilon.to_string() });
        }
        Ok(Noise::Laplace { scale: Scale::new_at_least(t, epsilon.atto()) })
    }

    /// Discrete Gaussian calibrated to squared L2 sensitivity `delta2_sq` (grid units²) at `rho`.
    pub fn gaussian(delta2_sq: u128, rho: Amount) -> Result<Noise, NoiseError> {
        if rho.is_zero() {
            return Err(NoiseError::ZeroRho);
        }
        // σ² = Δ₂² / (2ρ) = Δ₂² · 10¹⁸ / (2R)
        let num = BigUint::from(delta2_sq.max(1)) * BigUint::from(SCALE);
        let den = BigUint::from(rho.atto()) * 2u32;
        let v = Variance { num, den };
        if v.to_f64() > 1e36 {
            return Err(NoiseError::OutOfRange { sensitivity: delta2_sq.to_string(), epsilon: format!("ρ={rho}") });
        }
        Ok(Noise::Gaussian { sigma2: v })
    }

    pub fn sample<R: RngCore + CryptoRng>(&self, rng: &mut R) -> i128 {
        match self {
            Noise::Laplace { scale } => samplers::discrete_laplace(rng, *scale),
            Noise::Gaussian { sigma2 } => samplers::discrete_gaussian(rng, sigma2),
        }
    }

    /// The Laplace scale b, or σ for the Gaussian (grid units).
    pub fn scale(&self) -> f64 {
        match self {
            Noise::Laplace { scale } => scale.to_f64(),
            Noise::Gaussian { sigma2 } => sigma2.to_f64().sqrt(),
        }
    }

    pub fn variance(&self) -> f64 {
        match self {
            Noise::Laplace { scale } => {
                let b = scale.to_f64();
                let one_minus_alpha = -(-1.0 / b).exp_m1();
                let alpha = 1.0 - one_minus_alpha;
                2.0 * alpha / (one_minus_alpha * one_minus_alpha)
            }
            Noise::Gaussian { sigma2 } => {
                let s2 = sigma2.to_f64();
                match small_gaussian_pmf(s2) {
                    Some(pmf) => pmf.iter().enumerate().map(|(i, p)| p * ((i as f64 - (pmf.len() / 2) as f64).powi(2))).sum(),
                    None => s2,
                }
            }
        }
    }

    pub fn stddev(&self) -> f64 {
        self.variance().sqrt()
    }

    /// P(|Z| > k).
    pub fn tail(&self, k: u128) -> f64 {
        match self {
            Noise::Laplace { scale } => {
                let b = scale.to_f64();
                let alpha = (-1.0 / b).exp();
                2.0 * (-((k as f64) + 1.0) / b).exp() / (1.0 + alpha)
            }
            Noise::Gaussian { sigma2 } => {
                let s2 = sigma2.to_f64();
                match small_gaussian_pmf(s2) {
                    Some(pmf) => {
                        let mid = pmf.len() / 2;
                        let k = k.min(mid as u128) as usize;
                        let inside: f64 = pmf[mid - k..=mid + k].iter().sum();
                        (1.0 - inside).max(0.0)
                    }
                    None => erfc((k as f64 + 0.5) / (2.0 * s2).sqrt()),
                }
            }
        }
    }

    /// The smallest k with P(|Z| ≤ k) ≥ `confidence`.
    pub fn halfwidth(&self, confidence: f64) -> u128 {
        assert!(confidence > 0.0 && confidence < 1.0);
        let miss = 1.0 - confidence;
        // initial guess then exact adjustment
        let mut k: u128 = match self {
            Noise::Laplace { scale } => {
                let b = scale.to_f64();
                let alpha = (-1.0 / b).exp();
                let x = b * (2.0 / (miss * (1.0 + alpha))).ln() - 1.0;
                if x.is_finite() && x > 0.0 { x.ceil() as u128 } else { 0 }
            }
            Noise::Gaussian { sigma2 } => {
                let z = super::special::normal_isf(miss / 2.0);
                (z * sigma2.to_f64().sqrt()).ceil().max(0.0) as u128
            }
        };
        while self.tail(k) > miss {
            k += 1 + k / 64;
        }
        // walk back to the smallest (binary search over [0, k])
        let (mut lo, mut hi) = (0u128, k);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.tail(mid) <= miss { hi = mid } else { lo = mid + 1 }
        }
        lo
    }

    pub fn describe(&self) -> String {
        match self {
            Noise::Laplace { scale } => format!("discrete Laplace, scale {:.4}", scale.to_f64()),
            Noise::Gaussian { sigma2 } => format!("discrete Gaussian, σ {:.4}", sigma2.to_f64().sqrt()),
        }
    }
}

/// The normalised pmf of N_ℤ(0, σ²) on [−w, w] when σ ≤ 2000 (index w is 0).
fn small_gaussian_pmf(s2: f64) -> Option<Vec<f64>> {
    if s2 > 2000.0 * 2000.0 {
        return None;
    }
    let w = (s2.sqrt() * 40.0) as i64 + 10;
    let mut v: Vec<f64> = (-w..=w).map(|x| (-((x * x) as f64) / (2.0 * s2)).exp()).collect();
    let z: f64 = v.iter().sum();
    for p in &mut v {
        *p /= z;
    }
    Some(v)
}

/// One noisy value with its accuracy, in grid units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noisy {
    pub value: i128,
    pub stddev: f64,
    pub halfwidth: u128,
    pub confidence: f64,
}

/// Release `exact + Z`.
pub fn release<R: RngCore + CryptoRng>(rng: &mut R, exact: i128, noise: &Noise, confidence: f64) -> Noisy {
    Noisy { value: exact.saturating_add(noise.sample(rng)), stddev: noise.stddev(), halfwidth: noise.halfwidth(confidence), confidence }
}

#[cfg(test)]
mod test;
