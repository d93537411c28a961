//! `dpq report SPEC`: a multi-query report planned before spending, charged once,
//! written as a self-contained `index.html` (inline SVG), `report.md` and
//! `report.json`, with error bars and a plain-language privacy statement.

pub mod render;
pub mod spec;
pub mod svg;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::engine::Caller;
use crate::engine::plan::QueryParams;
use crate::engine::result::{Noisy, QueryResult};
use crate::engine::{Engine, EngineError, Prepared};
use crate::ledger::{ChargeRequest, Ledger};
use crate::privacy::accountant::Release;
use crate::privacy::amount::Amount;
use spec::{Chart, Section, Spec};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("section `{section}`: {source}")]
    Section { section: String, source: EngineError },
    #[error("section `{section}`: {message}")]
    Plan { section: String, message: String },
    #[error(
        "the report's accuracy targets need ε={need:.4} but its budget is ε={have}\n  hint: loosen the targets, raise [privacy] epsilon in the spec, or drop sections"
    )]
    TargetsTooCostly { need: f64, have: Amount },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The planned ε and expected error of one section.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedSection {
    pub id: String,
    pub title: String,
    pub epsilon: Amount,
    pub delta: Amount,
    pub how: String,
    pub expected_error: String,
    pub bounding: String,
    #[serde(skip)]
    pub prepared: Prepared,
    #[serde(skip)]
    pub section: Section,
    pub confidence: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportPlan {
    pub title: String,
    pub epsilon: Amount,
    pub delta: Amount,
    pub confidence: f64,
    pub sections: Vec<PlannedSection>,
}

impl ReportPlan {
    pub fn to_text(&self) -> String {
        let headers: Vec<String> = ["section", "ε", "δ", "how", "expected error", "bounding"].iter().map(|s| s.to_string()).collect();
        let rows: Vec<Vec<String>> = self
            .sections
            .iter()
            .map(|s| vec![s.id.clone(), s.epsilon.to_string(), s.delta.to_string(), s.how.clone(), s.expected_error.clone(), s.bounding.clone()])
            .collect();
        format!(
            "report \"{}\": ε={} δ={} in total, {:.0}% confidence intervals\n\n{}",
            self.title,
            self.epsilon,
            self.delta,
            self.confidence * 100.0,
            crate::present::table(&headers, &rows)
        )
    }
}

fn section_params(ds: &Dataset, spec: &Spec, s: &Section, eps: Amount, delta: Amount, confidence: f64) -> QueryParams {
    let mut p = crate::engine::params_from(
        &ds.config,
        Some(eps),
        Some(delta),
        s.max_rows_per_unit,
        s.max_groups_per_unit,
        s.max_rows_per_group,
        spec.privacy.mechanism,
        Some(confidence),
        None,
    );
    p.confidence = confidence;
    p
}

fn section_confidence(spec: &Spec, s: &Section) -> f64 {
    let c = spec.privacy.confidence.unwrap_or(0.95);
    // derived values combine two cells: each at 1 − α/2 keeps the derived interval at 1 − α
    if s.derive.is_some() { 1.0 - (1.0 - c) / 2.0 } else { c }
}

/// Data-independent error of a prepared section (value units), if it has one.
fn error_of(p: &Prepared, s: &Section) -> (Option<f64>, String) {
    let Prepared::Dp { cal, query, .. } = p else { return (Some(0.0), "exact (public data)".into()) };
    let scale = s.scale.unwrap_or(1.0);
    let mut worst: Option<f64> = None;
    let mut text = Vec::new();
    for (ap, a) in cal.aggs.iter().zip(&query.aggs) {
        use crate::engine::plan::AggMechanism;
        match &ap.mechanism {
            AggMechanism::Count(c) => {
                let hw = c.halfwidth(cal.confidence) * scale.abs();
                worst = Some(worst.map_or(hw, |w: f64| w.max(hw)));
                text.push(format!("{}: ±{}", a.display, crate::present::fmt_f(hw)));
            }
            AggMechanism::Sum(m) => {
                let hw = m.halfwidth(cal.confidence) * scale.abs();
                worst = Some(worst.map_or(hw, |w: f64| w.max(hw)));
                text.push(format!("{}: ±{}", a.display, crate::present::fmt_f(hw)));
            }
            AggMechanism::Mean(_) | AggMechanism::Variance(_) => text.push(format!("{}: depends on n", a.display)),
            AggMechanism::Quantile(m) => {
                let r = crate::privacy::quantile::rank_error(
                    m.level,
                    m.values_per_unit,
                    m.epsilon_group.to_f64() * 0.5,
                    m.domain.bins,
                    (1.0 - cal.confidence) / 3.0,
                );
                text.push(format!("{}: rank ±{:.0}", a.display, r));
            }
        }
    }
    (worst, text.join("; "))
}

/// Plan the report: accuracy targets → ε (bisection over the noise model), the
/// rest split by shares. Reads no private rows.
pub(crate) async fn plan(engine: &Engine, ds: &Dataset, spec: &Spec, remaining_epsilon: f64) -> Result<ReportPlan, ReportError> {
    let total = match (spec.privacy.epsilon, spec.privacy.max_budget_share) {
        (Some(e), _) => Amount::from_f64(e).map_err(|e| ReportError::Plan { section: "privacy".into(), message: e.to_string() })?,
        (None, Some(share)) => Amount::from_f64_floor(remaining_epsilon * share),
        _ => unreachable!("validated"),
    };
    let delta_total = match spec.privacy.delta {
        Some(d) => Amount::from_f64(d).map_err(|e| ReportError::Plan { section: "privacy".into(), message: e.to_string() })?,
        None => ds.config.defaults.delta,
    };
    let n = spec.sections.len() as u128;
    let delta_each = delta_total.mul_ratio_floor(1, n);
    let confidence = spec.privacy.confidence.unwrap_or(0.95);
    async fn prep_one(engine: &Engine, ds: &Dataset, spec: &Spec, s: &Section, eps: Amount, delta: Amount) -> Result<Prepared, ReportError> {
        let p = section_params(ds, spec, s, eps, delta, section_confidence(spec, s));
        engine.prepare(&s.sql, &p).await.map_err(|e| ReportError::Section { section: s.id.clone(), source: e })
    }

    // 0. every column the spec names is a column of its section's answer
    // (a misspelt `x` was charged and drew an empty chart: found reviewing docs/reports.md)
    for s in &spec.sections {
        let probe = prep_one(engine, ds, spec, s, Amount::ONE, delta_each).await?;
        let columns: Vec<String> = match &probe {
            Prepared::Dp { query, .. } => crate::engine::release::output_schema(query)
                .map_err(|e| ReportError::Section { section: s.id.clone(), source: e })?
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            Prepared::Public { plan, .. } => plan.schema().fields().iter().map(|f| f.name().clone()).collect(),
        };
        let mut named: Vec<(&str, &String)> = Vec::new();
        for (what, v) in [("x", &s.x), ("y", &s.y), ("value", &s.value)] {
            if let Some(v) = v {
                named.push((what, v));
            }
        }
        if let Some((a, b)) = s.derive.as_ref().and_then(|d| d.share.as_ref()) {
            named.push(("derive.share", a));
            named.push(("derive.share", b));
        }
        for (what, v) in named {
            if !columns.iter().any(|c| c == v) {
                let shown: Vec<&str> = columns
                    .iter()
                    .map(String::as_str)
                    .filter(|c| !c.contains("__dpq") && !c.ends_with("_stddev") && !c.ends_with("_ci_low") && !c.ends_with("_ci_high"))
                    .collect();
                let hint = crate::sqltext::did_you_mean(v, shown.iter().copied()).map(|m| format!("did you mean `{m}`? ")).unwrap_or_default();
                return Err(ReportError::Plan {
                    section: s.id.clone(),
                    message: format!(
                        "{what} = \"{v}\" is not a column of this section's answer\n  hint: {hint}its columns are {} (name them with AS in the SQL)",
                        shown.join(", ")
                    ),
                });
            }
        }
    }

    // 1. accuracy targets
    let mut eps_for: Vec<Option<Amount>> = vec![None; spec.sections.len()];
    let mut hows: Vec<String> = vec![String::new(); spec.sections.len()];
    for (i, s) in spec.sections.iter().enumerate() {
        let Some(t) = &s.target else { continue };
        let probe = prep_one(engine, ds, spec, s, Amount::ONE, delta_each).await?;
        let meets = |p: &Prepared| -> Result<bool, ReportError> {
            if let Some(p_target) = t.topk_probability {
                let Prepared::Dp { cal, query, .. } = p else { return Ok(true) };
                let noise = match cal.aggs.first().map(|a| &a.mechanism) {
                    Some(crate::engine::plan::AggMechanism::Count(c)) => c.noise.noise.clone(),
                    _ => return Err(ReportError::Plan { section: s.id.clone(), message: "a top-k target needs a COUNT aggregate".into() }),
                };
                // candidates per group: the last key's domain; groups: the other keys' domains
                let sizes: Vec<usize> = query.keys.iter().map(|k| k.domain.as_ref().map(|d| d.values.len()).unwrap_or(1000)).collect();
                let candidates = sizes.last().copied().unwrap_or(1);
                let groups: usize = sizes[..sizes.len().saturating_sub(1)].iter().product::<usize>().max(1);
                let gap = (t.min_gap.unwrap() / cal.aggs[0].mechanism.grid().size()).ceil() as u128;
                let per_group = crate::privacy::topk::correct_probability_lower_bound(&noise, gap, s.k.unwrap(), candidates);
                return Ok(1.0 - groups as f64 * (1.0 - per_group) >= p_target);
            }
            let want = t.ci_halfwidth.unwrap_or_else(|| t.relative.unwrap() * t.expected.unwrap().abs());
            match error_of(p, s).0 {
                Some(e) => Ok(e <= want),
                None => Err(ReportError::Plan {
                    section: s.id.clone(),
                    message: "accuracy targets are supported for COUNT and SUM sections; give this one an epsilon_share".into(),
                }),
            }
        };
        meets(&probe)?; // validates the target applies
        let (mut lo, mut hi) = (1e-6f64, total.to_f64().max(1e-6));
        if !meets(&prep_one(engine, ds, spec, s, Amount::from_f64_ceil(hi), delta_each).await?)? {
            return Err(ReportError::TargetsTooCostly { need: f64::INFINITY, have: total });
        }
        for _ in 0..40 {
            let mid = (lo * hi).sqrt();
            if meets(&prep_one(engine, ds, spec, s, Amount::from_f64_ceil(mid), delta_each).await?)? { hi = mid } else { lo = mid }
        }
        // round up to 4 significant digits
        // round up to 4 significant digits, built as a decimal string (exact)
        let exp10 = hi.log10().floor() as i32 - 3;
        let digits = (hi / 10f64.powi(exp10)).ceil() as u64;
        let e: Amount = format!("{digits}e{exp10}").parse().unwrap_or_else(|_| Amount::from_f64_ceil(hi));
        eps_for[i] = Some(e);
        hows[i] = match (t.ci_halfwidth, t.relative, t.topk_probability) {
            (Some(h), _, _) => format!("target ±{h}"),
            (_, Some(r), _) => format!("target ±{}% of {}", r * 100.0, t.expected.unwrap()),
            _ => format!("target top-{} correct w.p. {}", s.k.unwrap(), t.topk_probability.unwrap()),
        };
    }
    let targets: Amount = eps_for.iter().flatten().copied().sum();
    if targets > total {
        return Err(ReportError::TargetsTooCostly { need: targets.to_f64(), have: total });
    }
    // 2. shares split the rest
    let rest = total - targets;
    let weights: f64 = spec.sections.iter().filter(|s| s.target.is_none()).map(|s| s.epsilon_share.unwrap_or(1.0)).sum();
    let last_share = spec.sections.iter().rposition(|s| s.target.is_none());
    let mut given = Amount::ZERO;
    for (i, s) in spec.sections.iter().enumerate() {
        if eps_for[i].is_none() {
            let w = s.epsilon_share.unwrap_or(1.0) / weights;
            // shares rounded to 6 decimals; the last share section takes the exact remainder
            let e = if Some(i) == last_share {
                rest.saturating_sub(given)
            } else {
                Amount::from_f64_floor((rest.to_f64() * w * 1e6).floor() / 1e6).min(rest.saturating_sub(given))
            };
            given = given + e;
            eps_for[i] = Some(e);
            hows[i] = format!("share {:.1}%", w * 100.0 * rest.to_f64() / total.to_f64().max(1e-300));
        }
    }
    let mut sections = Vec::new();
    for (i, s) in spec.sections.iter().enumerate() {
        let eps = eps_for[i].unwrap();
        if eps.is_zero() {
            return Err(ReportError::Plan { section: s.id.clone(), message: "no ε left for this section; raise the report's epsilon".into() });
        }
        let p = prep_one(engine, ds, spec, s, eps, delta_each).await?;
        let (_, expected) = error_of(&p, s);
        let (d, bounding, expected) = match &p {
            // limits chosen when the report runs: the error depends on them
            Prepared::Dp { cal, .. } if cal.auto_bounds.is_some() => (
                cal.charge().1,
                match &s.limits_of {
                    Some(other) => format!("the limits section `{other}` chooses from the data when the report runs"),
                    None => "limits chosen from the data when the report runs".to_string(),
                },
                format!("{expected} at dpq.toml's fixed limits; depends on the limits chosen"),
            ),
            Prepared::Dp { cal, .. } => (cal.charge().1, cal.family.describe(), expected),
            Prepared::Public { .. } => {
                return Err(ReportError::Plan {
                    section: s.id.clone(),
                    message: "this section reads only public tables; a report releases private statistics (run it as a query of its own: it is answered exactly, for free)".into(),
                });
            }
        };
        sections.push(PlannedSection {
            id: s.id.clone(),
            title: s.title.clone(),
            epsilon: eps,
            delta: d,
            how: hows[i].clone(),
            expected_error: expected,
            bounding,
            prepared: p,
            section: s.clone(),
            confidence: section_confidence(spec, s),
        });
    }
    let epsilon: Amount = sections.iter().map(|s| s.epsilon).sum();
    let delta: Amount = sections.iter().map(|s| s.delta).sum();
    Ok(ReportPlan { title: spec.title.clone(), epsilon, delta, confidence, sections })
}

/// A derived value with its interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Derived {
    pub label: String,
    #[serde(with = "crate::engine::result::lenient")]
    pub value: f64,
    #[serde(with = "crate::engine::result::lenient")]
    pub ci_low: f64,
    #[serde(with = "crate::engine::result::lenient")]
    pub ci_high: f64,
    pub confidence: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SectionResult {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub chart: Chart,
    pub epsilon: String,
    pub delta: String,
    pub bounding: String,
    pub result: QueryResult,
    pub derived: Vec<Derived>,
    pub note: Option<String>,
    #[serde(skip)]
    pub spec: Option<Section>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportPrivacy {
    pub epsilon: String,
    pub delta: String,
    pub total_epsilon: String,
    pub total_delta: String,
    pub remaining_epsilon: String,
    pub remaining_delta: String,
    /// The rule that governs admission.
    pub accountant: String,
    /// The ledger entry of the charge, its hash, the hash of the stored report
    /// (in its result entry) and the ledger's head when this was written: a
    /// reader checks them against the dataset's public statement.
    pub entry: i64,
    pub entry_hash: String,
    #[serde(default)]
    pub result_hash: Option<String>,
    #[serde(default)]
    pub ledger_head: Option<String>,
    #[serde(default)]
    pub dataset: String,
    pub unit: String,
    pub confidence: f64,
    pub replayed: bool,
    pub mechanism: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportResult {
    pub title: String,
    pub subtitle: Option<String>,
    pub period: Option<String>,
    pub generated_at: String,
    pub sections: Vec<SectionResult>,
    pub privacy: ReportPrivacy,
}

fn derive(s: &Section, r: &QueryResult, confidence: f64) -> Vec<Derived> {
    let Some(d) = &s.derive else { return vec![] };
    let mut out = Vec::new();
    let col = s.value.clone().or_else(|| r.columns.iter().find(|c| c.noisy).map(|c| c.name.clone())).unwrap_or_default();
    let xcol = s.x.clone().or_else(|| r.columns.iter().find(|c| !c.noisy).map(|c| c.name.clone())).unwrap_or_default();
    let find = |key: &str| -> Option<Noisy> {
        r.rows
            .iter()
            .position(|row| row.get(&xcol).map(|v| v.as_str().map(|s| s.to_string()).unwrap_or_else(|| v.to_string())) == Some(key.to_string()))
            .and_then(|i| r.cell(i, &col))
    };
    if let Some((from, to)) = &d.growth
        && let (Some(a), Some(b)) = (find(from), find(to))
    {
        let (av, bv) = (a.value.as_f64().unwrap_or(f64::NAN), b.value.as_f64().unwrap_or(f64::NAN));
        let value = (bv / av - 1.0) * 100.0;
        let (lo, hi) =
            if a.ci_low > 0.0 { ((b.ci_low / a.ci_high - 1.0) * 100.0, (b.ci_high / a.ci_low - 1.0) * 100.0) } else { (f64::NEG_INFINITY, f64::INFINITY) };
        out.push(Derived { label: format!("growth {from} → {to}"), value, ci_low: lo.min(value), ci_high: hi.max(value), confidence });
    }
    if let Some((part, whole)) = &d.share {
        for (i, row) in r.rows.iter().enumerate() {
            let (Some(a), Some(b)) = (r.cell(i, part), r.cell(i, whole)) else { continue };
            let label = row.get(&xcol).map(|v| v.as_str().map(|s| s.to_string()).unwrap_or_else(|| v.to_string())).unwrap_or_default();
            let (av, bv) = (a.value.as_f64().unwrap_or(0.0), b.value.as_f64().unwrap_or(0.0));
            let value = if bv > 0.0 { (av / bv * 100.0).clamp(0.0, 100.0) } else { f64::NAN };
            let (lo, hi) = if b.ci_low > 0.0 {
                ((a.ci_low.max(0.0) / b.ci_high * 100.0).clamp(0.0, 100.0), (a.ci_high / b.ci_low * 100.0).clamp(0.0, 100.0))
            } else {
                (0.0, 100.0)
            };
            out.push(Derived { label, value, ci_low: lo.min(value), ci_high: hi.max(value), confidence });
        }
    }
    out
}

/// Run a planned report: replay, or charge once → compute every section → store
/// (the same release protocol as queries).
pub(crate) async fn run(
    engine: &Engine,
    spec: &Spec,
    plan: &ReportPlan,
    ledger: &mut Ledger,
    fresh: bool,
    caller: &Caller,
) -> Result<ReportResult, ReportError> {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(spec).unwrap().as_bytes());
    let mut releases: Vec<Release> = Vec::new();
    let mut unit = String::new();
    for s in &plan.sections {
        h.update(s.epsilon.to_string().as_bytes());
        if let Prepared::Dp { cal, key, query, .. } = &s.prepared {
            // a section's replay key covers everything its answer depends on
            h.update(key.as_bytes());
            releases.extend(cal.releases());
            if unit.is_empty() {
                unit = query.unit_name.clone();
            }
        }
    }
    let key = hex::encode(h.finalize());
    let request = ChargeRequest {
        kind: "report".into(),
        text: plan.title.clone(),
        query_key: Some(key.clone()),
        releases,
        params: serde_json::json!({
            "sections": plan.sections.iter().map(|s| serde_json::json!({"id": s.id, "epsilon": s.epsilon, "delta": s.delta, "bounding": s.bounding, "sql": s.section.sql})).collect::<Vec<_>>(),
        }),
        data_version: key.clone(),
        analyst: caller.analyst.clone(),
        quota: caller.quota,
        fresh,
    };
    let released = crate::engine::protocol::release(ledger, request, fresh, |charge| async move {
        let mut sections: Vec<SectionResult> = Vec::new();
        for ps in &plan.sections {
            let s = &ps.section;
            // limits another section chose (post-processing of its release)
            let given = s.limits_of.as_ref().and_then(|other| {
                let family = sections.iter().find(|r| &r.id == other)?.result.family?;
                Some((crate::privacy::mechanisms::auto_bounds::Limits::of_family(family), format!("section `{other}`")))
            });
            let result = match &ps.prepared {
                Prepared::Dp { query, cal, .. } => engine
                    .compute_with_limits(query, cal, crate::privacy::samplers::fresh_seed(), given.filter(|_| cal.auto_bounds.is_some()))
                    .await
                    .map_err(|e| EngineError::Invalid(format!("section `{}`: {}", s.id, crate::engine::error::after_charge(e))))?,
                Prepared::Public { .. } => {
                    return Err(crate::engine::error::internal(format!("public section `{}` reached the release (plan refuses them)", s.id)));
                }
            };
            let derived = derive(s, &result, plan.confidence);
            sections.push(SectionResult {
                id: s.id.clone(),
                title: s.title.clone(),
                description: s.description.clone(),
                chart: s.chart,
                epsilon: ps.epsilon.to_string(),
                delta: ps.delta.to_string(),
                bounding: result.bounding_used.clone().unwrap_or_else(|| ps.bounding.clone()),
                result,
                derived,
                note: s.note.clone(),
                spec: Some(s.clone()),
            });
        }
        let st = &charge.status;
        let r = ReportResult {
            title: spec.title.clone(),
            subtitle: spec.subtitle.clone(),
            period: spec.period.clone(),
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sections,
            privacy: ReportPrivacy {
                epsilon: charge.epsilon.to_string(),
                delta: charge.delta.to_string(),
                total_epsilon: st.budget.epsilon.to_string(),
                total_delta: st.budget.delta.to_string(),
                remaining_epsilon: st.remaining_epsilon().to_string(),
                remaining_delta: st.remaining_delta().to_string(),
                accountant: st.budget.rule.to_string(),
                entry: charge.entry,
                entry_hash: charge.hash.clone(),
                result_hash: None,
                ledger_head: None,
                dataset: st.dataset.clone(),
                unit: unit.clone(),
                confidence: plan.confidence,
                replayed: false,
                // the mechanism the sections used (the spec's, else dpq.toml's default)
                mechanism: plan
                    .sections
                    .iter()
                    .find_map(|s| match &s.prepared {
                        Prepared::Dp { cal, .. } => Some(cal.mechanism),
                        _ => None,
                    })
                    .or(spec.privacy.mechanism)
                    .unwrap_or_default()
                    .to_string(),
            },
        };
        let recorded =
            serde_json::json!({ "sections": r.sections.iter().map(|s| serde_json::json!({"id": s.id, "bounding_used": s.bounding})).collect::<Vec<_>>() });
        Ok((serde_json::to_value(&r).expect("reports serialise"), recorded))
    })
    .await?;
    let mut r: ReportResult = serde_json::from_value(released.value).map_err(|e| ReportError::Plan {
        section: "ledger".into(),
        message: format!("the stored report of entry {} is unreadable: {e}", released.charge.entry),
    })?;
    r.privacy.replayed = released.replayed;
    r.privacy.result_hash = Some(released.result_hash.clone());
    r.privacy.ledger_head = Some(released.status.head.to_string());
    r.privacy.remaining_epsilon = released.status.remaining_epsilon().to_string();
    r.privacy.remaining_delta = released.status.remaining_delta().to_string();
    for (sr, ps) in r.sections.iter_mut().zip(&plan.sections) {
        sr.spec = Some(ps.section.clone());
    }
    Ok(r)
}

/// Write index.html, report.md and report.json into `out`.
pub fn write(r: &ReportResult, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let files = [
        (out.join("index.html"), render::html(r)),
        (out.join("report.md"), render::markdown(r)),
        (out.join("report.json"), serde_json::to_string_pretty(r).unwrap() + "\n"),
    ];
    let mut written = Vec::new();
    for (p, text) in files {
        std::fs::write(&p, text).map_err(io(&p))?;
        written.push(p);
    }
    Ok(written)
}
