//! Calibration: from an analysed query and its parameters to the bounding
//! family, the ε/δ split and one mechanism of `privacy::mechanisms` per
//! aggregate. Decided from parameters only, never from data (`--auto-bounds`
//! re-calibrates after its own DP release). What the ledger charges is derived
//! from the mechanisms built here ([`Calibration::releases`]) — there is no
//! second computation of the cost.

use serde::Serialize;

use super::analyze::{AggKind, DpQuery};
use super::error::{EngineError, Result, refused};
use crate::config::{MechanismKind, PartitionSelectionKind};
use crate::privacy::accountant::{self, Release};
use crate::privacy::amount::Amount;
use crate::privacy::bounding::{Family, ValueLimit};

use crate::privacy::fixed_point::Grid;
use crate::privacy::mechanisms::auto_bounds::{AutoBounds, Choose, Limits};
use crate::privacy::mechanisms::count::Count;
use crate::privacy::mechanisms::mean::Mean;
use crate::privacy::mechanisms::partition::PartitionSelection;
use crate::privacy::mechanisms::quantile::Quantile;
use crate::privacy::mechanisms::sum::Sum;
use crate::privacy::mechanisms::variance::Variance;
use crate::privacy::mechanisms::{Additive, Budget, Mechanism, MechanismError, Sensitivity, pool};
use crate::privacy::quantile::Domain as QDomain;

/// `share` of `epsilon`, in exact decimals when the share is a short decimal
/// (dpq.toml's `auto_bounds_share = 0.1` takes exactly 0.005 of ε = 0.05, not
/// 0.005000000000000001), else rounded down.
pub fn share_of(epsilon: Amount, share: f64) -> Amount {
    match share.to_string().parse::<Amount>() {
        Ok(s) => {
            let (p, q) = s.as_ratio();
            epsilon.mul_ratio_floor(p, q)
        }
        Err(_) => Amount::from_f64_floor(epsilon.to_f64() * share),
    }
}

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

/// The mechanism of one aggregate.
#[derive(Debug, Clone)]
pub enum AggMechanism {
    Count(Count),
    Sum(Sum),
    Mean(Mean),
    Variance(Variance),
    Quantile(Quantile),
}

/// One noisy component of an aggregate, for explain.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub what: &'static str,
    pub sensitivity: u128,
    pub noise: String,
    pub cost: String,
    pub stddev: f64,
}

impl AggMechanism {
    fn components(&self) -> Vec<(&'static str, &Additive)> {
        match self {
            AggMechanism::Count(c) => vec![("count", &c.noise)],
            AggMechanism::Sum(s) => vec![("sum", &s.noise)],
            AggMechanism::Mean(m) => vec![("count", &m.count), ("centred sum", &m.sum)],
            AggMechanism::Variance(v) => vec![("count", &v.count), ("centred sum", &v.sum), ("centred sum of squares", &v.squares)],
            AggMechanism::Quantile(_) => vec![],
        }
    }

    /// The noisy components, described (sensitivity, noise, derived cost).
    pub fn describe(&self) -> Vec<Component> {
        self.components()
            .into_iter()
            .map(|(what, a)| Component {
                what,
                sensitivity: if matches!(a.noise, crate::privacy::noise::Noise::Gaussian { .. }) { a.sensitivity.l2_sq } else { a.sensitivity.l1 },
                noise: a.noise.describe(),
                cost: match a.release() {
                    Release::Pure { epsilon } => format!("ε={epsilon}"),
                    Release::Zcdp { rho, .. } => format!("ρ={rho}"),
                    Release::Approx { epsilon, delta } => format!("ε={epsilon}, δ={delta}"),
                },
                stddev: a.stddev(),
            })
            .collect()
    }

    /// The fixed-point grid of the aggregate's values.
    pub fn grid(&self) -> Grid {
        match self {
            AggMechanism::Sum(s) => s.grid,
            AggMechanism::Mean(m) => m.grid,
            AggMechanism::Variance(v) => v.grid,
            _ => Grid::UNIT,
        }
    }

    /// The midpoint values are centred at (grid units), for AVG/VARIANCE.
    pub fn centre(&self) -> Option<i64> {
        match self {
            AggMechanism::Mean(m) => Some(m.mid),
            AggMechanism::Variance(v) => Some(v.mid),
            _ => None,
        }
    }

    /// The per-row range of the value column the noise was calibrated for.
    pub fn value_limit(&self) -> ValueLimit {
        match self {
            AggMechanism::Sum(s) => ValueLimit { abs: s.per_row, sq: None },
            AggMechanism::Mean(m) => ValueLimit { abs: m.half, sq: None },
            AggMechanism::Variance(v) => ValueLimit { abs: v.half, sq: Some(v.half * v.half) },
            _ => ValueLimit::default(),
        }
    }

    pub fn quantile(&self) -> Option<&Quantile> {
        match self {
            AggMechanism::Quantile(q) => Some(q),
            _ => None,
        }
    }

    fn releases(&self) -> Vec<Release> {
        match self {
            AggMechanism::Count(m) => m.releases(),
            AggMechanism::Sum(m) => m.releases(),
            AggMechanism::Mean(m) => m.releases(),
            AggMechanism::Variance(m) => m.releases(),
            AggMechanism::Quantile(m) => m.releases(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AggPlan {
    pub name: String,
    pub kind: String,
    pub akind: AggKind,
    /// The ε share this aggregate may spend.
    pub epsilon: Amount,
    pub bounds: Option<(f64, f64)>,
    pub mechanism: AggMechanism,
    /// The budgets its components were calibrated with (upper bounds of their cost).
    budgets: Vec<Budget>,
}

/// The calibrated plan of a DP query.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub family: Family,
    pub alternative: Family,
    pub why_family: String,
    /// The ε and δ the query asked for (the charge never exceeds them).
    pub requested_epsilon: Amount,
    pub requested_delta: Amount,
    pub auto_bounds: Option<AutoBounds>,
    pub selection: Option<PartitionSelection>,
    pub aggs: Vec<AggPlan>,
    pub mechanism: MechanismKind,
    pub confidence: f64,
    /// δ used to state pooled Gaussian (zCDP) releases as (ε, δ).
    pub noise_delta: Amount,
    /// The parameters this was calibrated from.
    pub params: QueryParams,
}

impl Calibration {
    /// What the ledger charges: every mechanism's releases, derived from its
    /// noise (Gaussian parts pooled into one zCDP release). Under
    /// `--auto-bounds` the aggregates' noise is calibrated after the bounds are
    /// chosen, so the charge is their budgets — each an upper bound of the cost
    /// of any noise calibrated within it; [`Calibration::covered_by`] checks the
    /// noise actually used against it.
    pub fn releases(&self) -> Vec<Release> {
        let mut out = Vec::new();
        if let Some(a) = &self.auto_bounds {
            out.extend(a.releases());
        }
        if let Some(s) = &self.selection {
            if self.auto_bounds.is_some() {
                // its budget: the selector rebuilt on the chosen group limit costs at most that
                out.push(Release::Approx { epsilon: s.epsilon, delta: s.delta });
            } else {
                out.extend(s.releases());
            }
        }
        for a in &self.aggs {
            if self.auto_bounds.is_some() {
                out.extend(a.budgets.iter().map(|b| match *b {
                    Budget::Laplace(epsilon) => Release::Pure { epsilon },
                    Budget::Gaussian(rho) => Release::Zcdp { rho, epsilon: Amount::ZERO, delta: Amount::ZERO },
                }));
            } else {
                out.extend(a.mechanism.releases());
            }
        }
        pool(out, self.noise_delta)
    }

    /// The derived releases of the noise actually calibrated (no budget stand-ins).
    pub fn derived_releases(&self) -> Vec<Release> {
        let mut out = Vec::new();
        if let Some(a) = &self.auto_bounds {
            out.extend(a.releases());
        }
        if let Some(s) = &self.selection {
            out.extend(s.releases());
        }
        for a in &self.aggs {
            out.extend(a.mechanism.releases());
        }
        pool(out, self.noise_delta)
    }

    /// (ε, δ) under basic composition of [`Calibration::releases`].
    pub fn charge(&self) -> (Amount, Amount) {
        accountant::basic(&self.releases())
    }

    /// Does `charged` (the releases paid for) cover this calibration's noise?
    pub fn covered_by(&self, charged: &[Release]) -> bool {
        let (e, d) = accountant::basic(&self.derived_releases());
        let (ce, cd) = accountant::basic(charged);
        let rho = |r: &[Release]| r.iter().map(|x| if let Release::Zcdp { rho, .. } = x { *rho } else { Amount::ZERO }).sum::<Amount>();
        e <= ce && d <= cd && rho(&self.derived_releases()) <= rho(charged)
    }

    /// Recalibrate with the limits an `--auto-bounds` release chose. The new
    /// noise is calibrated within the same budgets, so what was charged covers
    /// it (checked; a calibration that cannot be built on the chosen limits
    /// keeps the configured ones).
    pub fn with_limits(&self, q: &DpQuery, limits: Limits) -> Result<(Calibration, Option<String>)> {
        let ab = self.auto_bounds.clone();
        let auto_eps = ab.as_ref().map(|a| a.releases()).map(|r| accountant::basic(&r).0).unwrap_or_default();
        let p = QueryParams {
            max_rows_per_unit: Some(limits.max_rows_per_unit),
            max_groups_per_unit: Some(limits.max_groups_per_unit),
            max_rows_per_group: Some(limits.max_rows_per_group),
            auto_bounds: false,
            epsilon: self.params.epsilon - share_of(self.params.epsilon, self.params.auto_bounds_share),
            ..self.params.clone()
        };
        let _ = auto_eps;
        let (family, alt, why) = match ab.as_ref().map(|a| a.choose) {
            Some(choose) => auto_family(choose, limits),
            None => choose_family(q, &p, limits.max_rows_per_unit, limits.max_groups_per_unit, limits.max_rows_per_group),
        };
        match calibrate(q, &p, family, alt, why) {
            Ok(mut recal) => {
                recal.auto_bounds = ab;
                recal.requested_epsilon = self.requested_epsilon;
                recal.params = self.params.clone();
                if !recal.covered_by(&self.releases()) {
                    return Err(super::error::internal("the noise calibrated on the chosen bounds is not covered by the charge"));
                }
                Ok((recal, None))
            }
            Err(e) => {
                let mut kept = self.clone();
                // the configured calibration's noise is already built; charge covers it
                if !kept.covered_by(&self.releases()) {
                    return Err(super::error::internal("the configured calibration is not covered by the charge"));
                }
                kept.auto_bounds = self.auto_bounds.clone();
                Ok((kept, Some(format!("the bounds --auto-bounds chose could not be calibrated ({e}); the configured bounds were used"))))
            }
        }
    }
}

/// The (C, L0, Linf) in force before any auto-bounds estimate.
pub fn configured_bounds(q: &DpQuery, p: &QueryParams) -> (u64, u64, u64) {
    let structural_one = q.per_person;
    let c = p.max_rows_per_unit.unwrap_or(if structural_one { 1 } else { p.default_rows_per_unit });
    let l0 = p.max_groups_per_unit.unwrap_or(if structural_one || q.unit_level_keys() || q.keys.is_empty() { 1 } else { p.default_groups_per_unit });
    let linf = p.max_rows_per_group.unwrap_or(if structural_one { 1 } else { p.default_rows_per_group });
    (c, l0, linf)
}

/// Which limits auto-bounds chooses for `q`: rows per person (L1) for Laplace
/// histograms, groups and rows per group (L0/Linf) for Gaussian noise and for
/// keys released by partition selection (whose threshold grows with the groups
/// per person), only groups for queries that count people.
pub fn auto_choice(q: &DpQuery, p: &QueryParams) -> Choose {
    let only_units = !q.aggs.is_empty() && q.aggs.iter().all(|a| a.kind == AggKind::CountUnits);
    if only_units {
        Choose::Groups
    } else if p.mechanism == MechanismKind::Gaussian || q.needs_partition_selection() {
        Choose::GroupsAndRows
    } else {
        Choose::RowsPerUnit
    }
}

/// The family of an auto-bounds choice, with the limits it picked.
pub fn auto_family(choose: Choose, l: Limits) -> (Family, Family, String) {
    let l1 = Family::L1 { max_rows_per_unit: l.max_rows_per_unit };
    let l0 = Family::L0Linf { max_groups_per_unit: l.max_groups_per_unit, max_rows_per_group: l.max_rows_per_group };
    match choose {
        Choose::RowsPerUnit => (l1, l0, "L1 bounding: rows per person, chosen to minimise bias plus noise for a Laplace histogram".into()),
        Choose::GroupsAndRows => (l0, l1, "L0/Linf bounding: groups per person and rows per group, chosen for Gaussian noise or partition selection".into()),
        Choose::Groups => (l0, l1, "L0/Linf bounding: groups per person, for counting people".into()),
    }
}

/// Does `q` need limits chosen at all? Not when its structure already bounds
/// every person to one row (per-person summaries, one-row-per-person tables)
/// or one group.
pub fn needs_auto_bounds(q: &DpQuery, choose: Choose) -> bool {
    if q.per_person {
        return false;
    }
    !(choose == Choose::Groups && (q.keys.is_empty() || q.unit_level_keys()))
}

/// κ of the auto-bounds target: the expected absolute noise added per unit of
/// the row limit, summed over the released groups and averaged over the
/// aggregates, in rows of bias it is worth (see `privacy::mechanisms::auto_bounds`).
///
/// Per aggregate: E|noise| per unit of sensitivity (Laplace 1/ε; Gaussian
/// σ·√(2/π) with σ = 1/√(2ρ)) times a weight — 1 for counts; 2 for sums (a
/// row's largest value against its typical one); 10 for AVG and VARIANCE in a
/// query that also counts or sums. A query of only means, variances and
/// quantiles returns 0: the median rule (`MEAN_RULE`).
/// Groups: the declared domains' size, 1 without keys, 10 per key without a
/// domain (a documented guess: such keys are released by partition selection).
pub fn auto_target(q: &DpQuery, aggs: &[AggPlan]) -> u64 {
    let m: f64 = if q.keys.is_empty() {
        1.0
    } else {
        q.keys.iter().map(|k| k.domain.as_ref().map(|d| d.values.len().max(1) as f64).unwrap_or(10.0)).product::<f64>().min(1e6)
    };
    let per_unit = |a: &AggPlan| -> Option<f64> {
        let w = match a.akind {
            AggKind::CountRows | AggKind::CountValues | AggKind::CountUnits => 1.0,
            AggKind::Sum => 2.0,
            AggKind::Avg | AggKind::Variance { .. } => 10.0,
            AggKind::Quantile { .. } => return None,
        };
        let b = a.budgets.first()?;
        let e_abs = match *b {
            Budget::Laplace(eps) => 1.0 / eps.to_f64().max(1e-300),
            Budget::Gaussian(rho) => (1.0 / (2.0 * rho.to_f64().max(1e-300))).sqrt() * (2.0 / std::f64::consts::PI).sqrt(),
        };
        Some(w * e_abs)
    };
    if aggs.iter().all(|a| matches!(a.akind, AggKind::Avg | AggKind::Variance { .. } | AggKind::Quantile { .. })) {
        return 0; // the median rule of means (privacy::mechanisms::auto_bounds::MEAN_RULE)
    }
    let ks: Vec<f64> = aggs.iter().filter_map(per_unit).collect();
    let k = if ks.is_empty() {
        // only quantiles: aim like a count at the first one's ε
        aggs.first().map(|a| 1.0 / a.epsilon.to_f64().max(1e-300)).unwrap_or(1.0)
    } else {
        ks.iter().sum::<f64>() / ks.len() as f64
    };
    (m * k).round().clamp(1.0, 1e12) as u64
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

fn mech_err(e: MechanismError) -> EngineError {
    match e {
        MechanismError::Overflow { .. } | MechanismError::Noise(_) => refused(
            "the bounds of an aggregate",
            e.to_string(),
            "narrow the column's bounds in dpq.toml or clamp(x, lo, hi) in SQL, or lower the contribution limits",
        ),
        MechanismError::Invalid(m) => EngineError::Invalid(m),
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
    let auto_eps = if p.auto_bounds && needs_auto_bounds(q, auto_choice(q, p)) { share_of(p.epsilon, p.auto_bounds_share) } else { Amount::ZERO };
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
    let parts = q.aggs.len() as u128 + needs_sel as u128;
    let share = eps.mul_ratio_floor(1, parts.max(1));
    let groups_per_unit = family.groups_per_unit();
    let (sel_delta, noise_delta) = match (needs_sel, p.mechanism) {
        (true, MechanismKind::Gaussian) => (p.delta.mul_ratio_floor(1, 2), p.delta - p.delta.mul_ratio_floor(1, 2)),
        (true, MechanismKind::Laplace) => (p.delta, Amount::ZERO),
        (false, _) => (Amount::ZERO, p.delta),
    };
    let selection = if needs_sel {
        // a selector that cannot be built on these parameters fails here, before the charge
        Some(PartitionSelection::new(p.partition_selection, share, sel_delta, groups_per_unit).map_err(|e| {
            refused("partition selection for keys without a domain", e.to_string(), "raise --delta, or declare a domain for the GROUP BY column in dpq.toml")
        })?)
    } else {
        None
    };
    // the public cap on groups per person: the declared domains' size
    let auto_groups = if q.keys.is_empty() {
        None
    } else if q.keys.iter().all(|k| k.domain.is_some()) {
        Some(q.keys.iter().map(|k| k.domain.as_ref().unwrap().values.len() as u64).product::<u64>().max(1))
    } else {
        Some(u64::MAX)
    };
    // Gaussian: the noise-based aggregates share one ρ, converted at noise_delta
    let gaussian_eps: Amount = if p.mechanism == MechanismKind::Gaussian {
        q.aggs.iter().filter(|a| !matches!(a.kind, AggKind::Quantile { .. })).map(|_| share).sum()
    } else {
        Amount::ZERO
    };
    let rho_total = (gaussian_eps > Amount::ZERO).then(|| {
        // a hair below, so that the rounded-up conversion of the derived ρ stays within the request
        Amount::from_f64_floor(accountant::rho_for(gaussian_eps.to_f64() * (1.0 - 1e-9), noise_delta.to_f64()))
    });
    let rows = Sensitivity { l1: family.count_l1() as u128, l2_sq: family.count_l2_sq() };
    let mut aggs = Vec::new();
    for a in &q.aggs {
        let n_comp: u128 = match a.kind {
            AggKind::Avg => 2,
            AggKind::Variance { .. } => 3,
            _ => 1,
        };
        let budget = match (p.mechanism, rho_total) {
            (MechanismKind::Gaussian, Some(rho)) => Budget::Gaussian(rho.mul_ratio_floor(share.atto(), gaussian_eps.atto().max(1))),
            _ => Budget::Laplace(share),
        };
        let comp = budget.share(n_comp);
        let (lo, hi) = a.bounds.unwrap_or((0.0, 0.0));
        let (mechanism, budgets) = match a.kind {
            AggKind::CountRows | AggKind::CountValues => (AggMechanism::Count(count(rows, comp).map_err(mech_err)?), vec![comp]),
            AggKind::CountUnits => {
                let g = groups_per_unit as u128;
                (AggMechanism::Count(count(Sensitivity { l1: g, l2_sq: g }, comp).map_err(mech_err)?), vec![comp])
            }
            AggKind::Sum => (AggMechanism::Sum(Sum::new(lo, hi, a.integer, rows, comp).map_err(mech_err)?), vec![comp]),
            AggKind::Avg => (AggMechanism::Mean(Mean::new(lo, hi, a.integer, rows, comp, comp).map_err(mech_err)?), vec![comp; 2]),
            AggKind::Variance { sample, stddev } => {
                (AggMechanism::Variance(Variance::new(lo, hi, a.integer, rows, [comp; 3], sample, stddev).map_err(mech_err)?), vec![comp; 3])
            }
            AggKind::Quantile { q: level } => {
                let dom = QDomain::new(lo, hi, a.integer).map_err(|e| EngineError::Invalid(e.to_string()))?;
                let (values, groups) = match family {
                    // L1: a person's ≤ C values spread over groups; each group's utility moves by its share of them,
                    // so one ε with sensitivity C covers all groups (weighted parallel composition)
                    Family::L1 { max_rows_per_unit } => (max_rows_per_unit, 1),
                    Family::L0Linf { max_groups_per_unit, max_rows_per_group } => (max_rows_per_group, if q.keys.is_empty() { 1 } else { max_groups_per_unit }),
                };
                (AggMechanism::Quantile(Quantile::new(dom, level, share, values, groups)), vec![Budget::Laplace(share)])
            }
        };
        aggs.push(AggPlan { name: a.name.clone(), kind: a.kind.name(), akind: a.kind, epsilon: share, bounds: a.bounds, mechanism, budgets });
    }
    let auto_bounds = (auto_eps > Amount::ZERO).then(|| AutoBounds::new(auto_eps, auto_choice(q, p), auto_groups, auto_target(q, &aggs)));
    let cal = Calibration {
        family,
        alternative,
        why_family: why,
        requested_epsilon: p.epsilon,
        requested_delta: p.delta,
        auto_bounds,
        selection,
        aggs,
        mechanism: p.mechanism,
        confidence: p.confidence,
        noise_delta,
        params: p.clone(),
    };
    // the charge is derived from the mechanisms; it never exceeds the request
    let (ce, cd) = cal.charge();
    if ce > p.epsilon || cd > p.delta {
        return Err(super::error::internal(format!("the derived charge ε={ce}, δ={cd} exceeds the request ε={}, δ={}", p.epsilon, p.delta)));
    }
    Ok(cal)
}

fn count(s: Sensitivity, budget: Budget) -> std::result::Result<Count, MechanismError> {
    Ok(Count { noise: budget.additive(s)? })
}
