//! Privacy accountants: what a sequence of releases costs in total.
//!
//! * **Basic composition** (always): Σεᵢ, Σδᵢ, exact in [`Amount`]s. Budget checks
//!   never spend more than this.
//! * **zCDP** (Bun & Steinke 2016): a pure ε-DP release is (ε²/2)-zCDP, a discrete
//!   Gaussian release is ρ-zCDP; ρ adds up, and ρ-zCDP implies (ε, δ)-DP with
//!   ε = inf_{α>1} αρ + (ln(1/δ) + (α−1)ln(1−1/α) − ln α)/(α−1)
//!   (Canonne, Kamath, Steinke 2020, Proposition 12 / Corollary 13).
//! * **RDP** (Mironov 2017): Rényi curves add up; converted with
//!   ε = RDP(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1) (Balle et al. 2020, Thm 21;
//!   CKS20 Prop. 12). Pure releases use the curve of randomised response, which
//!   dominates every ε-DP mechanism (Kairouz, Oh, Viswanath 2015); the continuous
//!   Laplace curve is available for reference ([`laplace_rdp`]).
//! * **PLD** (privacy loss distributions; Meiser & Mohammadi 2018, Koskela et al.
//!   2020): exact for compositions of randomised-response pairs, which dominate
//!   dpq's discrete Laplace (for sensitivity 1 the discrete Laplace *is* a
//!   randomised-response pair). The continuous Laplace PLD ([`laplace_pld_epsilon`])
//!   is computed with a pessimistic and an optimistic discretisation that bracket
//!   the exact value.
//!
//! Approximate (ε, δ) releases (partition selection) are added by basic composition
//! on top of the tighter accountants. Reported totals take the minimum of the
//! sound bounds; none can exceed basic composition.

pub mod filter;
mod pld;

use serde::{Deserialize, Serialize};

use super::amount::Amount;
pub use pld::{laplace_pld_epsilon, rr_pld_epsilon};

/// One mechanism invocation, as recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Release {
    /// A pure ε-DP release (discrete Laplace, exponential mechanism).
    Pure { epsilon: Amount },
    /// A ρ-zCDP release (discrete Gaussian), charged (ε, δ) under basic composition.
    Zcdp { rho: Amount, epsilon: Amount, delta: Amount },
    /// An (ε, δ)-DP release (partition selection).
    Approx { epsilon: Amount, delta: Amount },
}

impl Release {
    /// Its cost under basic composition.
    pub fn basic(&self) -> (Amount, Amount) {
        match self {
            Release::Pure { epsilon } => (*epsilon, Amount::ZERO),
            Release::Zcdp { epsilon, delta, .. } => (*epsilon, *delta),
            Release::Approx { epsilon, delta } => (*epsilon, *delta),
        }
    }
}

/// Exact basic composition.
pub fn basic<'a>(releases: impl IntoIterator<Item = &'a Release>) -> (Amount, Amount) {
    releases.into_iter().fold((Amount::ZERO, Amount::ZERO), |(e, d), r| {
        let (re, rd) = r.basic();
        (e + re, d + rd)
    })
}

/// Totals by every accountant, for `dpq budget` and budget checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub basic_epsilon: Amount,
    pub basic_delta: Amount,
    /// ε at the dataset's δ via zCDP, if applicable.
    pub zcdp_epsilon: Option<f64>,
    pub rdp_epsilon: Option<f64>,
    pub pld_epsilon: Option<f64>,
    /// min of the sound bounds (≤ basic).
    pub epsilon: f64,
    /// which accountant gave `epsilon`
    pub accountant: &'static str,
}

/// Compose `releases`, stating ε at total δ `delta_total` (the dataset's δ).
pub fn totals(releases: &[Release], delta_total: Amount) -> Totals {
    let (be, bd) = basic(releases);
    let mut approx_e = 0.0;
    let mut approx_d = Amount::ZERO;
    let mut rho = 0.0;
    let mut pure: Vec<f64> = Vec::new();
    let mut has_zcdp = false;
    for r in releases {
        match r {
            Release::Pure { epsilon } => {
                let e = epsilon.to_f64();
                rho += e * e / 2.0;
                pure.push(e);
            }
            Release::Zcdp { rho: r, .. } => {
                rho += r.to_f64();
                has_zcdp = true;
            }
            Release::Approx { epsilon, delta } => {
                approx_e += epsilon.to_f64();
                approx_d = approx_d + *delta;
            }
        }
    }
    let mut zcdp_epsilon = None;
    let mut rdp_epsilon = None;
    let mut pld_epsilon = None;
    if let Some(dconv) = delta_total.checked_sub(approx_d).filter(|d| !d.is_zero()) {
        let dconv = dconv.to_f64();
        if rho > 0.0 {
            zcdp_epsilon = Some(cks_epsilon(rho, dconv) + approx_e);
            let curve = |alpha: f64| -> f64 {
                let mut s = 0.0;
                for r in releases {
                    match r {
                        Release::Pure { epsilon } => s += rr_rdp(epsilon.to_f64(), alpha),
                        Release::Zcdp { rho, .. } => s += alpha * rho.to_f64(),
                        Release::Approx { .. } => {}
                    }
                }
                s
            };
            rdp_epsilon = Some(rdp_to_dp(curve, dconv) + approx_e);
        }
        if !has_zcdp && !pure.is_empty() {
            pld_epsilon = rr_pld_epsilon(&pure, dconv).map(|e| e + approx_e);
        }
    }
    let mut epsilon = be.to_f64();
    let mut accountant = "basic";
    for (v, name) in [(zcdp_epsilon, "zcdp"), (rdp_epsilon, "rdp"), (pld_epsilon, "pld")] {
        if let Some(v) = v
            && v < epsilon
        {
            epsilon = v;
            accountant = name;
        }
    }
    Totals { basic_epsilon: be, basic_delta: bd, zcdp_epsilon, rdp_epsilon, pld_epsilon, epsilon, accountant }
}

/// Minimise a function of α > 1 (unimodal in practice) over a log grid, then refine.
fn minimise_alpha(f: impl Fn(f64) -> f64) -> f64 {
    // α − 1 on a log scale from 1e-4 to 1e6
    let xs: Vec<f64> = (0..=400).map(|i| 10f64.powf(-4.0 + 10.0 * i as f64 / 400.0)).collect();
    let vals: Vec<f64> = xs.iter().map(|x| f(1.0 + x)).collect();
    let (i, _) = vals.iter().enumerate().fold((0, f64::INFINITY), |(bi, bv), (i, &v)| if v < bv { (i, v) } else { (bi, bv) });
    let (mut lo, mut hi) = (xs[i.saturating_sub(1)].ln(), xs[(i + 1).min(xs.len() - 1)].ln());
    let g = |t: f64| f(1.0 + t.exp());
    let phi = 0.618_033_988_749_894_8;
    for _ in 0..200 {
        let a = hi - phi * (hi - lo);
        let b = lo + phi * (hi - lo);
        if g(a) < g(b) { hi = b } else { lo = a }
    }
    g(0.5 * (lo + hi)).min(vals[i])
}

/// ε of ρ-zCDP at δ (CKS20, tight conversion).
pub fn cks_epsilon(rho: f64, delta: f64) -> f64 {
    assert!(rho >= 0.0 && delta > 0.0 && delta < 1.0);
    if rho == 0.0 {
        return 0.0;
    }
    let f = |a: f64| a * rho + ((1.0 / delta).ln() + (a - 1.0) * (1.0 - 1.0 / a).ln() - a.ln()) / (a - 1.0);
    minimise_alpha(f).max(0.0)
}

/// An upper bound on the ε of ρ-zCDP at δ, as an amount rounded up: ρ is
/// rounded up and δ down before the conversion, and the result gets a relative
/// margin far above f64 error. (Any α gives a valid bound; the minimisation
/// only makes it tighter.)
pub fn cks_epsilon_upper(rho: Amount, delta: Amount) -> Amount {
    if rho.is_zero() {
        return Amount::ZERO;
    }
    let r = rho.to_f64() * (1.0 + 1e-15);
    let d = (delta.to_f64() * (1.0 - 1e-15)).max(f64::MIN_POSITIVE);
    if !(d < 1.0) {
        return Amount::ZERO;
    }
    Amount::from_f64_ceil(cks_epsilon(r, d) * (1.0 + 1e-12))
}

/// The largest ρ with [`cks_epsilon`](ρ, δ) ≤ ε (for calibrating a Gaussian query).
pub fn rho_for(epsilon: f64, delta: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, epsilon.max(1e-12));
    while cks_epsilon(hi, delta) < epsilon {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cks_epsilon(mid, delta) <= epsilon { lo = mid } else { hi = mid }
    }
    lo
}

/// Rényi divergence of order α between the randomised-response pair with
/// parameter ε (the worst case for ε-DP).
pub fn rr_rdp(eps: f64, alpha: f64) -> f64 {
    // p = e^ε/(1+e^ε), q = 1−p; D_α = ln(p^α q^{1−α} + q^α p^{1−α})/(α−1)
    let lp = eps - softplus(eps); // ln p
    let lq = -softplus(eps); // ln q
    let a = alpha * lp + (1.0 - alpha) * lq;
    let b = alpha * lq + (1.0 - alpha) * lp;
    let m = a.max(b);
    (m + ((a - m).exp() + (b - m).exp()).ln()) / (alpha - 1.0)
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 { x + (-x).exp() } else { x.exp().ln_1p() }
}

/// RDP of the continuous Laplace mechanism with scale b, sensitivity 1 (Mironov 2017, Prop. 6).
pub fn laplace_rdp(b: f64, alpha: f64) -> f64 {
    let t1 = (alpha / (2.0 * alpha - 1.0)).ln() + (alpha - 1.0) / b;
    let t2 = ((alpha - 1.0) / (2.0 * alpha - 1.0)).ln() - alpha / b;
    let m = t1.max(t2);
    (m + ((t1 - m).exp() + (t2 - m).exp()).ln()) / (alpha - 1.0)
}

/// (ε, δ) from an RDP curve with the improved conversion.
pub fn rdp_to_dp(curve: impl Fn(f64) -> f64, delta: f64) -> f64 {
    let f = |a: f64| curve(a) + ((a - 1.0) / a).ln() - (delta.ln() + a.ln()) / (a - 1.0);
    minimise_alpha(f).max(0.0)
}

#[cfg(test)]
mod test;
