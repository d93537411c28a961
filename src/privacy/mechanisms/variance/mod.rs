//! Noisy bounded variances and standard deviations (`VARIANCE`, `VAR_POP`,
//! `STDDEV`, `STDDEV_POP`).
//!
//! Values are clamped, encoded and centred as for [`super::mean`]: e = round(x/g)
//! − m with |e| ≤ h. Per person the bounding releases c (non-null count),
//! s = Σe and q = Σe², exactly centred in i128 *before* any subsampling, then
//! scaled with randomised rounding: c ≤ k, |s| ≤ k·h, 0 ≤ q ≤ k·h² for k rows
//! kept. Three noisy components: N, S, Q with sensitivities rows, rows·h,
//! rows·h². (Centring at group level after scaling — the audit's finding —
//! multiplied the scaling error by 2m; here nothing is centred after scaling.)
//!
//! **Estimate.** var = (Q/N − (S/N)²)·g² (population), times N/(N − 1) for the
//! sample variance, clamped to [0, ((hi − lo)/2)²] (·2 for the sample variance);
//! STDDEV = √var. **Interval.** Each component's interval at confidence
//! 1 − (1 − c)/3 (Bonferroni), and the extremes of the estimator over the box of
//! the three (including its interior critical point in N): conservative.
//!
//! The grid is coarse enough that every sensitivity product fits in u128
//! (h ≤ 2⁴⁰, and h⁴·rows₂² < 2¹²⁶ for the Gaussian); products are checked.

use rand::{CryptoRng, RngCore};

use super::mean::centre;
use super::{Additive, Budget, Cell, Mechanism, MechanismError, Sensitivity, mul};
use crate::privacy::accountant::Release;
use crate::privacy::fixed_point::Grid;

#[derive(Debug, Clone, PartialEq)]
pub struct Variance {
    pub count: Additive,
    pub sum: Additive,
    pub squares: Additive,
    pub grid: Grid,
    pub lo: f64,
    pub hi: f64,
    pub mid: i64,
    pub half: u128,
    pub sample: bool,
    pub stddev: bool,
}

/// The largest half-width (grid units) whose sensitivity products fit u128 and
/// whose squares' noise stays within the samplers' range.
fn max_half(rows: Sensitivity, squares: Budget) -> f64 {
    let l1 = (2f64.powi(120) / rows.l1.max(1) as f64).sqrt();
    let l2 = (2f64.powi(120) / rows.l2_sq.max(1) as f64).powf(0.25);
    l1.min(l2).min(2f64.powi(40)).min(super::unit_cap(squares, rows, 2)).floor()
}

impl Variance {
    pub fn new(lo: f64, hi: f64, integer: bool, rows: Sensitivity, budgets: [Budget; 3], sample: bool, stddev: bool) -> Result<Variance, MechanismError> {
        let scale = budgets[1].value_scale(rows, ((hi - lo) / 2.0).max(1e-300));
        let grid = Grid::choose_capped(lo, hi, scale, integer, max_half(rows, budgets[2])).map_err(|e| MechanismError::Invalid(e.to_string()))?;
        let (_, _, mid, half) = centre(grid, lo, hi);
        let h2 = mul(half, half, "a variance")?;
        let s1 = Sensitivity { l1: mul(rows.l1, half, "a variance")?, l2_sq: mul(rows.l2_sq, h2, "a variance")? };
        let s2 = Sensitivity { l1: mul(rows.l1, h2, "a variance")?, l2_sq: mul(rows.l2_sq, mul(h2, h2, "a variance")?, "a variance")? };
        Ok(Variance {
            count: budgets[0].additive(rows)?,
            sum: budgets[1].additive(s1)?,
            squares: budgets[2].additive(s2)?,
            grid,
            lo,
            hi,
            mid,
            half,
            sample,
            stddev,
        })
    }

    /// Release from `n` non-null values with centred sum `s` and centred sum of squares `q`.
    pub fn release<R: RngCore + CryptoRng>(&self, rng: &mut R, n: i128, s: i128, q: i128, confidence: f64) -> Cell {
        let noisy = [self.count.sample(rng, n), self.sum.sample(rng, s), self.squares.sample(rng, q)];
        self.estimate(noisy, confidence)
    }

    /// The components' half-widths at confidence 1 − (1 − c)/3 each (Bonferroni).
    fn halfwidths(&self, confidence: f64) -> [i128; 3] {
        let split = 1.0 - (1.0 - confidence) / 3.0;
        [self.count.halfwidth(split) as i128, self.sum.halfwidth(split) as i128, self.squares.halfwidth(split) as i128]
    }

    /// The estimate and its interval from the noisy components (N, S, Q).
    fn estimate(&self, [nn, s1, s2]: [i128; 3], confidence: f64) -> Cell {
        let [hn, h1, h2] = self.halfwidths(confidence);
        let gs = self.grid.size();
        let max_var = ((self.hi - self.lo) / 2.0).powi(2) * if self.sample { 2.0 } else { 1.0 };
        let var = |n: f64, x1: f64, x2: f64| -> f64 {
            if n <= 1.0 {
                return max_var;
            }
            let m1 = x1 * gs / n;
            let pop = x2 * gs * gs / n - m1 * m1;
            let v = if self.sample { pop * n / (n - 1.0) } else { pop };
            v.clamp(0.0, max_var)
        };
        let f = |v: f64| if self.stddev { v.sqrt() } else { v };
        let value = f(var(nn as f64, s1 as f64, s2 as f64));
        let ns = [(nn - hn) as f64, (nn + hn) as f64];
        let (lo, hi) = if ns[0] > 1.0 {
            let mut cands = Vec::new();
            let mut s1s = vec![(s1 - h1) as f64, (s1 + h1) as f64];
            if s1s[0] <= 0.0 && s1s[1] >= 0.0 {
                s1s.push(0.0);
            }
            for &n in &ns {
                for &x1 in &s1s {
                    for x2 in [(s2 - h2) as f64, (s2 + h2) as f64] {
                        cands.push(f(var(n, x1, x2)));
                        if x2 > 0.0 {
                            // interior critical point in n: n = 2·x1²/x2
                            let nc = 2.0 * x1 * x1 / x2;
                            if nc > ns[0] && nc < ns[1] {
                                cands.push(f(var(nc, x1, x2)));
                            }
                        }
                    }
                }
            }
            (cands.iter().cloned().fold(f64::INFINITY, f64::min), cands.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
        } else {
            (0.0, f(max_var))
        };
        let z = crate::privacy::special::normal_isf((1.0 - confidence) / 2.0);
        Cell { value, lo: lo.min(value), hi: hi.max(value), sd: (hi - lo) / (2.0 * z) }
    }

    /// The interval a release would show if every noisy component came out at
    /// its true value, for `n` values with mean `mean` and population variance
    /// `var` (value units): what `dpq explain` predicts. The noise moves the
    /// centre, not the width, so the released width is close to this one.
    pub fn predict(&self, n: f64, mean: f64, var: f64, confidence: f64) -> (f64, f64) {
        let gs = self.grid.size();
        let (_, _, mid, _) = centre(self.grid, self.lo, self.hi);
        let d = (mean - mid as f64 * gs) / gs;
        let s = n * d;
        let q = n * (d * d + var / (gs * gs));
        let c = self.estimate([n.round() as i128, s.round() as i128, q.round() as i128], confidence);
        (c.lo, c.hi)
    }
}

impl Mechanism for Variance {
    fn releases(&self) -> Vec<Release> {
        vec![self.count.release(), self.sum.release(), self.squares.release()]
    }
}

#[cfg(test)]
mod test;
