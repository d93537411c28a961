//! Noisy bounded sums (`SUM(x)`).
//!
//! Values are clamped to the public bounds [lo, hi] and encoded on a
//! power-of-two grid g (`privacy::fixed_point`), so a row adds at most
//! r = max(|round(lo/g)|, |round(hi/g)|) grid units. After bounding, one person
//! adds at most (rows they may add) × r: L1 sensitivity Δ₁ = rows₁·r, squared
//! L2 sensitivity Δ₂² = rows₂²·r², where rows₁/rows₂² are the count's
//! sensitivities ([`super::count`]). Every product is checked: bounds too wide
//! for the limits are refused, never wrapped.
//!
//! Noise, cost and interval as for counts, in grid units, decoded exactly
//! (n·2^k). A sum of values that are all ≥ 0 is ≥ 0 (and ≤ 0 for values ≤ 0):
//! the value and interval are intersected with that support (post-processing).

use rand::{CryptoRng, RngCore};

use super::{Additive, Budget, Cell, Mechanism, MechanismError, Sensitivity, mul};
use crate::privacy::accountant::Release;
use crate::privacy::fixed_point::Grid;

#[derive(Debug, Clone, PartialEq)]
pub struct Sum {
    pub noise: Additive,
    pub grid: Grid,
    pub lo: f64,
    pub hi: f64,
    /// Per-row sensitivity in grid units.
    pub per_row: u128,
}

impl Sum {
    /// Calibrate a sum of values in [lo, hi] where one person adds rows with the
    /// count sensitivities `rows`.
    pub fn new(lo: f64, hi: f64, integer: bool, rows: Sensitivity, budget: Budget) -> Result<Sum, MechanismError> {
        let m = lo.abs().max(hi.abs());
        let grid = Grid::choose_capped(lo, hi, budget.value_scale(rows, m), integer, super::unit_cap(budget, rows, 1))
            .map_err(|e| MechanismError::Invalid(e.to_string()))?;
        let per_row = grid.row_sensitivity(lo, hi);
        let s = Sensitivity { l1: mul(rows.l1, per_row, "a sum")?, l2_sq: mul(rows.l2_sq, mul(per_row, per_row, "a sum")?, "a sum")? };
        Ok(Sum { noise: budget.additive(s)?, grid, lo, hi, per_row })
    }

    /// Release an exact bounded sum (grid units).
    pub fn release<R: RngCore + CryptoRng>(&self, rng: &mut R, exact: i128, confidence: f64) -> Cell {
        let v = self.noise.sample(rng, exact);
        let hw = self.noise.halfwidth(confidence) as i128;
        let g = self.grid;
        let sd = self.noise.stddev() * g.size();
        if self.lo >= 0.0 {
            return super::count::clip_at_zero(v, hw as u128, self.noise.stddev(), g.size());
        }
        if self.hi <= 0.0 {
            let c = super::count::clip_at_zero(-v, hw as u128, self.noise.stddev(), g.size());
            return Cell { value: -c.value, lo: -c.hi, hi: -c.lo, sd };
        }
        Cell { value: g.decode(v), lo: g.decode(v.saturating_sub(hw)), hi: g.decode(v.saturating_add(hw)), sd }
    }

    /// Does one person's contribution of `sum` over `rows` rows lie in the range
    /// the noise was calibrated for?
    pub fn admits(&self, rows: u64, sum: i128) -> bool {
        sum.unsigned_abs() <= (rows as u128).saturating_mul(self.per_row)
    }

    pub fn halfwidth(&self, confidence: f64) -> f64 {
        self.noise.halfwidth(confidence) as f64 * self.grid.size()
    }
}

impl Mechanism for Sum {
    fn releases(&self) -> Vec<Release> {
        vec![self.noise.release()]
    }
}

#[cfg(test)]
mod test;
