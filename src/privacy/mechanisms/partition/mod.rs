//! Partition selection: which GROUP BY keys without a public domain are
//! released (the math is in [`crate::privacy::partition`]).
//!
//! A key only private rows reveal is released by a randomised decision on n,
//! its bounded number of distinct people; a person touches at most L0 keys, so
//! each key gets (ε/L0, δ/L0) and the selection costs (ε, δ) by basic
//! composition over those keys (Desfontaines, Voss, Gipson, Mandayam, PoPETs
//! 2022, for the optimal selector; Laplace thresholding with the *inclusive*
//! tail, cf. OpenDP #2922). The cost charged is derived from the selector as
//! built: L0 times its exact per-key (ε, δ).

use rand::{CryptoRng, RngCore};

use super::{Additive, Mechanism, MechanismError, Sensitivity};
use crate::config::PartitionSelectionKind;
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;
use crate::privacy::partition::{LaplaceThreshold, Optimal, Selector};

#[derive(Debug, Clone)]
pub enum Rule {
    Optimal(Optimal),
    Laplace(LaplaceThreshold),
}

#[derive(Debug, Clone)]
pub struct PartitionSelection {
    pub rule: Rule,
    pub groups_per_unit: u64,
    /// Per-key δ the selector satisfies.
    pub delta_key: Amount,
    pub epsilon: Amount,
    pub delta: Amount,
}

impl PartitionSelection {
    /// Built on the parameters only: a δ too small for the selector fails here,
    /// before anything is charged.
    pub fn new(kind: PartitionSelectionKind, epsilon: Amount, delta: Amount, groups_per_unit: u64) -> Result<PartitionSelection, MechanismError> {
        let err = |e: crate::privacy::partition::PartitionError| MechanismError::Invalid(e.to_string());
        let l0 = groups_per_unit.max(1);
        let delta_key = delta.mul_ratio_floor(1, l0 as u128);
        let rule = match kind {
            PartitionSelectionKind::Optimal => Rule::Optimal(Optimal::new(epsilon, delta, l0).map_err(err)?),
            PartitionSelectionKind::Laplace => Rule::Laplace(LaplaceThreshold::new(epsilon, delta, l0).map_err(err)?),
        };
        Ok(PartitionSelection { rule, groups_per_unit: l0, delta_key, epsilon, delta })
    }

    /// Keep a key held by `n` people (after bounding)? Keys nobody holds are
    /// never candidates.
    pub fn keep<R: RngCore + CryptoRng>(&self, rng: &mut R, n: u64) -> bool {
        n > 0
            && match &self.rule {
                Rule::Optimal(o) => o.keep(rng, n),
                Rule::Laplace(l) => l.keep(rng, n),
            }
    }

    /// People a key needs to be released with probability ≥ ½ (for explain).
    pub fn n_for_half(&self) -> u64 {
        match &self.rule {
            Rule::Optimal(o) => o.n_for_half(),
            Rule::Laplace(l) => l.n_for_half(),
        }
    }
}

impl Mechanism for PartitionSelection {
    fn releases(&self) -> Vec<Release> {
        let l0 = self.groups_per_unit as u128;
        let epsilon = match &self.rule {
            Rule::Optimal(o) => o.epsilon_key.mul_ratio_floor(l0, 1),
            // the noisy distinct count has L1 sensitivity L0 over all keys
            Rule::Laplace(l) => match (Additive { noise: l.noise.clone(), sensitivity: Sensitivity { l1: l0, l2_sq: l0 } }).release() {
                Release::Pure { epsilon } => epsilon,
                _ => self.epsilon,
            },
        };
        vec![Release::Approx { epsilon: epsilon.min(self.epsilon), delta: self.delta_key.mul_ratio_floor(l0, 1) }]
    }
}

#[cfg(test)]
mod test;
