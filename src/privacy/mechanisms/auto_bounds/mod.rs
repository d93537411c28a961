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
//! the sparse vector technique (AboveThreshold, Dwork & Roth 2014, Alg. 1):
//! scanning a log₂ grid of limits upward (bin k stands for 2^(k+1) − 1), the
//! first whose noisy count of people above it is at most κ — the lowest limit
//! where the slope has vanished. Each count has sensitivity 1 and the scan is
//! ε-DP however many bins it reads. (Until 2026-11-30 an exponential mechanism
//! over the same bins picked it, with a base measure e^(−2k) to break the tie
//! of the empty bins above the data; on small inputs that measure overruled
//! the data and chose C = 1. The scan stops at the lowest of those bins and
//! needs no measure.) The median rule of means and the group limit's 90th
//! percentile are scans too, for "at most half" and "at most a tenth" of the
//! noisy people count above.
//!
//! **Too little data.** Below [`MIN_RESOLUTIONS`] × the scan's resolution
//! (≈ 26.8/ε people) no limit can be told from another: the engine keeps the
//! data owner's fixed limits instead, and says so.
//!
//! The pick's error is about 4·ln(bins/β)/ε people (the scan also stops two
//! noise scales, 8/ε people, early on purpose; see [`svt_threshold`]). Because cutting heavy
//! contributors costs far more than a larger noise scale in the heavy-tailed
//! data of event logs, the limit of a single total (no GROUP BY) is one log₂
//! bin above the pick ([`HEADROOM_BINS`]): twice a noise that is small next to
//! the total, against a bias that can be a tenth of it (measured:
//! docs/accuracy.md). With several groups the pick is used as it is: each
//! group's noise then weighs as much as its bias.
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
use crate::privacy::quantile::{QuantileError, svt_threshold};

/// Percentile of per-person group counts the group limit aims to keep whole.
pub const LEVEL: f64 = 0.9;

/// Log₂ bins added above a row-limit pick for a single total (see the module
/// documentation); with several groups each group's noise counts as much as
/// its bias, and the pick is used as it is.
pub const HEADROOM_BINS: usize = 1;

/// The people a query must hold, in units of the picks' resolution
/// ([`AutoBounds::resolution`]), for a pick to be trusted over the data
/// owner's fixed limits. Below it the scan's noise is larger than the people
/// it counts and the pick is arbitrary (seen with the exponential mechanism
/// it replaced: C = 1 row per person for 150 people at ε = 0.01, a year's
/// messages counted as 149): the fixed limits of dpq.toml are used instead. The test
/// reads the noisy people count, a DP release; the decision is
/// post-processing.
pub const MIN_RESOLUTIONS: f64 = 1.0;

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

impl Limits {
    /// The limits a family applied, as auto-bounds states them (L1's C is
    /// also its group and per-group limit; L0/Linf's rows per person is the
    /// most a person can add, groups × rows per group).
    pub fn of_family(f: crate::privacy::bounding::Family) -> Limits {
        match f {
            crate::privacy::bounding::Family::L1 { max_rows_per_unit } => {
                Limits { max_rows_per_unit, max_groups_per_unit: max_rows_per_unit, max_rows_per_group: max_rows_per_unit }
            }
            crate::privacy::bounding::Family::L0Linf { max_groups_per_unit, max_rows_per_group } => {
                Limits { max_rows_per_unit: max_groups_per_unit.saturating_mul(max_rows_per_group), max_groups_per_unit, max_rows_per_group }
            }
        }
    }
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
    /// DP release; `people` is [`AutoBounds::noisy_people`] (already released),
    /// which turns the median and 90th-percentile rules into counts of people
    /// above. Limits not chosen keep `fixed`'s.
    pub fn choose<R: RngCore + CryptoRng>(
        &self,
        shapes: &[((usize, usize, usize), u64)],
        fixed: Limits,
        people: f64,
        rng: &mut R,
    ) -> Result<Limits, QuantileError> {
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
        // the first bin (from below) with at most `above` people above it, by
        // the sparse vector technique; none qualifying: the top bin
        let first_with = |dim: usize, cap: u64, above: u64, rng: &mut R| -> Result<usize, QuantileError> {
            let hist = marginal(dim, cap);
            Ok(svt_threshold(rng, &hist, above, self.epsilon_each)?.unwrap_or(hist.len() - 1))
        };
        let share_above = |level: f64| (people.max(0.0) * (1.0 - level)).round() as u64;
        let rows_limit = |dim: usize, rng: &mut R| -> Result<u64, QuantileError> {
            if self.target == 0 {
                let bin = first_with(dim, u64::MAX, share_above(MEAN_RULE), rng)?;
                return Ok(log2_bin_upper(bin).max(1));
            }
            let bin = first_with(dim, u64::MAX, self.target, rng)?;
            let headroom = if self.groups.is_none() { HEADROOM_BINS } else { 0 };
            Ok(log2_bin_upper((bin + headroom).min(40)).max(1))
        };
        let group_limit = |rng: &mut R| -> Result<u64, QuantileError> {
            match self.groups {
                None => Ok(1),
                Some(cap) => {
                    let bin = first_with(1, cap.max(1), share_above(LEVEL), rng)?;
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

    /// The people in the query, from the histogram of their sizes, with
    /// Laplace noise of sensitivity 1 at [`AutoBounds::epsilon_disclose`]: the
    /// first of the two disclosure counts, released before the picks so that
    /// [`AutoBounds::informative`] can read it.
    pub fn noisy_people<R: RngCore + CryptoRng>(&self, shapes: &[((usize, usize, usize), u64)], rng: &mut R) -> Result<f64, QuantileError> {
        let noise = Noise::laplace(1, self.epsilon_disclose).map_err(|_| QuantileError::ZeroEpsilon)?;
        let people: u64 = shapes.iter().fold(0u64, |a, &(_, n)| a.saturating_add(n));
        Ok((people.min(i64::MAX as u64) as i128 + noise.sample(rng)).max(0) as f64)
    }

    /// The picks' resolution in people: the scan's query noise (scale 4/ε)
    /// bounded over the 41 log₂ bins of a limit ([`log2_bin`] caps at 40) at
    /// β = 5 %, 4·(ln 41 + ln 20)/ε ≈ 26.8/ε.
    pub fn resolution(&self) -> f64 {
        4.0 * (41f64.ln() + 20f64.ln()) / self.epsilon_each.to_f64().max(f64::MIN_POSITIVE)
    }

    /// Whether a query of about `people` (noisy) is large enough for the
    /// picks to mean something ([`MIN_RESOLUTIONS`]).
    pub fn informative(&self, people: f64) -> bool {
        people >= MIN_RESOLUTIONS * self.resolution()
    }

    /// The disclosure: the people in the query (`people`, from
    /// [`AutoBounds::noisy_people`]) and those the limits cut (exact, from the
    /// bounded pass, with Laplace noise of sensitivity 1 at
    /// [`AutoBounds::epsilon_disclose`]).
    pub fn disclose<R: RngCore + CryptoRng>(&self, people: f64, cut: u64, rng: &mut R) -> Result<Disclosure, QuantileError> {
        let noise = Noise::laplace(1, self.epsilon_disclose).map_err(|_| QuantileError::ZeroEpsilon)?;
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
