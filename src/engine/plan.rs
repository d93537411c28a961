//! Calibration: from an analysed query and its parameters to the bounding
//! family, the ε/δ split, each aggregate's grid and noise, and the releases
//! charged to the ledger. Decided from parameters only, never from data
//! (`--auto-bounds` re-calibrates after its own DP estimate).

use serde::Serialize;

use super::analyze::{AggKind, DpQuery};
use super::error::{EngineError, Result, refused};
use crate::config::{MechanismKind, PartitionSelectionKind};
use crate::privacy::accountant::{Release, rho_for};
use crate::privacy::amount::Amount;
use crate::privacy::bounding::Family;
use crate::privacy::fixed_point::Grid;
use crate::privacy::noise::Noise;
use crate::privacy::quantile::Domain as QDomain;

/// Per-query privacy parameters (dpq.toml defaults overridden by flags).
#[derive(Debug, Clone, Serialize)]
pub struct QueryParams {
    pub epsilon: Amount,
    pub delta: Amount,
    /// Explicit overrides; `None` takes the configured default (or the structural
    /// default: 1 for per-person rows and per-person group keys).
    pub max_rows_per_unit: Option<u64>,
    pub max_groups_per_unit: Option<u64>,
    pub max_rows_per_group: Option<u64>,
    pub default_rows_per_unit: u64,
    pub default_groups_per_unit: u64,
    pub default_rows_per_group: u64,
    pub mechanism: MechanismKind,
    pub partition_selection: PartitionSelectionKind,
    pub confidence: f64,
    pub auto_bounds: bool,
    pub auto_bounds_share: f64,
}

/// One noisy component of an aggregate.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub what: &'static str,
    #[serde(skip)]
    pub noise: Option<Noise>,
    pub sensitivity: u128,
    pub epsilon: Amount,
    pub rho: Option<Amount>,
    pub scale: f64,
    pub stddev: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AggPlan {
    pub name: String,
    pub kind: String,
    #[serde(skip)]
    pub akind: AggKind,
    pub epsilon: Amount,
    pub bounds: Option<(f64, f64)>,
    #[serde(skip)]
    pub grid: Grid,
    pub components: Vec<Component>,
    /// Quantiles: the discretised domain, per-group ε and values per person.
    pub quantile: Option<(QDomain, Amount, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub kind: PartitionSelectionKind,
    pub epsilon: Amount,
    pub delta: Amount,
    pub groups_per_unit: u64,
}

/// The calibrated plan of a DP query.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub family: Family,
    pub alternative: Family,
    pub why_family: String,
    pub epsilon: Amount,
    pub delta: Amount,
    pub auto_bounds_epsilon: Amount,
    pub selection: Option<Selection>,
    pub aggs: Vec<AggPlan>,
    pub releases: Vec<Release>,
    pub mechanism: MechanismKind,
    pub confidence: f64,
}

/// The (C, L0, Linf) in force before any auto-bounds estimate.
pub fn configured_bounds(q: &DpQuery, p: &QueryParams) -> (u64, u64, u64) {
    let structural_one = q.per_person;
    let c = p.max_rows_per_unit.unwrap_or(if structural_one { 1 } else { p.default_rows_per_unit });
    let l0 = p.max_groups_per_unit.unwrap_or(if structural_one || q.unit_level_keys() || q.keys.is_empty() { 1 } else { p.default_groups_per_unit });
    let linf = p.max_rows_per_group.unwrap_or(if structural_one { 1 } else { p.default_rows_per_group });
    (c, l0, linf)
}

fn split(a: Amount, parts: u128) -> Amount {
    if parts == 0 { a } else { a.mul_ratio_floor(1, parts) }
}

/// Choose the family with the smaller sensitivity (ties: L0/Linf).
pub fn choose_family(q: &DpQuery, p: &QueryParams, c: u64, l0: u64, linf: u64) -> (Family, Family, String) {
    let l1 = Family::L1 { max_rows_per_unit: c };
    let l0f = Family::L0Linf { max_groups_per_unit: l0, max_rows_per_group: linf };
    let only_units = !q.aggs.is_empty() && q.aggs.iter().all(|a| a.kind == AggKind::CountUnits);
    let cost = |f: &Family| -> u128 {
        if only_units {
            match p.mechanism {
                MechanismKind::Laplace => f.groups_per_unit().min(if matches!(f, Family::L1 { .. }) { c } else { l0 }) as u128,
                MechanismKind::Gaussian => f.groups_per_unit() as u128,
            }
        } else {
            match p.mechanism {
                MechanismKind::Laplace => f.count_l1() as u128,
                MechanismKind::Gaussian => f.count_l2_sq(),
            }
        }
    };
    let (a, b) = (cost(&l1), cost(&l0f));
    let what = if p.mechanism == MechanismKind::Laplace { "L1" } else { "squared L2" };
    if a < b {
        (l1, l0f, format!("L1 bounding: {what} sensitivity {a} < {b} for L0/Linf"))
    } else {
        (l0f, l1, format!("L0/Linf bounding: {what} sensitivity {b} ≤ {a} for L1"))
    }
}

/// Calibrate `q` under `family` with the budget left after auto-bounds.
pub fn calibrate(q: &DpQuery, p: &QueryParams, family: Family, alternative: Family, why: String) -> Result<Calibration> {
    if p.epsilon.is_zero() {
        return Err(EngineError::Invalid("ε must be > 0 (pass --epsilon)".into()));
    }
    if p.mechanism == MechanismKind::Gaussian && p.delta.is_zero() {
        return Err(refused(
            "--mechanism gaussian with δ = 0",
            "the Gaussian mechanism gives (ε, δ)-DP only for δ > 0",
            "pass --delta (e.g. 1e-8) or use --mechanism laplace",
        ));
    }
    let auto_eps = if p.auto_bounds { Amount::from_f64_floor(p.epsilon.to_f64() * p.auto_bounds_share) } else { Amount::ZERO };
    let eps = p.epsilon - auto_eps;
    let needs_sel = q.needs_partition_selection();
    if needs_sel && p.delta.is_zero() {
        let k = q.keys.iter().find(|k| k.domain.is_none()).map(|k| k.display.clone()).unwrap_or_default();
        return Err(refused(
            format!("GROUP BY `{k}`, which has no declared domain, with δ = 0"),
            "releasing keys that only private rows reveal needs δ > 0 (partition selection)",
            "pass --delta (e.g. 1e-8), or declare a domain in dpq.toml: domain = { values = [...] } or { table = \"…\", column = \"…\" }",
        ));
    }
    let n_aggs = q.aggs.len() as u128;
    let parts = n_aggs + needs_sel as u128;
    let share = split(eps, parts.max(1));
    let groups_per_unit = family.groups_per_unit();
    let (sel_delta, noise_delta) = match (needs_sel, p.mechanism) {
        (true, MechanismKind::Gaussian) => (p.delta.mul_ratio_floor(1, 2), p.delta - p.delta.mul_ratio_floor(1, 2)),
        (true, MechanismKind::Laplace) => (p.delta, Amount::ZERO),
        (false, _) => (Amount::ZERO, p.delta),
    };
    let selection = needs_sel.then(|| Selection { kind: p.partition_selection, epsilon: share, delta: sel_delta, groups_per_unit });
    if let Some(s) = &selection {
        // a selector that cannot be built on these parameters fails here, before the charge
        let built = match s.kind {
            PartitionSelectionKind::Optimal => crate::privacy::partition::Optimal::new(s.epsilon, s.delta, s.groups_per_unit).map(|_| ()),
            PartitionSelectionKind::Laplace => crate::privacy::partition::LaplaceThreshold::new(s.epsilon, s.delta, s.groups_per_unit).map(|_| ()),
        };
        built.map_err(|e| {
            refused("partition selection for keys without a domain", e.to_string(), "raise --delta, or declare a domain for the GROUP BY column in dpq.toml")
        })?;
    }
    let mut releases = Vec::new();
    if auto_eps > Amount::ZERO {
        releases.push(Release::Pure { epsilon: auto_eps });
    }
    if let Some(s) = &selection {
        releases.push(Release::Approx { epsilon: s.epsilon, delta: s.delta });
    }
    // Gaussian: pool the ε of all noise-based aggregates into one ρ
    let gaussian_eps: Amount = if p.mechanism == MechanismKind::Gaussian {
        q.aggs.iter().filter(|a| !matches!(a.kind, AggKind::Quantile { .. })).map(|_| share).sum()
    } else {
        Amount::ZERO
    };
    let rho_total = if gaussian_eps > Amount::ZERO {
        let r = rho_for(gaussian_eps.to_f64(), noise_delta.to_f64());
        releases.push(Release::Zcdp { rho: Amount::from_f64_floor(r), epsilon: gaussian_eps, delta: noise_delta });
        Some(Amount::from_f64_floor(r))
    } else {
        None
    };
    let rows_l1 = family.count_l1() as u128;
    let rows_l2sq = family.count_l2_sq();
    let mut aggs = Vec::new();
    for a in &q.aggs {
        let n_comp: u128 = match a.kind {
            AggKind::Avg => 2,
            AggKind::Variance { .. } => 3,
            _ => 1,
        };
        let comp_eps = split(share, n_comp);
        let comp_rho = rho_total.map(|r| {
            // ρ_j = ρ_total · share / gaussian_eps, split over components
            let frac = share.to_f64() / gaussian_eps.to_f64() / n_comp as f64;
            Amount::from_f64_floor(r.to_f64() * frac)
        });
        let mk = |what: &'static str, l1: u128, l2sq: u128| -> Result<Component> {
            let noise = match (p.mechanism, comp_rho) {
                (MechanismKind::Gaussian, Some(rho)) => Noise::gaussian(l2sq, rho),
                _ => Noise::laplace(l1, comp_eps),
            }
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
            Ok(Component {
                what,
                scale: noise.scale(),
                stddev: noise.stddev(),
                noise: Some(noise),
                sensitivity: if p.mechanism == MechanismKind::Gaussian { l2sq } else { l1 },
                epsilon: comp_eps,
                rho: comp_rho,
            })
        };
        let (lo, hi) = a.bounds.unwrap_or((0.0, 0.0));
        let m = lo.abs().max(hi.abs());
        let half = (hi - lo) / 2.0;
        // grid from the value-unit noise scale of the largest component
        let value_scale = |r: f64| rows_l1 as f64 * r / comp_eps.to_f64();
        let mut grid = Grid::UNIT;
        let mut quantile = None;
        let components = match a.kind {
            AggKind::CountRows => vec![mk("count", rows_l1, rows_l2sq)?],
            AggKind::CountValues => vec![mk("count", rows_l1, rows_l2sq)?],
            AggKind::CountUnits => {
                let g = groups_per_unit as u128;
                vec![mk("people", g, g)?]
            }
            AggKind::Sum => {
                grid = Grid::choose(lo, hi, value_scale(m), a.integer).map_err(|e| EngineError::Invalid(e.to_string()))?;
                let r = grid.row_sensitivity(lo, hi);
                vec![mk("sum", rows_l1 * r, rows_l2sq * r * r)?]
            }
            AggKind::Avg => {
                grid = Grid::choose(lo, hi, value_scale(half.max(1e-300)), a.integer).map_err(|e| EngineError::Invalid(e.to_string()))?;
                let rc = centered_sensitivity(grid, lo, hi);
                vec![mk("count", rows_l1, rows_l2sq)?, mk("centred sum", rows_l1 * rc, rows_l2sq * rc * rc)?]
            }
            AggKind::Variance { .. } => {
                grid = Grid::choose_capped(lo, hi, value_scale(half.max(1e-300)), a.integer, (1u64 << 40) as f64)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                let rc = centered_sensitivity(grid, lo, hi);
                vec![
                    mk("count", rows_l1, rows_l2sq)?,
                    mk("centred sum", rows_l1 * rc, rows_l2sq * rc * rc)?,
                    mk("centred sum of squares", rows_l1 * rc * rc, rows_l2sq * rc * rc * rc * rc)?,
                ]
            }
            AggKind::Quantile { .. } => {
                let dom = QDomain::new(lo, hi, a.integer).map_err(|e| EngineError::Invalid(e.to_string()))?;
                let (eps_g, m_vals) = match family {
                    Family::L1 { max_rows_per_unit } => (share, max_rows_per_unit),
                    Family::L0Linf { max_groups_per_unit, max_rows_per_group } => {
                        (if q.keys.is_empty() { share } else { split(share, max_groups_per_unit as u128) }, max_rows_per_group)
                    }
                };
                quantile = Some((dom, eps_g, m_vals));
                vec![]
            }
        };
        match a.kind {
            AggKind::Quantile { .. } => releases.push(Release::Pure { epsilon: share }),
            _ if p.mechanism == MechanismKind::Laplace => {
                for _ in 0..n_comp {
                    releases.push(Release::Pure { epsilon: comp_eps });
                }
            }
            _ => {} // covered by the pooled zCDP release
        }
        aggs.push(AggPlan { name: a.name.clone(), kind: a.kind.name(), akind: a.kind, epsilon: share, bounds: a.bounds, grid, components, quantile });
    }
    Ok(Calibration {
        family,
        alternative,
        why_family: why,
        epsilon: p.epsilon,
        delta: if needs_sel || p.mechanism == MechanismKind::Gaussian { p.delta } else { Amount::ZERO },
        auto_bounds_epsilon: auto_eps,
        selection,
        aggs,
        releases,
        mechanism: p.mechanism,
        confidence: p.confidence,
    })
}

/// Per-row sensitivity of a sum centred on the midpoint, in grid units.
pub fn centered_sensitivity(grid: Grid, lo: f64, hi: f64) -> u128 {
    let (a, b) = grid.encode_bounds(lo, hi);
    let mid = mid_units(grid, lo, hi);
    ((a - mid).unsigned_abs().max((b - mid).unsigned_abs())) as u128
}

pub fn mid_units(grid: Grid, lo: f64, hi: f64) -> i64 {
    let (a, b) = grid.encode_bounds(lo, hi);
    a + (b - a) / 2
}
