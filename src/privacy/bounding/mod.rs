//! Contribution bounding: how much one unit (person) may influence a query.
//!
//! The engine aggregates each unit's rows per GROUP BY group first (exactly), then
//! hands the unit's *partials* here, one unit at a time. Two families
//! (DESIGN §5); the query uses the one with the smaller sensitivity:
//!
//! * **L1** — the unit keeps at most C = `max_rows_per_unit` rows in total, a
//!   uniform random sample without replacement (a multivariate hypergeometric
//!   draw over its groups). A histogram then has L1 sensitivity C, however many
//!   groups the unit touches.
//! * **L0/Linf** — the unit keeps at most L0 = `max_groups_per_unit` of its
//!   groups, chosen uniformly at random (not "first by key"), and in each at most
//!   Linf = `max_rows_per_group` rows, again a uniform sample. A histogram has L1
//!   sensitivity L0·Linf and L2 sensitivity √L0·Linf.
//!
//! Within a kept group where the unit keeps k of its r rows, each value
//! column's statistics — non-null count c, sum s and sum of squares q of the
//! clamped, fixed-point encoded values (centred at the bounds' midpoint for
//! AVG/VARIANCE, exactly, in i128, by the engine) — are replaced by their
//! expectation under a uniform sample of k rows, c·k/r, s·k/r, q·k/r, each
//! rounded to an integer by **randomised rounding** (down or up with the
//! probabilities that make the expectation exact). So:
//!
//! * every bounded statistic is an *unbiased* estimate of the statistic of a
//!   uniform sample of the unit's rows (E[s′] = s·k/r exactly), and
//! * it lies in the range the noise was calibrated for: c′ ≤ k, |s′| ≤ k·h,
//!   0 ≤ q′ ≤ k·h² whenever |value| ≤ h — randomised rounding of a rational
//!   within an integer bound stays within it. [`bound_unit`] checks every
//!   contribution against the calibrated limits and fails closed.
//!
//! (Scaling raw sums with integer truncation, as dpq did before 2026-11-29,
//! biased SUM/AVG toward zero, and centring after scaling multiplied the
//! truncation error by 2·mid, so VARIANCE exceeded its sensitivity.)
//! Quantile histograms keep a uniform sample of the unit's values. All
//! randomness is exact (uniform integers from the cryptographic RNG). Nothing
//! here looks at other units, and the bounds come from configuration or the
//! query — never from the data — except under `--auto-bounds`, which estimates
//! them with DP quantiles it pays for.

use rand::{CryptoRng, Rng, RngCore};

/// Per value column of one (unit, group): non-null count, sum and sum of squares
/// of the clamped, fixed-point encoded values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueStats {
    pub count: u64,
    pub sum: i128,
    pub sum_sq: i128,
}

/// One unit's exact contribution to one group, before bounding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPartial {
    /// Dense group id.
    pub group: u32,
    pub rows: u64,
    pub values: Vec<ValueStats>,
    /// Quantile histogram of the unit's values in this group: (bin, count), bins ascending.
    pub bins: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Family {
    L1 { max_rows_per_unit: u64 },
    L0Linf { max_groups_per_unit: u64, max_rows_per_group: u64 },
}

impl Family {
    /// The most rows one unit adds to one group.
    pub fn rows_per_group(&self) -> u64 {
        match *self {
            Family::L1 { max_rows_per_unit } => max_rows_per_unit,
            Family::L0Linf { max_rows_per_group, .. } => max_rows_per_group,
        }
    }
    /// The most groups one unit touches.
    pub fn groups_per_unit(&self) -> u64 {
        match *self {
            Family::L1 { max_rows_per_unit } => max_rows_per_unit,
            Family::L0Linf { max_groups_per_unit, .. } => max_groups_per_unit,
        }
    }
    /// L1 sensitivity of a row-count histogram (rows per unit over all groups).
    pub fn count_l1(&self) -> u64 {
        match *self {
            Family::L1 { max_rows_per_unit } => max_rows_per_unit,
            Family::L0Linf { max_groups_per_unit, max_rows_per_group } => max_groups_per_unit.saturating_mul(max_rows_per_group),
        }
    }
    /// Squared L2 sensitivity of a row-count histogram.
    pub fn count_l2_sq(&self) -> u128 {
        match *self {
            // saturating: an overflow can only overstate the sensitivity (the safe side), and
            // the mechanisms' checked products then refuse it before anything is charged
            Family::L1 { max_rows_per_unit } => (max_rows_per_unit as u128).saturating_mul(max_rows_per_unit as u128),
            Family::L0Linf { max_groups_per_unit, max_rows_per_group } => {
                (max_groups_per_unit as u128).saturating_mul((max_rows_per_group as u128).saturating_mul(max_rows_per_group as u128))
            }
        }
    }
    pub fn describe(&self) -> String {
        match *self {
            Family::L1 { max_rows_per_unit } => {
                format!("L1: ≤ {max_rows_per_unit} row{} per person (uniform sample)", if max_rows_per_unit == 1 { "" } else { "s" })
            }
            Family::L0Linf { max_groups_per_unit, max_rows_per_group } => format!(
                "L0/Linf: ≤ {max_groups_per_unit} group{} per person{}, ≤ {max_rows_per_group} row{} per person and group",
                if max_groups_per_unit == 1 { "" } else { "s" },
                if max_groups_per_unit == 1 { "" } else { " (chosen at random)" },
                if max_rows_per_group == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A bounded contribution of one unit to one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    pub group: u32,
    pub rows: u64,
    pub values: Vec<ValueStats>,
    pub bins: Vec<(u32, u64)>,
}

/// `k` distinct indices from [0, n), uniformly (Floyd's algorithm), sorted.
pub fn sample_indices<R: RngCore + CryptoRng>(rng: &mut R, n: u64, k: u64) -> Vec<u64> {
    assert!(k <= n);
    let mut chosen = std::collections::BTreeSet::new();
    for j in (n - k)..n {
        let t = rng.random_range(0..=j);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// Multivariate hypergeometric: how many of `k` draws without replacement fall
/// in each category with the given sizes.
pub fn hypergeometric<R: RngCore + CryptoRng>(rng: &mut R, sizes: &[u64], k: u64) -> Vec<u64> {
    let n: u64 = sizes.iter().sum();
    if k >= n {
        return sizes.to_vec();
    }
    let idx = sample_indices(rng, n, k);
    let mut out = vec![0u64; sizes.len()];
    let mut cat = 0usize;
    let mut upper = sizes.first().copied().unwrap_or(0);
    for i in idx {
        while i >= upper {
            cat += 1;
            upper += sizes[cat];
        }
        out[cat] += 1;
    }
    out
}

/// x·k/r rounded to an integer at random so that its expectation is exact:
/// ⌊x·k/r⌋ + Bernoulli(frac). If |x·k/r| ≤ K for an integer K, so is the result.
pub fn randomised_round<R: RngCore + CryptoRng>(rng: &mut R, x: i128, k: u64, r: u64) -> i128 {
    debug_assert!(r > 0);
    if k == r || x == 0 {
        return x;
    }
    let r128 = r as i128;
    match x.checked_mul(k as i128) {
        Some(p) => {
            let (q, rem) = (p.div_euclid(r128), p.rem_euclid(r128));
            q + (rem > 0 && (rng.random_range(0..r) as i128) < rem) as i128
        }
        None => {
            // |x|·k beyond i128: exact big-integer arithmetic (rare: a heavy person's sum of squares)
            use num_bigint::BigInt;
            use num_integer::Integer;
            use num_traits::ToPrimitive;
            let p = BigInt::from(x) * BigInt::from(k);
            let (q, rem) = p.div_mod_floor(&BigInt::from(r));
            let up = rem.to_u64().is_some_and(|rem| rem > 0 && rng.random_range(0..r) < rem);
            q.to_i128().expect("|x·k/r| ≤ |x|") + up as i128
        }
    }
}

/// A value column's statistics for `kept` of `rows` rows: their expectation
/// under a uniform sample, randomised-rounded.
fn scale_values<R: RngCore + CryptoRng>(rng: &mut R, v: &ValueStats, rows: u64, kept: u64) -> ValueStats {
    if kept >= rows || v.count == 0 {
        return *v;
    }
    ValueStats {
        count: randomised_round(rng, v.count as i128, kept, rows) as u64,
        sum: randomised_round(rng, v.sum, kept, rows),
        sum_sq: randomised_round(rng, v.sum_sq, kept, rows),
    }
}

/// The range a value column's per-row statistics were calibrated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValueLimit {
    /// max |value| per row (grid units): |sum| ≤ rows kept·this
    pub abs: u128,
    /// max value² per row: 0 ≤ sum of squares ≤ rows kept·this (when squares are released)
    pub sq: Option<u128>,
}

/// A contribution outside the calibrated range: a bug in dpq, never released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal: a bounded contribution exceeds its calibrated range ({0}); nothing was released")]
pub struct OutOfRange(pub &'static str);

/// Check one unit's bounded contributions against the family's limits and the
/// value columns' calibrated ranges.
pub fn check(contributions: &[Contribution], family: Family, limits: &[ValueLimit]) -> Result<(), OutOfRange> {
    if contributions.len() as u64 > family.groups_per_unit() {
        return Err(OutOfRange("groups per person"));
    }
    let total: u64 = contributions.iter().map(|c| c.rows).sum();
    if let Family::L1 { max_rows_per_unit } = family
        && total > max_rows_per_unit
    {
        return Err(OutOfRange("rows per person"));
    }
    for c in contributions {
        if c.rows > family.rows_per_group() {
            return Err(OutOfRange("rows per person and group"));
        }
        // the noise is calibrated per row kept: count ≤ rows, |sum| ≤ rows·|v|max, 0 ≤ squares ≤ rows·v²max
        for (v, l) in c.values.iter().zip(limits) {
            let n = c.rows as u128;
            if v.count > c.rows || v.sum.unsigned_abs() > n.saturating_mul(l.abs) {
                return Err(OutOfRange("a bounded sum"));
            }
            if let Some(sq) = l.sq
                && (v.sum_sq < 0 || v.sum_sq.unsigned_abs() > n.saturating_mul(sq))
            {
                return Err(OutOfRange("a bounded sum of squares"));
            }
        }
        let binned: u64 = c.bins.iter().map(|b| b.1).sum();
        if binned > c.rows.max(family.rows_per_group()) {
            return Err(OutOfRange("values in a quantile histogram"));
        }
    }
    Ok(())
}

fn sample_bins<R: RngCore + CryptoRng>(rng: &mut R, bins: &[(u32, u64)], k: u64) -> Vec<(u32, u64)> {
    let sizes: Vec<u64> = bins.iter().map(|b| b.1).collect();
    let total: u64 = sizes.iter().sum();
    if k >= total {
        return bins.to_vec();
    }
    hypergeometric(rng, &sizes, k).into_iter().zip(bins).filter(|(c, _)| *c > 0).map(|(c, b)| (b.0, c)).collect()
}

/// Bound one unit's partials (all of its groups) and return its contributions.
pub fn bound_unit<R: RngCore + CryptoRng>(rng: &mut R, partials: &[GroupPartial], family: Family) -> Vec<Contribution> {
    let keep_group = |rng: &mut R, p: &GroupPartial, kept: u64| -> Contribution {
        let rows = p.rows;
        Contribution {
            group: p.group,
            rows: kept,
            values: p.values.iter().map(|v| scale_values(rng, v, rows, kept)).collect(),
            bins: sample_bins(rng, &p.bins, kept),
        }
    };
    match family {
        Family::L0Linf { max_groups_per_unit, max_rows_per_group } => {
            let n = partials.len() as u64;
            let chosen: Vec<usize> = if n <= max_groups_per_unit {
                (0..partials.len()).collect()
            } else {
                sample_indices(rng, n, max_groups_per_unit).into_iter().map(|i| i as usize).collect()
            };
            chosen.into_iter().map(|i| keep_group(rng, &partials[i], partials[i].rows.min(max_rows_per_group))).collect()
        }
        Family::L1 { max_rows_per_unit } => {
            let sizes: Vec<u64> = partials.iter().map(|p| p.rows).collect();
            let kept = hypergeometric(rng, &sizes, max_rows_per_unit);
            partials.iter().zip(kept).filter(|(_, k)| *k > 0).map(|(p, k)| keep_group(rng, p, k)).collect()
        }
    }
}

/// Per-unit contribution sizes, the input of `--auto-bounds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitShape {
    pub rows: u64,
    pub groups: u64,
    pub max_rows_in_group: u64,
}

pub fn unit_shape(partials: &[GroupPartial]) -> UnitShape {
    UnitShape {
        rows: partials.iter().map(|p| p.rows).sum(),
        groups: partials.len() as u64,
        max_rows_in_group: partials.iter().map(|p| p.rows).max().unwrap_or(0),
    }
}

/// log₂ bin of a positive size (0 for 1, 1 for 2–3, …), capped at 40.
pub fn log2_bin(x: u64) -> usize {
    (63 - x.max(1).leading_zeros() as usize).min(40)
}

/// Upper edge of a log₂ bin: the bound that keeps every size in the bin.
pub fn log2_bin_upper(bin: usize) -> u64 {
    (1u64 << (bin + 1)) - 1
}

#[cfg(test)]
mod test;
