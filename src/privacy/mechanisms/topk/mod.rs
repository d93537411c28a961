//! Noisy top-k ("the most-used emoji of people over 55").
//!
//! dpq releases top-k by noisy count: every candidate key's count goes through
//! the count histogram ([`super::count::Count`]) and the k largest noisy counts
//! are reported (`ORDER BY COUNT(*) DESC LIMIT k`, or a window per group).
//! Choosing them is post-processing of the histogram, so a top-k costs exactly
//! the histogram's releases — no per-k charge. Its accuracy is the probability
//! that the released set is the true top-k when the true k-th and (k+1)-th
//! counts differ by at least `gap`: by the union bound over the k·(N−k) pairs,
//! P(error) ≤ k(N−k)·P(Z′ − Z ≥ gap) (`privacy::topk`).

use super::Mechanism;
use super::count::Count;
use crate::privacy::accountant::Release;

#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub histogram: Count,
    pub k: usize,
    pub candidates: usize,
}

impl TopK {
    /// Lower bound on P(released top-k = true top-k) for a count gap of `gap`.
    pub fn correct_probability(&self, gap: u128) -> f64 {
        crate::privacy::topk::correct_probability_lower_bound(&self.histogram.noise.noise, gap, self.k, self.candidates)
    }
}

impl Mechanism for TopK {
    fn releases(&self) -> Vec<Release> {
        self.histogram.releases()
    }
}

#[cfg(test)]
mod test;
