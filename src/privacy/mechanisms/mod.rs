//! Mechanisms: each aggregate dpq releases is a type that holds its noise and
//! derives from that noise alone
//!
//! * its **cost** — the [`Release`]s the ledger charges ([`Mechanism::releases`]),
//!   and
//! * its **accuracy** — what explain, reports and intervals show,
//!
//! in the manner of OpenDP's measurements with their privacy maps. The engine
//! feeds exact bounded statistics and post-processes; no code path computes a
//! charged cost apart from the noise drawn.
//!
//! | mechanism | releases | guarantee |
//! |---|---|---|
//! | [`count::Count`] | one noisy integer | Δ₁/b-DP (Laplace) or Δ₂²/(2σ²)-zCDP (Gaussian) |
//! | [`sum::Sum`] | one noisy fixed-point sum | as count, Δ in grid units |
//! | [`mean::Mean`] | noisy count + noisy centred sum | sum of both |
//! | [`variance::Variance`] | noisy count, centred sum, centred sum of squares | sum of the three |
//! | [`quantile::Quantile`] | exponential mechanism (value and interval ends) + a noisy count | ε of its four parts, times the groups a person touches |
//! | [`topk::TopK`] | the k largest noisy counts of a [`count::Count`] histogram | the histogram's (post-processing) |
//! | [`partition::PartitionSelection`] | which keys without a domain are released | (ε, δ) over the keys a person touches |
//! | [`auto_bounds::AutoBounds`] | three exponential-mechanism quantiles of contribution sizes | ε |
//!
//! Each lives in its own directory with `test.rs` beside it.

pub mod auto_bounds;
pub mod count;
pub mod mean;
pub mod partition;
pub mod quantile;
pub mod sum;
pub mod topk;
pub mod variance;

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{ToPrimitive, Zero};
use rand::{CryptoRng, RngCore};

use super::accountant::Release;
use super::amount::{Amount, SCALE};
use super::noise::{Noise, NoiseError};

/// A released value in value units with its accuracy: the noise's standard
/// deviation and an interval [lo, hi] that covers the pre-noise (bounded) value
/// with the stated confidence. `lo ≤ value ≤ hi` always.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Cell {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub sd: f64,
}

/// What a mechanism costs, derived from its noise.
pub trait Mechanism {
    /// The releases the ledger charges for one use of this mechanism.
    fn releases(&self) -> Vec<Release>;
}

/// Sensitivities of an integer-valued query in grid units: the most one person
/// can change it, in L1 and in squared L2 over everything it releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sensitivity {
    pub l1: u128,
    pub l2_sq: u128,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MechanismError {
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("the sensitivity of {what} overflows (bounds too wide for the contribution limits); narrow the bounds or lower the limits")]
    Overflow { what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

/// What one noisy component may spend: ε for discrete Laplace noise, ρ for
/// discrete Gaussian noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Laplace(Amount),
    Gaussian(Amount),
}

impl Budget {
    /// Noise calibrated to `s` within this budget.
    pub fn additive(self, s: Sensitivity) -> Result<Additive, MechanismError> {
        match self {
            Budget::Laplace(eps) => Additive::laplace(s, eps),
            Budget::Gaussian(rho) => Additive::gaussian(s, rho),
        }
    }
    /// The noise scale in value units for values up to `m` added by rows with
    /// sensitivities `rows` (used to choose a fixed-point grid).
    pub fn value_scale(self, rows: Sensitivity, m: f64) -> f64 {
        match self {
            Budget::Laplace(eps) => rows.l1 as f64 * m / eps.to_f64(),
            Budget::Gaussian(rho) => (rows.l2_sq as f64).sqrt() * m / (2.0 * rho.to_f64()).sqrt(),
        }
    }
    /// An equal share of `parts` (rounded down).
    pub fn share(self, parts: u128) -> Budget {
        match self {
            Budget::Laplace(a) => Budget::Laplace(a.mul_ratio_floor(1, parts.max(1))),
            Budget::Gaussian(a) => Budget::Gaussian(a.mul_ratio_floor(1, parts.max(1))),
        }
    }
}

/// The most grid units a value may span so that a component whose sensitivity
/// is `rows` × units^`power` keeps its noise scale within the samplers' range
/// (2⁵⁵ grid units, well below their 2⁶² limit): wider values get a coarser grid.
pub fn unit_cap(budget: Budget, rows: Sensitivity, power: i32) -> f64 {
    let limit = 2f64.powi(55);
    let per = match budget {
        Budget::Laplace(eps) => limit * eps.to_f64() / rows.l1.max(1) as f64,
        Budget::Gaussian(rho) => limit * (2.0 * rho.to_f64()).sqrt() / (rows.l2_sq.max(1) as f64).sqrt(),
    };
    per.powf(1.0 / power as f64).floor().clamp(1.0, crate::privacy::fixed_point::MAX_UNITS)
}

/// Checked product for sensitivities: an overflow is an error, never a wrap.
pub fn mul(a: u128, b: u128, what: &'static str) -> Result<u128, MechanismError> {
    a.checked_mul(b).ok_or(MechanismError::Overflow { what })
}

/// One additive-noise release of an integer query with known sensitivity.
#[derive(Debug, Clone, PartialEq)]
pub struct Additive {
    pub noise: Noise,
    pub sensitivity: Sensitivity,
}

impl Additive {
    /// Discrete Laplace for L1 sensitivity `s.l1` at ε (scale Δ₁/ε, rounded up).
    pub fn laplace(s: Sensitivity, epsilon: Amount) -> Result<Additive, MechanismError> {
        Ok(Additive { noise: Noise::laplace(s.l1, epsilon)?, sensitivity: s })
    }

    /// Discrete Gaussian for squared L2 sensitivity `s.l2_sq` at ρ (σ² = Δ₂²/(2ρ)).
    pub fn gaussian(s: Sensitivity, rho: Amount) -> Result<Additive, MechanismError> {
        Ok(Additive { noise: Noise::gaussian(s.l2_sq, rho)?, sensitivity: s })
    }

    /// The exact cost of this noise: ε = Δ₁/b for the Laplace (b = t/s, so
    /// ε = Δ₁·s/t) and ρ = Δ₂²/(2σ²) for the Gaussian, rounded *up* to 10⁻¹⁸.
    /// Never more than what the noise was calibrated from.
    pub fn release(&self) -> Release {
        match &self.noise {
            Noise::Laplace { scale } => {
                let num = BigUint::from(self.sensitivity.l1.max(1)) * BigUint::from(scale.s) * BigUint::from(SCALE);
                Release::Pure { epsilon: ceil_amount(&num, &BigUint::from(scale.t)) }
            }
            Noise::Gaussian { sigma2 } => {
                let num = BigUint::from(self.sensitivity.l2_sq.max(1)) * &sigma2.den * BigUint::from(SCALE);
                let den = &sigma2.num * 2u32;
                Release::Zcdp { rho: ceil_amount(&num, &den), epsilon: Amount::ZERO, delta: Amount::ZERO }
            }
        }
    }

    /// `exact` plus one draw of the noise.
    pub fn sample<R: RngCore + CryptoRng>(&self, rng: &mut R, exact: i128) -> i128 {
        exact.saturating_add(self.noise.sample(rng))
    }

    pub fn stddev(&self) -> f64 {
        self.noise.stddev()
    }

    /// The smallest k with P(|Z| ≤ k) ≥ `confidence`.
    pub fn halfwidth(&self, confidence: f64) -> u128 {
        self.noise.halfwidth(confidence)
    }
}

/// ⌈num/den⌉ as an amount of atto-units (saturating at the largest amount).
fn ceil_amount(num: &BigUint, den: &BigUint) -> Amount {
    if den.is_zero() {
        return Amount::from_atto(u128::MAX);
    }
    let (q, r) = num.div_rem(den);
    let q = if r.is_zero() { q } else { q + 1u32 };
    Amount::from_atto(q.to_u128().unwrap_or(u128::MAX))
}

/// The releases of several mechanisms, Gaussian parts pooled into one zCDP
/// release whose (ε, δ) under basic composition is the CKS20 conversion of the
/// summed ρ at `delta` (rounded up). Pure and approximate releases pass through.
pub fn pool(releases: Vec<Release>, delta: Amount) -> Vec<Release> {
    let mut out = Vec::new();
    let mut rho = Amount::ZERO;
    for r in releases {
        match r {
            Release::Zcdp { rho: p, .. } => rho = rho + p,
            other => out.push(other),
        }
    }
    if !rho.is_zero() {
        let eps = super::accountant::cks_epsilon_upper(rho, delta);
        out.push(Release::Zcdp { rho, epsilon: eps, delta });
    }
    out
}

#[cfg(test)]
mod test;
