//! Admission: the privacy filters a dataset's budget is enforced with.
//!
//! An analyst chooses each query after seeing earlier answers, so the sequence
//! of mechanisms — and its length — is adaptive. A *privacy filter* is a
//! stopping rule that keeps the whole interaction (ε, δ)-DP under such fully
//! adaptive composition. dpq admits a charge only by one of two proven filters,
//! fixed per dataset (`dpq budget set --accountant …`):
//!
//! * **basic** (default) — admit while Σεᵢ ≤ ε and Σδᵢ ≤ δ, exact in 10⁻¹⁸
//!   units. Rogers, Roth, Ullman & Vadhan, *Privacy odometers and filters:
//!   pay-as-you-go composition*, NeurIPS 2016, Theorem 3.6 (basic composition
//!   is a valid filter).
//! * **zcdp** — admit while Σρᵢ ≤ ρ* and Σδᵢ ≤ δ/2, where ρ* is the largest ρ
//!   whose (ε, δ/2) conversion (Canonne, Kamath & Steinke 2020, Prop. 12 /
//!   Cor. 13) is within the budget's ε. A pure ε-DP release counts as ε²/2
//!   (Bun & Steinke 2016, Prop. 1.4), a discrete Gaussian as its ρ, and an
//!   (ε, δ)-DP release (partition selection) as δ-approximate ε²/2-zCDP (Bun &
//!   Steinke 2016, Prop. 1.3 with the approximate relaxation of their §8). The
//!   stopping rule Σρᵢ ≤ ρ* does not depend on the Rényi order, so the Rényi
//!   filter of Feldman & Zrnic (*Individual privacy accounting via a Rényi
//!   filter*, NeurIPS 2021, Theorem 3.1) holds at every order α simultaneously
//!   with budget α·ρ* — that is, the interaction is ρ*-zCDP — and its δ-parts
//!   add up (Whitehouse, Ramdas, Rogers & Wu, *Fully-adaptive composition in
//!   differential privacy*, ICML 2023, for filters over approximate zCDP). The
//!   conversion of ρ* at δ/2 plus the δ/2 of approximate releases gives
//!   (ε, δ).
//!
//! Anything else dpq prints about composition — the RDP figure at fixed orders
//! with δ split across them, the PLD figure — is labelled *for reference*: an
//! optimisation over orders after the fact is not a filter.

use serde::{Deserialize, Serialize};

use super::Release;
use crate::privacy::amount::{Amount, SCALE};

/// The rule that admits charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    #[default]
    Basic,
    Zcdp,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::Basic => "basic composition",
            Rule::Zcdp => "zCDP filter",
        })
    }
}

/// Running totals of everything charged, exact; kept in every ledger entry so
/// that admission and status read one entry (constant cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Σε and Σδ under basic composition.
    pub epsilon: Amount,
    pub delta: Amount,
    /// Σρ (pure releases as ε²/2 rounded up, Gaussian as ρ, approximate as ε²/2).
    pub rho: Amount,
    /// Σδ of approximate releases (partition selection).
    pub approx_delta: Amount,
    /// Number of charges.
    pub charges: u64,
}

/// ε²/2 rounded up, as an amount.
pub fn half_square(eps: Amount) -> Amount {
    use num_bigint::BigUint;
    use num_traits::ToPrimitive;
    let e = BigUint::from(eps.atto());
    let num = &e * &e;
    let den = BigUint::from(SCALE) * 2u32;
    let q = (&num + &den - 1u32) / &den;
    Amount::from_atto(q.to_u128().unwrap_or(u128::MAX))
}

impl Totals {
    /// Add one release (exact, saturating at the largest amount).
    pub fn add(&mut self, r: &Release) {
        let sat = |a: Amount, b: Amount| a.checked_add(b).unwrap_or(Amount::from_atto(u128::MAX));
        let (e, d) = r.basic();
        self.epsilon = sat(self.epsilon, e);
        self.delta = sat(self.delta, d);
        match r {
            Release::Pure { epsilon } => self.rho = sat(self.rho, half_square(*epsilon)),
            Release::Zcdp { rho, .. } => self.rho = sat(self.rho, *rho),
            Release::Approx { epsilon, delta } => {
                self.rho = sat(self.rho, half_square(*epsilon));
                self.approx_delta = sat(self.approx_delta, *delta);
            }
        }
    }

    pub fn with(mut self, releases: &[Release]) -> Totals {
        for r in releases {
            self.add(r);
        }
        self.charges += 1;
        self
    }
}

/// A dataset's budget under its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub epsilon: Amount,
    pub delta: Amount,
    pub rule: Rule,
}

impl Budget {
    /// The zCDP filter's ρ*: the largest ρ whose conversion at δ/2 (rounded up)
    /// is within ε.
    pub fn rho_star(&self) -> Amount {
        let half = self.delta.mul_ratio_floor(1, 2);
        if half.is_zero() {
            return Amount::ZERO;
        }
        let mut r = Amount::from_f64_floor(super::rho_for(self.epsilon.to_f64(), half.to_f64()));
        while !r.is_zero() && super::cks_epsilon_upper(r, half) > self.epsilon {
            r = r.mul_ratio_floor(999_999, 1_000_000);
        }
        r
    }

    /// Does the budget admit `after` (the totals including the new charge)?
    pub fn admits(&self, after: &Totals) -> bool {
        match self.rule {
            Rule::Basic => after.epsilon <= self.epsilon && after.delta <= self.delta,
            Rule::Zcdp => after.rho <= self.rho_star() && after.approx_delta <= self.delta.saturating_sub(self.delta.mul_ratio_floor(1, 2)),
        }
    }

    /// Spent and remaining under the rule, in the rule's own units: ε (basic)
    /// or ρ (zcdp); δ alongside.
    pub fn spent(&self, t: &Totals) -> Governing {
        match self.rule {
            Rule::Basic => Governing {
                rule: self.rule,
                unit: "ε",
                total: self.epsilon,
                spent: t.epsilon,
                remaining: self.epsilon.saturating_sub(t.epsilon),
                delta_spent: t.delta,
                delta_remaining: self.delta.saturating_sub(t.delta),
            },
            Rule::Zcdp => {
                let star = self.rho_star();
                let half = self.delta.saturating_sub(self.delta.mul_ratio_floor(1, 2));
                Governing {
                    rule: self.rule,
                    unit: "ρ",
                    total: star,
                    spent: t.rho,
                    remaining: star.saturating_sub(t.rho),
                    delta_spent: t.approx_delta,
                    delta_remaining: half.saturating_sub(t.approx_delta),
                }
            }
        }
    }

    /// ε already spent, stated under the rule (basic: Σε; zcdp: the
    /// conversion of Σρ at δ/2).
    pub fn epsilon_spent(&self, t: &Totals) -> Amount {
        match self.rule {
            Rule::Basic => t.epsilon,
            Rule::Zcdp => super::cks_epsilon_upper(t.rho, self.delta.mul_ratio_floor(1, 2)).min(t.epsilon),
        }
    }
}

/// The governing figure: what the rule counts, its total, spent and remaining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Governing {
    pub rule: Rule,
    pub unit: &'static str,
    pub total: Amount,
    pub spent: Amount,
    pub remaining: Amount,
    pub delta_spent: Amount,
    pub delta_remaining: Amount,
}

/// The RDP figure for reference: the Rényi curve of everything charged at 32
/// orders fixed in advance, converted at δ split equally across the orders
/// (a union bound, valid for a fixed sequence; *not* an admission rule).
pub const RDP_ORDERS: [f64; 32] = [
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0, 28.0, 32.0, 40.0, 48.0, 64.0, 80.0, 96.0, 128.0, 160.0,
    192.0, 256.0, 384.0, 512.0, 1024.0,
];

pub fn rdp_reference(releases: &[Release], delta: f64) -> Option<f64> {
    if releases.is_empty() || !(delta > 0.0) {
        return None;
    }
    let d = delta / RDP_ORDERS.len() as f64;
    RDP_ORDERS
        .iter()
        .map(|&a| {
            let mut s = 0.0;
            for r in releases {
                s += match r {
                    Release::Pure { epsilon } => super::rr_rdp(epsilon.to_f64(), a),
                    Release::Zcdp { rho, .. } => a * rho.to_f64(),
                    Release::Approx { epsilon, .. } => super::rr_rdp(epsilon.to_f64(), a),
                };
            }
            s + ((a - 1.0) / a).ln() - (d.ln() + a.ln()) / (a - 1.0)
        })
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
        .map(|v| v.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Amount {
        s.parse().unwrap()
    }

    #[test]
    fn basic_admits_exactly_to_the_budget() {
        let b = Budget { epsilon: Amount::ONE, delta: a("1e-6"), rule: Rule::Basic };
        let mut t = Totals::default();
        for _ in 0..10 {
            let next = t.with(&[Release::Pure { epsilon: a("0.1") }]);
            assert!(b.admits(&next));
            t = next;
        }
        assert!(!b.admits(&t.with(&[Release::Pure { epsilon: a("0.000000000000000001") }])));
        assert_eq!(b.spent(&t).remaining, Amount::ZERO);
    }

    #[test]
    fn zcdp_admits_many_small_gaussians_that_basic_would_not() {
        let b = Budget { epsilon: Amount::ONE, delta: a("1e-6"), rule: Rule::Zcdp };
        let star = b.rho_star();
        assert!(crate::privacy::accountant::cks_epsilon_upper(star, a("5e-7")) <= Amount::ONE);
        // 100 Gaussian releases of ρ = star/100: admitted; their basic ε would be 100× larger
        let each = star.mul_ratio_floor(1, 100);
        let mut t = Totals::default();
        for _ in 0..100 {
            t = t.with(&[Release::Zcdp { rho: each, epsilon: a("0.5"), delta: Amount::ZERO }]);
            assert!(b.admits(&t));
        }
        assert!(t.epsilon > Amount::ONE);
        assert!(!b.admits(&t.with(&[Release::Zcdp { rho: each, epsilon: a("0.5"), delta: Amount::ZERO }])));
    }

    #[test]
    fn pure_releases_count_as_half_squares_rounded_up() {
        assert_eq!(half_square(a("0.1")), a("0.005"));
        assert_eq!(half_square(a("1")), a("0.5"));
        assert!(half_square(a("0.333333333333333333")).to_f64() >= 0.333_333_333_333_333_3_f64.powi(2) / 2.0);
    }
}
