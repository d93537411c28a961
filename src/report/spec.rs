//! Report specs (TOML): a title, a period, a privacy budget for the whole report,
//! and sections — each an SQL query with a chart kind, labels, and either an ε
//! share or an accuracy target.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read report spec {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: section `{section}`: {message}")]
    Section { path: String, section: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub title: String,
    #[serde(default)]
    pub subtitle: Option<String>,
    #[serde(default)]
    pub period: Option<String>,
    pub privacy: PrivacySpec,
    #[serde(rename = "section")]
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpec {
    /// Total ε for the report.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// …or at most this share of the budget that remains.
    #[serde(default)]
    pub max_budget_share: Option<f64>,
    #[serde(default)]
    pub delta: Option<f64>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub mechanism: Option<crate::config::MechanismKind>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Chart {
    /// One big number (the first noisy cell), or a derived growth.
    Headline,
    Bar,
    Hbar,
    Line,
    /// Rows × columns grid from two group keys (e.g. cohort × hour).
    Heatmap,
    /// Top k per group (e.g. most-used emoji per cohort).
    Topk,
    Table,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub sql: String,
    pub chart: Chart,
    /// Relative weight of this section in the ε left after accuracy targets.
    #[serde(default)]
    pub epsilon_share: Option<f64>,
    #[serde(default)]
    pub target: Option<Target>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Column holding the category axis (bar/line) or rows (heatmap/topk groups).
    #[serde(default)]
    pub x: Option<String>,
    /// Second key (heatmap columns, topk items).
    #[serde(default)]
    pub y: Option<String>,
    /// The noisy column to plot.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    /// Post-processing of released cells: growth or share.
    #[serde(default)]
    pub derive: Option<Derive>,
    /// Per-section bounds (override the dataset defaults).
    #[serde(default)]
    pub max_rows_per_unit: Option<u64>,
    #[serde(default)]
    pub max_groups_per_unit: Option<u64>,
    #[serde(default)]
    pub max_rows_per_group: Option<u64>,
    /// The id of an earlier section whose contribution limits (chosen from
    /// the data when the report runs) this one uses instead of choosing its
    /// own, so that sections that must agree (months and the year total) are
    /// bounded alike.
    #[serde(default)]
    pub limits_of: Option<String>,
    /// Multiply displayed values (e.g. 1/60 for seconds → minutes).
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// CI half-width (value units) at the report's confidence.
    #[serde(default)]
    pub ci_halfwidth: Option<f64>,
    /// Relative CI half-width around an expected magnitude (which must be given:
    /// dpq does not look at the data to plan).
    #[serde(default)]
    pub relative: Option<f64>,
    #[serde(default)]
    pub expected: Option<f64>,
    /// Top-k correct with this probability, given a minimum gap between the
    /// k-th and (k+1)-th true counts.
    #[serde(default)]
    pub topk_probability: Option<f64>,
    #[serde(default)]
    pub min_gap: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    /// Growth of `value` from the row where `x` = `from` to the row where it = `to`, in %.
    #[serde(default)]
    pub growth: Option<(String, String)>,
    /// Share (%) of column `share.0` in column `share.1`, per row.
    #[serde(default)]
    pub share: Option<(String, String)>,
}

impl Spec {
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: p.clone(), source })?;
        Spec::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse { path: path.into(), message: e.message().to_string() })?;
        let bad = |s: &Section, m: &str| SpecError::Section { path: path.into(), section: s.id.clone(), message: m.into() };
        if spec.sections.is_empty() {
            return Err(SpecError::Parse { path: path.into(), message: "a report needs at least one [[section]]".into() });
        }
        match (spec.privacy.epsilon, spec.privacy.max_budget_share) {
            (Some(e), _) if !(e > 0.0 && e.is_finite()) => {
                return Err(SpecError::Parse { path: path.into(), message: "[privacy] epsilon must be > 0".into() });
            }
            (_, Some(s)) if !(s > 0.0 && s <= 1.0) => {
                return Err(SpecError::Parse { path: path.into(), message: "[privacy] max_budget_share must be in (0, 1]".into() });
            }
            (None, None) => {
                return Err(SpecError::Parse { path: path.into(), message: "[privacy] needs epsilon (the report's total) or max_budget_share".into() });
            }
            _ => {}
        }
        let mut ids = std::collections::BTreeSet::new();
        for s in &spec.sections {
            if !ids.insert(s.id.clone()) {
                return Err(bad(s, "duplicate section id"));
            }
            if s.epsilon_share.is_none() && s.target.is_none() {
                return Err(bad(s, "give either epsilon_share = <weight> or target = { … }"));
            }
            if let Some(w) = s.epsilon_share
                && !(w > 0.0 && w.is_finite())
            {
                return Err(bad(s, "epsilon_share must be > 0"));
            }
            if let Some(t) = &s.target {
                let kinds = [t.ci_halfwidth.is_some(), t.relative.is_some(), t.topk_probability.is_some()].iter().filter(|x| **x).count();
                if kinds != 1 {
                    return Err(bad(s, "a target is one of { ci_halfwidth = X }, { relative = 0.02, expected = V }, { topk_probability = 0.9, min_gap = G }"));
                }
                if t.relative.is_some() && t.expected.is_none() {
                    return Err(bad(s, "a relative target needs `expected` (the magnitude you expect; dpq does not look at the data to plan)"));
                }
                if t.topk_probability.is_some() && (t.min_gap.is_none() || s.k.is_none()) {
                    return Err(bad(s, "a top-k target needs k and min_gap"));
                }
            }
            if let Some(other) = &s.limits_of {
                if !ids.contains(other) || other == &s.id {
                    return Err(bad(s, &format!("limits_of = \"{other}\" must name an earlier section (sections run in order)")));
                }
                if s.max_rows_per_unit.is_some() || s.max_groups_per_unit.is_some() || s.max_rows_per_group.is_some() {
                    return Err(bad(s, "give either limits_of or fixed max_… limits, not both"));
                }
            }
            if matches!(s.chart, Chart::Heatmap | Chart::Topk) && (s.x.is_none() || s.y.is_none()) {
                return Err(bad(s, "heatmap and topk charts need x (rows) and y (columns/items)"));
            }
        }
        Ok(spec)
    }
}
