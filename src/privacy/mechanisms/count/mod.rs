//! Noisy counts: rows (`COUNT(*)`), non-null values (`COUNT(x)`) and people
//! (`COUNT(DISTINCT unit)`) per group.
//!
//! **Sensitivity.** After bounding, one person adds at most Linf rows to each of
//! at most L0 groups (L0/Linf), or at most C rows in total (L1): the histogram's
//! L1 sensitivity is L0·Linf or C, its squared L2 sensitivity L0·Linf² or C².
//! People per group: L0 (each person is in at most L0 groups), or C under L1.
//!
//! **Noise and cost.** Discrete Laplace with scale b ≥ Δ₁/ε is ε′-DP with
//! ε′ = Δ₁/b ≤ ε (Ghosh, Roughgarden, Sundararajan 2009; Canonne, Kamath,
//! Steinke 2020, §2); discrete Gaussian with σ² = Δ₂²/(2ρ) is ρ-zCDP (CKS20,
//! Theorem 14). The cost charged is computed from the noise (b or σ²), see
//! [`super::Additive::release`].
//!
//! **Accuracy.** The interval is the smallest symmetric [v − k, v + k] with
//! P(|Z| ≤ k) ≥ the confidence, from the exact noise distribution.
//!
//! **Post-processing.** A count is never negative: the released value is
//! max(v, 0) and the interval [max(v − k, 0), max(v + k, k)]: intersected with
//! [0, ∞), and at the top never below the interval of a released 0 (so a
//! count the noise pushed wholly below 0 reads "0 [0, k]", not "0 [0, 0]").
//! Post-processing a DP release is DP; the interval keeps its coverage (the
//! true count is ≥ 0, and the interval only grows), and the value stays
//! inside it. Clipping biases counts near zero upward by at most
//! E[max(0, −Z)] (≈ b/2 for Laplace), which explain states.

use rand::{CryptoRng, RngCore};

use super::{Additive, Cell, Mechanism, MechanismError, Sensitivity};
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;

/// A noisy count per group.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    pub noise: Additive,
}

impl Count {
    pub fn laplace(s: Sensitivity, epsilon: Amount) -> Result<Count, MechanismError> {
        Ok(Count { noise: Additive::laplace(s, epsilon)? })
    }
    pub fn gaussian(s: Sensitivity, rho: Amount) -> Result<Count, MechanismError> {
        Ok(Count { noise: Additive::gaussian(s, rho)? })
    }

    /// Release `exact` (≥ 0): the value, clipped at 0, with its interval.
    pub fn release<R: RngCore + CryptoRng>(&self, rng: &mut R, exact: u64, confidence: f64) -> Cell {
        let v = self.noise.sample(rng, exact as i128);
        clip_at_zero(v, self.noise.halfwidth(confidence), self.noise.stddev(), 1.0)
    }

    /// The half-width of the interval, in counts.
    pub fn halfwidth(&self, confidence: f64) -> f64 {
        self.noise.halfwidth(confidence) as f64
    }
}

/// A noisy non-negative quantity `v` (grid units of size `unit`): value
/// max(v, 0) and interval [max(v − k, 0), max(v + k, k)] — intersected with
/// [0, ∞) and never shorter at the top than the interval of a count of 0, so
/// a count pushed below 0 reads "0 [0, k]" (indistinguishable from 0 at this
/// noise), not a certain-looking "0 [0, 0]". A superset of the symmetric
/// interval's intersection with [0, ∞): the coverage is kept.
pub(crate) fn clip_at_zero(v: i128, halfwidth: u128, stddev: f64, unit: f64) -> Cell {
    let k = halfwidth.min(i128::MAX as u128) as i128;
    let lo = v.saturating_sub(k).max(0);
    let hi = v.saturating_add(k).max(k);
    Cell { value: v.max(0) as f64 * unit, lo: lo as f64 * unit, hi: hi as f64 * unit, sd: stddev * unit }
}

impl Mechanism for Count {
    fn releases(&self) -> Vec<Release> {
        vec![self.noise.release()]
    }
}

#[cfg(test)]
mod test;
