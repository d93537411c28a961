//! Fixed-point encoding of real values on a power-of-two grid.
//!
//! A real value v is first rejected if NaN/±inf (callers drop or impute it *before*
//! clamping), clamped to the configured [lo, hi], then encoded as the integer
//! n = round(v / g) with g = 2^k. Sums of encoded values are exact in i128 (a row
//! contributes at most 2⁵² grid units, so 2⁷⁵ rows would be needed to overflow).
//! The per-row sensitivity in grid units is max(|round(lo/g)|, |round(hi/g)|) —
//! an integer, so it is never rounded down. Decoding n·2^k is exact in binary.
//!
//! The grid is chosen from the noise scale: g ≤ b/1024 makes the rounding
//! negligible next to the noise, and g is never so fine that a bound needs more
//! than 52 bits (so the engine can compute the encoding in f64 exactly).

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FixedPointError {
    #[error("value is not finite")]
    NotFinite,
    #[error("bounds [{lo}, {hi}] are not finite or not ordered")]
    BadBounds { lo: f64, hi: f64 },
}

/// A grid 2^exp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    pub exp: i32,
}

/// Largest magnitude (in grid units) a clamped value may encode to.
pub const MAX_UNITS: f64 = 4_503_599_627_370_496.0; // 2^52

impl Grid {
    pub const UNIT: Grid = Grid { exp: 0 };

    pub fn size(self) -> f64 {
        2f64.powi(self.exp)
    }

    /// The grid for values in [lo, hi] whose noise will have scale about
    /// `noise_scale` (in value units, e.g. Δ/ε for Laplace). Integer-valued
    /// columns never get a grid finer than 1 unless the noise is tiny.
    pub fn choose(lo: f64, hi: f64, noise_scale: f64, integer_valued: bool) -> Result<Grid, FixedPointError> {
        Grid::choose_capped(lo, hi, noise_scale, integer_valued, MAX_UNITS)
    }

    /// As [`Grid::choose`], with at most `max_units` grid units per value (squares
    /// of values need a coarser cap so that their sums stay exact in i128).
    pub fn choose_capped(lo: f64, hi: f64, noise_scale: f64, integer_valued: bool, max_units: f64) -> Result<Grid, FixedPointError> {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(FixedPointError::BadBounds { lo, hi });
        }
        let m = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
        // coarsest allowed by precision: m / g ≤ 2^52  →  g ≥ m / 2^52
        let min_exp = (m / max_units).log2().ceil() as i32;
        // per-row rounding adds up over rows, so the grid must also resolve the
        // value range finely (2^-24 of it), not only be small next to the noise
        let noise_exp = if noise_scale.is_finite() && noise_scale > 0.0 { (noise_scale / 1024.0).log2().floor() as i32 } else { 0 };
        let span = if hi > lo { hi - lo } else { m };
        let range_exp = (span / 16_777_216.0).log2().floor() as i32;
        // integers are exact on the unit grid: no rounding at all
        let exp = if integer_valued { min_exp.max(0) } else { noise_exp.min(range_exp).max(min_exp) };
        // normal exponents only: 2^e for e < −1022 is subnormal, and powi of it underflows to 0
        Ok(Grid { exp: exp.clamp(-1022, 1023) })
    }

    /// Clamp then encode. Errors on NaN/inf (drop or impute before).
    pub fn encode(self, v: f64, lo: f64, hi: f64) -> Result<i64, FixedPointError> {
        if !v.is_finite() {
            return Err(FixedPointError::NotFinite);
        }
        let c = v.clamp(lo, hi);
        Ok((c / self.size()).round() as i64)
    }

    /// Encoded bounds [round(lo/g), round(hi/g)].
    pub fn encode_bounds(self, lo: f64, hi: f64) -> (i64, i64) {
        ((lo / self.size()).round() as i64, (hi / self.size()).round() as i64)
    }

    /// Per-row sensitivity in grid units: max |encoded value|.
    pub fn row_sensitivity(self, lo: f64, hi: f64) -> u128 {
        let (a, b) = self.encode_bounds(lo, hi);
        (a.unsigned_abs().max(b.unsigned_abs())) as u128
    }

    pub fn decode(self, n: i128) -> f64 {
        (n as f64) * self.size()
    }
}

#[cfg(test)]
mod test;
