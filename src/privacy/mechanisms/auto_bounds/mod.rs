//! Contribution limits chosen by a DP release (the default), and a DP estimate
//! of how much they cut.
//!
//! **What is minimised.** Bounding one person to C rows biases a count down by
//! Σ_p (n_p − C)₊ (their rows beyond C); the noise that covers C rows grows
//! like C. The expected total error bias(C) + κ·C, where κ is the expected
//! absolute noise per unit of the limit summed over the released groups, is
//! minimised where its slope vanishes: −#{p : n_p > C} + κ = 0, i.e. where
//! about κ people contribute more than C (Amin, Kulesza, Muñoz Medina &
//! Vassilvitskii 2019, "Bounding user contributions: a bias-variance
//! trade-off in differential privacy", ICML). The caller derives κ from the
//! query's mechanisms ([`AutoBounds::target`]); here the limit is released by
//! the exponential mechanism with utility −|#{people above the limit} − κ|
//! (sensitivity 1) on a log₂ grid of limits (bin k stands for 2^(k+1) − 1),
//! with the decreasing base measure μ(k) = e^(−2k) so that the many empty bins
//! above the data do not win by number (McSherry & Talwar 2007, Thm 6: ε-DP
//! for any base measure fixed before the data is seen).
//!
//! The pick's rank error is about 2·ln(bins/β)/ε people; at the small ε the
//! choice gets it lands anywhere between the target and a few hundred people
//! above it. Because cutting heavy contributors costs far more than a larger
//! noise scale in the heavy-tailed data of event logs, the limit of a single
//! total (no GROUP BY) is one log₂ bin above the pick ([`HEADROOM_BINS`]):
//! twice a noise that is small next to the total, against a bias that can be
//! a tenth of it (measured: docs/accuracy.md). With several groups the pick is
//! used as it is: each group's noise then weighs as much as its bias.
//!
//! Which limits are chosen depends on the bounding family the query uses:
//! L1 (rows per person, for Laplace histograms) needs one pick; L0/Linf
//! (groups per person and rows per person and group: Gaussian noise, or keys
//! released by partition selection) needs two, the group count at the 90th
//! percentile capped by the declared domains (public, no ε); counting people
//! needs only the group count.
//!
//! **Disclosure.** Two more noisy counts (sensitivity 1 each): the people in the
//! query and those whose contribution the chosen limits cut. Their ratio — the
//! share of people cut, a DP estimate — is shown with every answer: no peer
//! tells its users how much its bounding removed.
//!
//! **Cost**: the picks' ε plus the two counts' ε, all derived here.

use rand::{CryptoRng, RngCore};

use super::Mechanism;
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;
use crate::privacy::bounding::{UnitShape, log2_bin, log2_bin_upper};
use crate::privacy::noise::Noise;
use crate::privacy::quantile::{QuantileError, em_quantile_with_prior, em_threshold};

/// Percentile of per-person group counts the group limit aims to keep whole.
pub const LEVEL: f64 = 0.9;

/// Base measure of the picks: bin k weighs exp(−2k) (numerator/denominator of the rate):
/// bins above the data, which all tie, then hold ≈ 16 % of the mass, not 58 %.
pub const PRIOR: (u64, u64) = (2, 1);

/// Log₂ bins added above a row-limit pick for a single total (see the module
/// documentation); with several groups each group's noise counts as much as
/// its bias, and the pick is used as it is.
pub const HEADROOM_BINS: usize = 1;

/// The share of the auto-bounds ε spent on the disclosure counts (both).
pub const DISCLOSURE_SHARE: (u128, u128) = (1, 5);

/// Which limits a query's bounding family needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choose {
    /// L1: rows per person.
    RowsPerUnit,
    /// L0/Linf: groups per person and rows per person and group.
    GroupsAndRows,
    /// Only groups per person (counting people).
    Groups,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoBounds {
    /// The ε charged for it all (the picks and counts below spend at most this).
    pub epsilon: Amount,
    /// ε of each pick.
    pub epsilon_each: Amount,
    /// ε of each of the two disclosure counts.
    pub epsilon_disclose: Amount,
    pub choose: Choose,
    /// `None` for a global aggregate, else the most groups a person can touch
    /// as far as public knowledge goes (`u64::MAX` when a key has no domain).
    pub groups: Option<u64>,
    /// About how many people a row limit should leave above it (κ, rounded);
    /// `0`: the median person's size instead (queries of means, see [`MEAN_RULE`]).
    pub target: u64,
}

/// For queries whose aggregates are all means, variances or quantiles the row
/// limit is the median person's row count (an exponential-mechanism quantile,
/// no headroom). A mean is a ratio: cutting rows biases it only as far as heavy
/// contributors' values differ from everyone's, and below the median the noise
/// on the mean hardly depends on the limit (it scales as limit ÷ rows kept), so
/// the median person's count keeps most people whole at the noise of a small
/// limit. (The first-order rule of counts would need the difference between
/// heavy and light contributors' values, which is private.)
pub const MEAN_RULE: f64 = 0.5;

/// Limits chosen by [`AutoBounds::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_rows_per_unit: u64,
    pub max_groups_per_unit: u64,
    pub max_rows_per_group: u64,
}

/// The DP estimate of how much bounding cut.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Disclosure {
    /// Noisy number of people in the query.
    pub people: f64,
    /// Noisy number of people whose rows the limits cut.
    pub people_cut: f64,
    /// `people_cut / people`, in [0, 1].
    pub share_cut: f64,
    /// Standard deviation of each noisy count.
    pub count_stddev: f64,
}

impl AutoBounds {
    /// Limits for `choose` with `epsilon` in total; `target` is κ (see the module).
    pub fn new(epsilon: Amount, choose: Choose, groups: Option<u64>, target: u64) -> AutoBounds {
        let disclose = epsilon.mul_ratio_floor(DISCLOSURE_SHARE.0, DISCLOSURE_SHARE.1);
        let picks = match (choose, groups) {
            (Choose::GroupsAndRows, Some(_)) => 2,
            _ => 1,
        };
        AutoBounds {
            epsilon,
            epsilon_each: (epsilon - disclose).mul_ratio_floor(1, picks),
            epsilon_disclose: disclose.mul_ratio_floor(1, 2),
            choose,
            groups,
            target,
        }
    }

    fn picks(&self) -> u128 {
        match (self.choose, self.groups) {
            (Choose::GroupsAndRows, Some(_)) => 2,
            _ => 1,
        }
    }

    /// Pick the limits from the joint histogram of per-person sizes
    /// (([`log2_bin`] of rows, of groups, of the largest group), people), the
    /// DP release. Limits not chosen keep `fixed`'s.
    pub fn choose<R: RngCore + CryptoRng>(&self, shapes: &[((usize, usize, usize), u64)], fixed: Limits, rng: &mut R) -> Result<Limits, QuantileError> {
        // a marginal, with bins above `cap`'s folded into its bin (min(x, cap) for every x)
        let marginal = |dim: usize, cap: u64| {
            let top = log2_bin(cap);
            let mut h = vec![0u64; top + 1];
            for &((r, g, m), n) in shapes {
                let b = [r, g, m][dim].min(top);
                h[b] = h[b].saturating_add(n);
            }
            h
        };
        let rows_limit = |dim: usize, rng: &mut R| -> Result<u64, QuantileError> {
            let hist = marginal(dim, u64::MAX);
            if self.target == 0 {
                let bin = em_quantile_with_prior(rng, &hist, MEAN_RULE, self.epsilon_each, 1, PRIOR)?;
                return Ok(log2_bin_upper(bin).max(1));
            }
            let bin = em_threshold(rng, &hist, self.target, self.epsilon_each, PRIOR)?;
            let headroom = if self.groups.is_none() { HEADROOM_BINS } else { 0 };
            Ok(log2_bin_upper((bin + headroom).min(40)).max(1))
        };
        let group_limit = |rng: &mut R| -> Result<u64, QuantileError> {
            match self.groups {
                None => Ok(1),
                Some(cap) => {
                    let bin = em_quantile_with_prior(rng, &marginal(1, cap.max(1)), LEVEL, self.epsilon_each, 1, PRIOR)?;
                    Ok(log2_bin_upper(bin).clamp(1, cap.max(1)))
                }
            }
        };
        let mut l = fixed;
        let global = self.groups.is_none();
        match self.choose {
            Choose::RowsPerUnit => l.max_rows_per_unit = rows_limit(0, rng)?,
            Choose::GroupsAndRows => {
                l.max_groups_per_unit = group_limit(rng)?;
                // one group: the rows per group are the rows per person
                l.max_rows_per_group = rows_limit(if global { 0 } else { 2 }, rng)?;
            }
            Choose::Groups => l.max_groups_per_unit = group_limit(rng)?,
        }
        Ok(l)
    }

    /// The disclosure: the people in the query and those the limits cut
    /// (exact counts from the bounded pass), each with Laplace noise of
    /// sensitivity 1 at [`AutoBounds::epsilon_disclose`].
    pub fn disclose<R: RngCore + CryptoRng>(&self, people: u64, cut: u64, rng: &mut R) -> Result<Disclosure, QuantileError> {
        let noise = Noise::laplace(1, self.epsilon_disclose).map_err(|_| QuantileError::ZeroEpsilon)?;
        let people = (people.min(i64::MAX as u64) as i128 + noise.sample(rng)).max(0) as f64;
        let people_cut = (cut.min(i64::MAX as u64) as i128 + noise.sample(rng)).max(0) as f64;
        let share_cut = if people > 0.0 { (people_cut / people).clamp(0.0, 1.0) } else { 0.0 };
        Ok(Disclosure { people, people_cut, share_cut, count_stddev: noise.stddev() })
    }
}

/// The joint histogram of per-person sizes (for tests and the engine).
pub fn shape_histogram(shapes: &[UnitShape]) -> Vec<((usize, usize, usize), u64)> {
    let mut m: std::collections::BTreeMap<(usize, usize, usize), u64> = std::collections::BTreeMap::new();
    for s in shapes {
        *m.entry((log2_bin(s.rows), log2_bin(s.groups), log2_bin(s.max_rows_in_group))).or_default() += 1;
    }
    m.into_iter().collect()
}

impl Mechanism for AutoBounds {
    /// The ε it was given: the picks and the two counts spend at most that
    /// (their shares are rounded down), so the charge states a round amount.
    fn releases(&self) -> Vec<Release> {
        let spent = self.epsilon_each.mul_ratio_floor(self.picks(), 1) + self.epsilon_disclose.mul_ratio_floor(2, 1);
        debug_assert!(spent <= self.epsilon);
        vec![Release::Pure { epsilon: self.epsilon }]
    }
}

#[cfg(test)]
mod test;
