//! Noisy top-k ("most-used emoji").
//!
//! dpq releases top-k by noisy count: every candidate key's count is released
//! through the Laplace/Gaussian histogram mechanism (each key from a public
//! domain, or a key that survived partition selection) and the k largest noisy
//! counts are reported. Choosing the top k is post-processing of the ε-DP
//! histogram, so the whole top-k costs exactly the histogram's ε — there is no
//! per-k charge and no hidden re-use. (Releasing only the k names via report-noisy-
//! max with one-sided noise costs the same ε and is no more accurate for counts.)
//!
//! For planning, [`correct_probability_lower_bound`] bounds the probability that
//! the released top-k set is exactly the true one when the true k-th and (k+1)-th
//! counts differ by at least `gap`: by the union bound over the k·(N−k) pairs,
//! P(error) ≤ k(N−k)·P(Z′ − Z ≥ gap) for independent noise Z, Z′.

use super::noise::Noise;

/// Indices of the k largest values (ties by lower index), largest first.
pub fn top_k<T: PartialOrd + Copy>(values: &[T], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// P(Z′ − Z ≥ g) for independent copies of `noise` (g ≥ 1).
pub fn difference_tail(noise: &Noise, g: u128) -> f64 {
    match noise {
        Noise::Laplace { .. } => {
            let b = noise.scale();
            let alpha = (-1.0 / b).exp();
            let norm = (1.0 - alpha) / (1.0 + alpha);
            // P(Z' ≥ t) for integer t
            let upper = |t: i128| -> f64 { if t >= 1 { alpha.powf(t as f64) / (1.0 + alpha) } else { 1.0 - alpha.powf((1 - t) as f64) / (1.0 + alpha) } };
            let w = (b * 60.0) as i128 + 60;
            (-w..=w).map(|z| norm * alpha.powf(z.unsigned_abs() as f64) * upper(g as i128 + z)).sum()
        }
        Noise::Gaussian { .. } => {
            let s = noise.stddev();
            super::special::normal_sf((g as f64 - 0.5) / (s * std::f64::consts::SQRT_2))
        }
    }
}

/// Lower bound on P(released top-k set = true top-k set).
pub fn correct_probability_lower_bound(noise: &Noise, gap: u128, k: usize, candidates: usize) -> f64 {
    if k == 0 || k >= candidates {
        return 1.0;
    }
    let pairs = (k * (candidates - k)) as f64;
    (1.0 - pairs * difference_tail(noise, gap.max(1))).max(0.0)
}

#[cfg(test)]
mod test;
