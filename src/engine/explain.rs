//! `dpq explain`: what a query would cost and how accurate it would be — the
//! bounded plan, bounds, sensitivities, noise, ε/δ split and expected error per
//! cell — computed from parameters only, spending nothing and reading no
//! private rows.

use serde::Serialize;

use super::Prepared;
use super::analyze::DpQuery;
use super::bounded;
use super::error::Result;
use super::plan::{AggMechanism, Calibration, QueryParams};
use crate::privacy::bounding::Family;
use crate::privacy::mechanisms::Mechanism;
use crate::privacy::mechanisms::auto_bounds::Limits;

#[derive(Debug, Clone, Serialize)]
pub struct CellAccuracy {
    pub aggregate: String,
    pub kind: String,
    pub epsilon: String,
    pub bounds: Option<(f64, f64)>,
    pub components: Vec<ComponentText>,
    /// Expected stddev of the released value (value units), if data-independent.
    pub stddev: Option<f64>,
    /// Half-width of the confidence interval (value units), if data-independent.
    pub ci_halfwidth: Option<f64>,
    pub note: Option<String>,
    /// Predictions at stated group sizes, for the aggregates whose error
    /// depends on n (AVG, VARIANCE, STDDEV, quantiles).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub at_n: Vec<AtN>,
}

/// What an aggregate's interval is predicted to be in a group of `n` values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AtN {
    pub n: f64,
    /// AVG: the interval's half-width, value units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halfwidth: Option<f64>,
    /// VARIANCE and STDDEV: how far above the true variance the interval
    /// reaches (value² units) when the values' mean is mid-range …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance_reach: Option<f64>,
    /// … and when it lies at an end of the clamp range (the worst case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance_reach_worst: Option<f64>,
    /// STDDEV: the interval's upper end when the true spread is ~0, √reach
    /// (value units), mid-range mean and worst case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev_reach: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev_reach_worst: Option<f64>,
    /// Quantiles: the percentiles of the group's values the interval's ends
    /// aim at (0 and 100: the end is the clamp range's edge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile_low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile_high: Option<f64>,
    /// Quantiles: the released value's rank error (values) at this confidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_rank_error: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentText {
    pub what: String,
    pub sensitivity: String,
    pub noise: String,
    pub epsilon: String,
    pub stddev: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub sql: String,
    pub public: bool,
    pub unit: Option<String>,
    pub tables: Vec<String>,
    pub per_person_rows: bool,
    pub bounding: Option<String>,
    pub alternative: Option<String>,
    pub why: Option<String>,
    pub keys: Vec<(String, String)>,
    pub epsilon: String,
    pub delta: String,
    pub auto_bounds_epsilon: String,
    pub selection: Option<String>,
    pub cells: Vec<CellAccuracy>,
    pub confidence: f64,
    pub bounded_plan: Option<String>,
    pub budget_before: Option<f64>,
    pub budget_after: Option<f64>,
    /// Where the limits the predictions use come from.
    pub limits_source: Option<String>,
    /// Why the query would be refused for lack of budget, if it would be.
    pub refused: Option<String>,
}

/// Explain a prepared query. `recent`: the limits the last answer on the same
/// tables used (from the ledger), for predictions under auto-bounds.
pub fn explain(p: &Prepared, remaining_epsilon: Option<f64>, recent: Option<Family>) -> Result<Explanation> {
    match p {
        Prepared::Public { tables, sql, .. } => Ok(Explanation {
            sql: sql.clone(),
            public: true,
            unit: None,
            tables: tables.iter().cloned().collect(),
            per_person_rows: false,
            bounding: None,
            alternative: None,
            why: None,
            keys: vec![],
            epsilon: "0".into(),
            delta: "0".into(),
            auto_bounds_epsilon: "0".into(),
            selection: None,
            cells: vec![],
            confidence: 0.0,
            bounded_plan: None,
            budget_before: remaining_epsilon,
            budget_after: remaining_epsilon,
            limits_source: None,
            refused: None,
        }),
        Prepared::Dp { query, cal, params, sql, .. } => dp(query, cal, params, sql, remaining_epsilon, recent),
    }
}

/// The limits the last answer on `q`'s tables used with `q`'s bounding family
/// (from the ledger's result entries; public: they are part of the record).
pub fn recent_limits(ledger: &crate::ledger::Ledger, p: &Prepared) -> Option<Family> {
    let Prepared::Dp { query, params, .. } = p else { return None };
    let want_l1 = super::plan::auto_choice(query, params) == crate::privacy::mechanisms::auto_bounds::Choose::RowsPerUnit;
    let tables = serde_json::to_value(&query.tables).ok()?;
    let entries = ledger.recent_results(500).ok()?;
    entries.into_iter().find_map(|params| {
        if params.get("tables") != Some(&tables) {
            return None;
        }
        let f: Family = serde_json::from_value(params.get("family")?.clone()).ok()?;
        (matches!(f, Family::L1 { .. }) == want_l1).then_some(f)
    })
}

/// Four significant digits, plainly.
fn sig(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Sizes of a group the error of a mean is stated at (it scales as 1/n).
pub const MEAN_N: [f64; 3] = [100.0, 1_000.0, 10_000.0];

/// The group sizes JSON's `at_n` predictions are given at (text shows
/// [`MEAN_N`]); close enough that interpolating between them is accurate.
pub const AT_N: [f64; 13] = [50.0, 100.0, 200.0, 300.0, 500.0, 700.0, 1_000.0, 2_000.0, 3_000.0, 5_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// The predictions the text states (at [`MEAN_N`]).
fn shown(at: &[AtN]) -> impl Iterator<Item = &AtN> {
    at.iter().filter(|a| MEAN_N.contains(&a.n))
}

fn dp(q: &DpQuery, cal0: &Calibration, params: &QueryParams, sql: &str, remaining: Option<f64>, recent: Option<Family>) -> Result<Explanation> {
    // under auto-bounds the limits are chosen when the query runs; predict with
    // the ones the last answer on these tables used, else with dpq.toml's
    let (cal, limits_source) = match (&cal0.auto_bounds, recent) {
        (Some(_), Some(f)) => {
            let (c, _) = cal0.with_limits(q, Limits::of_family(f))?;
            (c, Some(format!("chosen from the data when the query runs; predicted with the limits the last answer on these tables used ({})", f.describe())))
        }
        (Some(_), None) => {
            let (c, l0, linf) = super::plan::configured_bounds(q, params);
            let (c, _) = cal0.with_limits(q, Limits { max_rows_per_unit: c, max_groups_per_unit: l0, max_rows_per_group: linf })?;
            let text = format!(
                "chosen from the data when the query runs; no answer on these tables recorded its limits yet, so predicted with dpq.toml's fixed limits ({})",
                c.family.describe()
            );
            (c, Some(text))
        }
        (None, _) => (cal0.clone(), None),
    };
    let cal = &cal;
    let mut cells = Vec::new();
    for (j, ap) in cal.aggs.iter().enumerate() {
        let a = &q.aggs[j];
        let comps: Vec<ComponentText> = ap
            .mechanism
            .describe()
            .into_iter()
            .map(|c| ComponentText { what: c.what.to_string(), sensitivity: c.sensitivity.to_string(), noise: c.noise, epsilon: c.cost, stddev: c.stddev })
            .collect();
        let conf = cal.confidence;
        let pct = conf * 100.0;
        let (stddev, hw, note, at_n) = match &ap.mechanism {
            AggMechanism::Count(c) => (Some(c.noise.stddev()), Some(c.halfwidth(conf)), None, vec![]),
            AggMechanism::Sum(m) => (Some(m.noise.stddev() * m.grid.size()), Some(m.halfwidth(conf)), None, vec![]),
            AggMechanism::Mean(m) => {
                let g = m.grid.size();
                let z = crate::privacy::special::normal_isf((1.0 - conf) / 2.0);
                let at: Vec<AtN> = AT_N.iter().map(|&n| AtN { n, halfwidth: Some(z * m.sum.stddev() * g / n), ..AtN::default() }).collect();
                let text = shown(&at).map(|a| format!("±{} at n = {}", sig(a.halfwidth.unwrap_or_default()), a.n)).collect::<Vec<_>>().join(", ");
                (None, None, Some(format!("{pct:.0}% interval in value units, for n values in a group (it shrinks as 1/n): {text}")), at)
            }
            AggMechanism::Variance(v) => {
                // the interval the release's own rule gives with the noise at
                // zero, for a spread of 0: centred mean, and mean at an end
                let (lo, hi) = (v.lo, v.hi);
                // (a STDDEV mechanism predicts in value units: square it back)
                let reach = |n: f64, mean: f64| {
                    let r = v.predict(n, mean, 0.0, conf).1;
                    if v.stddev { r * r } else { r }
                };
                let at: Vec<AtN> = AT_N
                    .iter()
                    .map(|&n| {
                        let (mid, worst) = (reach(n, (lo + hi) / 2.0), reach(n, lo).max(reach(n, hi)));
                        AtN {
                            n,
                            variance_reach: Some(mid),
                            variance_reach_worst: Some(worst),
                            stddev_reach: v.stddev.then(|| mid.sqrt()),
                            stddev_reach_worst: v.stddev.then(|| worst.sqrt()),
                            ..AtN::default()
                        }
                    })
                    .collect();
                let text = if v.stddev {
                    let t = shown(&at)
                        .map(|a| format!("{} to {} at n = {}", sig(a.stddev_reach.unwrap_or_default()), sig(a.stddev_reach_worst.unwrap_or_default()), a.n))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "{pct:.0}% interval in value units, for n values in a group with standard deviation s: [√(s² − H), √(s² + H)], H as for VARIANCE — about ±H/(2s) once s² ≫ H; for s near 0 it reaches up to √H: {t} (the first figure with the values' mean mid-range in [{lo}, {hi}], the second with it at an end: the centring costs accuracy, so a tighter range helps)"
                    )
                } else {
                    let t = shown(&at)
                        .map(|a| {
                            format!("+{} to +{} at n = {}", sig(a.variance_reach.unwrap_or_default()), sig(a.variance_reach_worst.unwrap_or_default()), a.n)
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "{pct:.0}% interval in value² units, for n values in a group (it shrinks about as 1/n): reaches above the true variance by {t} (the first figure with the values' mean mid-range in [{lo}, {hi}], the second with it at an end: the centring costs accuracy, so a tighter range helps)"
                    )
                };
                (None, None, Some(text), at)
            }
            AggMechanism::Quantile(m) => {
                let level = m.level;
                let dom = m.domain;
                let r = crate::privacy::quantile::rank_error(level, m.values_per_unit, m.epsilon_group.to_f64() * 0.5, dom.bins, (1.0 - conf) / 3.0);
                let at: Vec<AtN> = AT_N
                    .iter()
                    .map(|&n| {
                        let (a, b) = crate::privacy::quantile::interval_levels(level, m.values_per_unit, m.epsilon_group, dom.bins, conf, n);
                        AtN {
                            n,
                            percentile_low: Some(100.0 * a.unwrap_or(0.0)),
                            percentile_high: Some(100.0 * b.unwrap_or(1.0)),
                            value_rank_error: Some(r),
                            ..AtN::default()
                        }
                    })
                    .collect();
                let text = shown(&at)
                    .map(|a| format!("{} to {} at n = {}", sig(a.percentile_low.unwrap_or_default()), sig(a.percentile_high.unwrap_or(100.0)), a.n))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    None,
                    None,
                    Some(format!(
                        "exponential mechanism over {} bins of [{}, {}] (bin width {}); the released value's rank is within ±{:.0} values of the target rank with probability {pct:.0}%; the {pct:.0}% interval runs between the group's values at about percentiles {text} (0 or 100: the interval reaches the range's end)",
                        dom.bins,
                        dom.lo,
                        dom.hi,
                        sig((dom.hi - dom.lo) / dom.bins as f64),
                        r,
                    )),
                    at,
                )
            }
        };
        cells.push(CellAccuracy {
            aggregate: a.display.clone(),
            kind: a.kind.name(),
            epsilon: ap.epsilon.to_string(),
            bounds: a.bounds,
            components: comps,
            stddev,
            ci_halfwidth: hw,
            note,
            at_n,
        });
    }
    let stats = bounded::stats_plan(q, cal)?;
    let groups = bounded::Groups::new(q)?;
    let mut plan_text = if super::needs_counts_pass(q, cal) {
        // (the operator's configuration carries a bounding seed; explain shows zeros)
        bounded::totals_plan(&stats, &groups, cal, &[0; 32], 1)?.display()
    } else if cal.auto_bounds.is_some() {
        format!("-- per-person sizes for --auto-bounds:\n{}", stats.display())
    } else {
        "-- no counts pass: every aggregate is a quantile and no key needs partition selection".to_string()
    };
    for (j, ap) in cal.aggs.iter().enumerate() {
        if ap.mechanism.quantile().is_some() {
            plan_text.push_str(&format!("\n-- quantile partials for {}:\n", q.aggs[j].display));
            plan_text.push_str(&bounded::totals_plan(&bounded::quantile_plan(q, cal, j)?, &groups, cal, &[0; 32], 10 + j as u64)?.display());
        }
    }
    let (charge_eps, charge_delta) = cal.charge();
    let auto_eps = cal.auto_bounds.as_ref().map(|a| crate::privacy::accountant::basic(&a.releases()).0).unwrap_or_default();
    let eps = charge_eps.to_f64();
    Ok(Explanation {
        sql: sql.to_string(),
        public: false,
        unit: Some(q.unit_name.clone()),
        tables: q.tables.iter().cloned().collect(),
        per_person_rows: q.per_person,
        bounding: Some(cal.family.describe()),
        alternative: Some(cal.alternative.describe()),
        why: Some(cal.why_family.clone()),
        keys: q
            .keys
            .iter()
            .map(|k| {
                let d = match &k.domain {
                    Some(d) => format!("domain: {} ({} values)", d.source, d.values.len()),
                    None => "no domain: keys released only through partition selection (needs δ > 0)".to_string(),
                };
                (k.display.clone(), d)
            })
            .collect(),
        epsilon: charge_eps.to_string(),
        delta: charge_delta.to_string(),
        auto_bounds_epsilon: auto_eps.to_string(),
        selection: cal.selection.as_ref().map(|s| {
            let kind = match s.rule {
                crate::privacy::mechanisms::partition::Rule::Optimal(_) => "Optimal",
                crate::privacy::mechanisms::partition::Rule::Laplace(_) => "Laplace",
            };
            format!("{kind} partition selection: ε={}, δ={}, ≤ {} groups per person", s.epsilon, s.delta, s.groups_per_unit)
        }),
        cells,
        confidence: cal.confidence,
        bounded_plan: Some(plan_text),
        budget_before: remaining,
        // no "after" when the query would be refused: nothing would be spent
        budget_after: remaining.filter(|r| eps <= *r + 1e-15).map(|r| (r - eps).max(0.0)),
        refused: remaining.filter(|r| eps > *r + 1e-15).map(|r| {
            format!(
                "this query would be refused: it needs ε={charge_eps}, and only ε={} remains of the dataset's budget; lower --epsilon, or ask the data owner: dpq budget set --epsilon E --reason \"…\"",
                crate::ledger::fmt_eps(r)
            )
        }),
        limits_source,
    })
    .map(|mut e| {
        if params.auto_bounds && cal0.auto_bounds.is_some() {
            e.bounding = Some(format!("{} — limits chosen from the data when the query runs (ε={auto_eps} of the charge)", cal.family.describe()));
        }
        e
    })
}

impl Explanation {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(s, "query: {}", self.sql.trim());
        if self.public {
            let _ = writeln!(s, "reads only public tables ({}): answered exactly, costs nothing", self.tables.join(", "));
            return s;
        }
        let _ = writeln!(s, "privacy unit: {} (tables: {})", self.unit.clone().unwrap_or_default(), self.tables.join(", "));
        if self.per_person_rows {
            let _ = writeln!(s, "source rows: per-person summaries (one row per person)");
        }
        if let Some(r) = &self.refused {
            let _ = writeln!(s, "REFUSED: {r}");
        }
        let _ = writeln!(s, "bounding: {}", self.bounding.clone().unwrap_or_default());
        if let Some(l) = &self.limits_source {
            let _ = writeln!(s, "  limits: {l}");
        }
        if let Some(w) = &self.why {
            let _ = writeln!(s, "  chosen because: {w}");
        }
        for (k, d) in &self.keys {
            let _ = writeln!(s, "group key {k}: {d}");
        }
        let _ = writeln!(s, "cost: ε={}, δ={}", self.epsilon, self.delta);
        if self.auto_bounds_epsilon != "0" {
            let _ = writeln!(s, "  auto-bounds: ε={}", self.auto_bounds_epsilon);
        }
        if let Some(sel) = &self.selection {
            let _ = writeln!(s, "  {sel}");
        }
        for c in &self.cells {
            let _ = writeln!(
                s,
                "  {} [{}]: ε={}{}",
                c.aggregate,
                c.kind,
                c.epsilon,
                c.bounds.map(|(a, b)| format!(", values clamped to [{a}, {b}]")).unwrap_or_default()
            );
            for comp in &c.components {
                let _ = writeln!(s, "    {}: sensitivity {}, {}, {}", comp.what, comp.sensitivity, comp.noise, comp.epsilon);
            }
            if let (Some(sd), Some(hw)) = (c.stddev, c.ci_halfwidth) {
                let _ = writeln!(s, "    expected error per cell: stddev {:.3}, {:.0}% CI ±{:.3}", sd, self.confidence * 100.0, hw);
            }
            if let Some(n) = &c.note {
                let _ = writeln!(s, "    {n}");
            }
        }
        match (self.budget_before, self.budget_after) {
            (Some(b), _) if self.refused.is_some() => {
                let _ = writeln!(
                    s,
                    "budget: ε remaining {}, less than the ε={} this query needs: it would be refused (see above)",
                    crate::ledger::fmt_eps(b),
                    self.epsilon
                );
            }
            (Some(b), Some(a)) => {
                let _ = writeln!(s, "budget: ε remaining {} → {} after this query", crate::ledger::fmt_eps(b), crate::ledger::fmt_eps(a));
            }
            _ => {}
        }
        if let Some(p) = &self.bounded_plan {
            let _ = writeln!(s, "bounded plan (per-person partials, then bounding in dpq):");
            for line in p.lines() {
                if line.chars().count() > 160 {
                    let short: String = line.chars().take(150).collect();
                    let _ = writeln!(s, "  {short}… ({} more characters)", line.chars().count() - 150);
                } else {
                    let _ = writeln!(s, "  {line}");
                }
            }
        }
        s
    }
}
