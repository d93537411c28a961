//! Noisy bounded means (`AVG(x)`).
//!
//! Each value is clamped to [lo, hi], encoded on a grid g and **centred** at the
//! midpoint m of the encoded bounds: e = round(x/g) − m, |e| ≤ h. Per person the
//! bounding releases an exact (or randomised-rounded, unbiased) non-null count c
//! and centred sum s = Σe with c ≤ rows kept and |s| ≤ c·h ≤ rows kept·h, so the
//! count has the count's sensitivity and the centred sum that times h. Two
//! noisy components, each with its own share: N = n + Z_n, S = s + Z_s.
//!
//! **Estimate.** AVG = (m + S/N)·g, clamped to [lo, hi] (post-processing).
//!
//! **Interval (Fieller's method, exact test inversion).** For a candidate mean
//! offset θ (grid units), T(θ) = S − θ·N = (s − θn) + Z_s − θ·Z_n; when θ = s/n
//! is the true offset, T(θ) is distributed as W_θ = Z_s − θ·Z_n, whose law is
//! known exactly (a sum of two independent discrete Laplace or Gaussian
//! variables). The interval is {θ : |T(θ)| ≤ q_θ}, q_θ the `confidence` quantile
//! of |W_θ|, so it covers the bounded mean with probability ≥ `confidence` for
//! every n and s (Fieller 1954; the noise law replaces the normal). It is
//! computed by scanning and bisection over θ ∈ [lo, hi] in grid units; when N is
//! not clearly positive it is the whole [lo, hi]. The law of W_θ: for Laplace
//! noise, the difference of two independent Laplace variables with scales b₁
//! (matched to each discrete Laplace's variance) has tail
//! P(W > t) = (b₁²e^{−t/b₁} − b₂²e^{−t/b₂}) / (2(b₁² − b₂²)); for Gaussian noise W
//! is normal. Measured coverage: `test.rs` (bounded expectation under
//! subsampling, 2000 releases).

use rand::{CryptoRng, RngCore};

use super::{Additive, Budget, Cell, Mechanism, MechanismError, Sensitivity, mul};
use crate::privacy::accountant::Release;
use crate::privacy::fixed_point::Grid;
use crate::privacy::noise::Noise;

#[derive(Debug, Clone, PartialEq)]
pub struct Mean {
    pub count: Additive,
    pub sum: Additive,
    pub grid: Grid,
    pub lo: f64,
    pub hi: f64,
    /// Encoded bounds and their midpoint (grid units).
    pub a: i64,
    pub b: i64,
    pub mid: i64,
    /// max |e| of a centred value (grid units).
    pub half: u128,
}

/// Encoded bounds (a, b), midpoint and half-width of a centred value.
pub fn centre(grid: Grid, lo: f64, hi: f64) -> (i64, i64, i64, u128) {
    let (a, b) = grid.encode_bounds(lo, hi);
    // in i128: a and b may sit at the ends of i64 (saturated encodings)
    let mid = ((a as i128 + b as i128) / 2) as i64;
    let half = (a as i128 - mid as i128).unsigned_abs().max((b as i128 - mid as i128).unsigned_abs());
    (a, b, mid, half)
}

impl Mean {
    pub fn new(lo: f64, hi: f64, integer: bool, rows: Sensitivity, count: Budget, sum: Budget) -> Result<Mean, MechanismError> {
        let grid = Grid::choose_capped(lo, hi, sum.value_scale(rows, ((hi - lo) / 2.0).max(1e-300)), integer, super::unit_cap(sum, rows, 1))
            .map_err(|e| MechanismError::Invalid(e.to_string()))?;
        let (a, b, mid, half) = centre(grid, lo, hi);
        let s = Sensitivity { l1: mul(rows.l1, half, "a mean")?, l2_sq: mul(rows.l2_sq, mul(half, half, "a mean")?, "a mean")? };
        Ok(Mean { count: count.additive(rows)?, sum: sum.additive(s)?, grid, lo, hi, a, b, mid, half })
    }

    /// Release the mean of `n` non-null values whose centred sum is `s` (grid units).
    pub fn release<R: RngCore + CryptoRng>(&self, rng: &mut R, n: i128, s: i128, confidence: f64) -> Cell {
        let nn = self.count.sample(rng, n);
        let ss = self.sum.sample(rng, s);
        self.estimate(nn, ss, confidence)
    }

    /// The estimate and interval from noisy N and S (post-processing only).
    pub fn estimate(&self, nn: i128, ss: i128, confidence: f64) -> Cell {
        let g = self.grid.size();
        let (tlo, thi) = ((self.a - self.mid) as f64, (self.b - self.mid) as f64);
        let to_value = |theta: f64| ((self.mid as f64 + theta) * g).clamp(self.lo, self.hi);
        if nn <= 0 {
            return Cell { value: to_value(0.0), lo: self.lo, hi: self.hi, sd: (self.hi - self.lo) / 2.0 };
        }
        let (n, s) = (nn as f64, ss as f64);
        let theta_hat = (s / n).clamp(tlo, thi);
        let accept = |theta: f64| (s - theta * n).abs() <= quantile(&self.sum.noise, &self.count.noise, theta, confidence);
        let lo_t = edge(theta_hat, tlo, &accept);
        let hi_t = edge(theta_hat, thi, &accept);
        let value = to_value(theta_hat);
        // delta-method standard deviation (reported, not used for the interval)
        let (sd_s, sd_n) = (self.sum.stddev(), self.count.stddev());
        let sd = (((sd_s / n).powi(2) + (s / (n * n) * sd_n).powi(2)).sqrt() * g).min((self.hi - self.lo) / 2.0);
        Cell { value, lo: to_value(lo_t).min(value), hi: to_value(hi_t).max(value), sd }
    }
}

/// The outermost accepted θ between `from` (accepted) and `to`: a scan of 64
/// points finds the last accepted one, bisection refines the boundary after it.
fn edge(from: f64, to: f64, accept: &dyn Fn(f64) -> bool) -> f64 {
    if accept(to) {
        return to;
    }
    const STEPS: usize = 64;
    let at = |i: usize| from + (to - from) * i as f64 / STEPS as f64;
    let last = (1..STEPS).filter(|&i| accept(at(i))).max().unwrap_or(0);
    let (mut a, mut b) = (at(last), at(last + 1));
    for _ in 0..60 {
        let m = 0.5 * (a + b);
        if accept(m) { a = m } else { b = m }
    }
    a
}

/// The `confidence` quantile of |Z_s − θ·Z_n|.
fn quantile(zs: &Noise, zn: &Noise, theta: f64, confidence: f64) -> f64 {
    let miss = 1.0 - confidence;
    match (zs, zn) {
        (Noise::Gaussian { .. }, _) | (_, Noise::Gaussian { .. }) => {
            let sd = (zs.variance() + theta * theta * zn.variance()).sqrt();
            crate::privacy::special::normal_isf(miss / 2.0) * sd
        }
        _ => {
            // continuous Laplace scales with the discrete laws' variances
            let b1 = (zs.variance() / 2.0).sqrt();
            let b2 = theta.abs() * (zn.variance() / 2.0).sqrt();
            let tail = |t: f64| 2.0 * laplace_sum_tail(b1, b2, t);
            let mut hi = (b1 + b2).max(1e-12);
            while tail(hi) > miss {
                hi *= 2.0;
            }
            let mut lo = 0.0;
            for _ in 0..80 {
                let m = 0.5 * (lo + hi);
                if tail(m) > miss { lo = m } else { hi = m }
            }
            // the discrete noise takes integer values: round the quantile up
            hi.ceil()
        }
    }
}

/// P(X₁ + X₂ > t), t ≥ 0, for independent Laplace(b₁), Laplace(b₂).
pub fn laplace_sum_tail(b1: f64, b2: f64, t: f64) -> f64 {
    let (b1, b2) = (b1.max(b2), b1.min(b2));
    if b2 <= b1 * 1e-9 {
        return 0.5 * (-t / b1).exp();
    }
    if (b1 - b2) <= b1 * 1e-6 {
        let b = 0.5 * (b1 + b2);
        return (-t / b).exp() * (2.0 + t / b) / 4.0;
    }
    (b1 * b1 * (-t / b1).exp() - b2 * b2 * (-t / b2).exp()) / (2.0 * (b1 * b1 - b2 * b2))
}

impl Mechanism for Mean {
    fn releases(&self) -> Vec<Release> {
        vec![self.count.release(), self.sum.release()]
    }
}

#[cfg(test)]
mod test;
