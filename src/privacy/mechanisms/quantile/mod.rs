//! DP quantiles (`MEDIAN`, `APPROX_PERCENTILE_CONT`, `PERCENTILE_CONT`).
//!
//! Values are binned on a public grid over [lo, hi] (one bin per integer for
//! small integer ranges, else ≤ 1024 bins). Per group, the exponential
//! mechanism picks a bin with utility −|rank − q·n| (McSherry & Talwar 2007;
//! Smith 2011), sampled exactly; one person holds at most m values in a group
//! (after bounding), so the utility's sensitivity is m. Its interval comes from
//! two more exponential-mechanism quantiles at q ∓ r/n̂ and a noisy count n̂
//! (`privacy::quantile::quantile_with_ci`), with ε split 50 % value, 20 % + 20 %
//! interval ends, 10 % count.
//!
//! **Cost.** Each group's quantile costs the sum of its four parts' ε (each
//! rounded down from the group's share). Under L0/Linf a person touches at most
//! L0 groups, so the query's quantile costs L0 × that sum. Under L1 a person's
//! at most C values are spread over groups and each group's utility (and count)
//! moves by that group's share of them while every group is calibrated to
//! sensitivity C, so one group's ε covers them all (the changes sum to ≤ C):
//! `groups_per_unit` is 1. Derived from the parts actually used, never more
//! than the share.

use rand::{CryptoRng, RngCore};

use super::{Cell, Mechanism};
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;
use crate::privacy::quantile::{Domain, QuantileError, SPLIT, quantile_with_ci};

#[derive(Debug, Clone, PartialEq)]
pub struct Quantile {
    pub domain: Domain,
    pub level: f64,
    /// ε of each group's release.
    pub epsilon_group: Amount,
    /// Values one person holds in a group (the utility's sensitivity).
    pub values_per_unit: u64,
    /// Groups one person touches.
    pub groups_per_unit: u64,
}

impl Quantile {
    /// A quantile at `level` spending `epsilon` over all groups a person touches.
    pub fn new(domain: Domain, level: f64, epsilon: Amount, values_per_unit: u64, groups_per_unit: u64) -> Quantile {
        let epsilon_group = epsilon.mul_ratio_floor(1, groups_per_unit.max(1) as u128);
        Quantile { domain, level, epsilon_group, values_per_unit, groups_per_unit: groups_per_unit.max(1) }
    }

    /// The ε a group's release uses: the sum of its parts.
    pub fn group_cost(&self) -> Amount {
        SPLIT.iter().map(|&(p, d)| self.epsilon_group.mul_ratio_floor(p, d)).sum()
    }

    /// Release the quantile of a group's bounded histogram.
    pub fn release<R: RngCore + CryptoRng>(&self, rng: &mut R, hist: &[u64], confidence: f64) -> Result<Cell, QuantileError> {
        let r = quantile_with_ci(rng, hist, &self.domain, self.level, self.epsilon_group, self.values_per_unit, confidence)?;
        Ok(Cell { value: r.value, lo: r.ci_low, hi: r.ci_high, sd: r.stddev })
    }
}

impl Mechanism for Quantile {
    fn releases(&self) -> Vec<Release> {
        let per_group = self.group_cost();
        vec![Release::Pure { epsilon: per_group.mul_ratio_floor(self.groups_per_unit as u128, 1) }]
    }
}

#[cfg(test)]
mod test;
