//! `--auto-bounds`: contribution limits chosen by a DP release.
//!
//! Three exponential-mechanism quantiles (one value per person, so utility
//! sensitivity 1) of the per-person row count, group count and largest
//! per-group row count, on a log₂ grid (bin k stands for the limit 2^(k+1) − 1),
//! at level [`LEVEL`], each with ε/3, with the decreasing base measure
//! μ(k) = e^(−k) (McSherry & Talwar 2007, Thm 6: the exponential mechanism is
//! ε-DP for any base measure fixed before the data is seen; see
//! `privacy::quantile::em_quantile_with_prior`). The group count is not released
//! for a global aggregate (one group): two picks then.
//!
//! **Cost**: the number of picks times ε/3 (rounded down), derived here.
//! **L0 cap**: with declared key domains nobody can touch more groups than the
//! domains hold; L0 candidates stop there (public, no ε).

use rand::{CryptoRng, RngCore};

use super::Mechanism;
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;
use crate::privacy::bounding::{UnitShape, log2_bin, log2_bin_upper};
use crate::privacy::quantile::{QuantileError, em_quantile_with_prior};

/// Percentile of per-person contributions the limits aim to keep whole.
pub const LEVEL: f64 = 0.9;

/// Base measure of the quantiles: bin k weighs exp(−k) (numerator/denominator of the rate).
pub const PRIOR: (u64, u64) = (1, 1);

#[derive(Debug, Clone, PartialEq)]
pub struct AutoBounds {
    /// ε of each quantile.
    pub epsilon_each: Amount,
    /// `None` for a global aggregate, else the most groups a person can touch
    /// as far as public knowledge goes (`u64::MAX` when a key has no domain).
    pub groups: Option<u64>,
}

/// Limits chosen by [`AutoBounds::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_rows_per_unit: u64,
    pub max_groups_per_unit: u64,
    pub max_rows_per_group: u64,
}

impl AutoBounds {
    pub fn new(epsilon: Amount, groups: Option<u64>) -> AutoBounds {
        AutoBounds { epsilon_each: epsilon.mul_ratio_floor(1, 3), groups }
    }

    fn picks(&self) -> u128 {
        if self.groups.is_some() { 3 } else { 2 }
    }

    /// Pick the limits from the per-person shapes (the DP release).
    pub fn choose<R: RngCore + CryptoRng>(&self, shapes: &[UnitShape], rng: &mut R) -> Result<Limits, QuantileError> {
        let mut pick = |f: &dyn Fn(&UnitShape) -> u64, cap: u64| -> Result<u64, QuantileError> {
            let mut hist = vec![0u64; log2_bin(cap) + 1];
            for s in shapes {
                hist[log2_bin(f(s).min(cap))] += 1;
            }
            let bin = em_quantile_with_prior(rng, &hist, LEVEL, self.epsilon_each, 1, PRIOR)?;
            Ok(log2_bin_upper(bin).clamp(1, cap))
        };
        let c = pick(&|s| s.rows, u64::MAX)?;
        let l0 = match self.groups {
            Some(cap) => pick(&|s| s.groups, cap.max(1))?,
            None => 1,
        };
        let linf = pick(&|s| s.max_rows_in_group, u64::MAX)?;
        Ok(Limits { max_rows_per_unit: c, max_groups_per_unit: l0, max_rows_per_group: linf })
    }
}

impl Mechanism for AutoBounds {
    fn releases(&self) -> Vec<Release> {
        vec![Release::Pure { epsilon: self.epsilon_each.mul_ratio_floor(self.picks(), 1) }]
    }
}

#[cfg(test)]
mod test;
