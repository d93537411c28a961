//! `dpq.toml`: the dataset's configuration, its validation, and the commented
//! template that `dpq init` writes.
//!
//! Bounds and key domains come from here (or from the query text), never from the
//! private data. Every validation error names the file, the key and the fix.

pub mod analysts;
pub mod describe;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::privacy::amount::Amount;

pub const CONFIG_FILE: &str = "dpq.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no dataset at {dir}: {file} is missing\n  hint: create one with `dpq init {dir}`, or point --data at an existing dataset directory")]
    Missing { dir: String, file: String },
    #[error("cannot read {file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}` {problem}\n  fix: {fix}")]
    Invalid { file: String, key: String, problem: String, fix: String },
}

/// Which noise distribution the numeric aggregates use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MechanismKind {
    /// Discrete Laplace, pure ε-DP.
    #[default]
    Laplace,
    /// Discrete Gaussian, ρ-zCDP (needs δ > 0 to state an (ε, δ) guarantee).
    Gaussian,
}

impl fmt::Display for MechanismKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MechanismKind::Laplace => "laplace",
            MechanismKind::Gaussian => "gaussian",
        })
    }
}

/// How keys without a public domain are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PartitionSelectionKind {
    /// Desfontaines, Voss, Gipson, Mandayam 2022 (optimal for given ε, δ).
    #[default]
    Optimal,
    /// Laplace noise on the distinct-unit count and a threshold.
    Laplace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Path of the dpq.toml this was read from (for messages).
    pub file: PathBuf,
    pub budget: Budget,
    pub defaults: Defaults,
    pub tables: BTreeMap<String, TableConfig>,
    /// `[gateway]`: settings of `dpq serve` (public, not part of the privacy policy).
    pub gateway: GatewayConfig,
}

/// `[gateway]` in dpq.toml.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayConfig {
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// A statement running longer is cancelled ("300s", "5min", "0" for none).
    pub statement_timeout: Option<String>,
    /// Memory one statement may use before spilling to disk ("512MiB").
    pub memory_per_statement: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub epsilon: Amount,
    pub delta: Amount,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub epsilon: Amount,
    pub delta: Amount,
    pub max_rows_per_unit: u64,
    pub max_groups_per_unit: u64,
    pub max_rows_per_group: u64,
    pub mechanism: MechanismKind,
    pub partition_selection: PartitionSelectionKind,
    pub confidence: f64,
    /// Choose contribution limits from the data (a DP release) unless limits are given.
    pub auto_bounds: bool,
    /// Share of a query's ε spent on choosing the limits and estimating what they cut.
    pub auto_bounds_share: f64,
    /// Memory limit for query execution, e.g. "2GiB".
    pub memory_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableConfig {
    pub public: bool,
    pub privacy_unit: Option<String>,
    /// Declares that the table holds at most one row per unit (a per-person
    /// attribute table). Grouping only by such columns defaults to one group per
    /// unit; the bounding still enforces it.
    pub one_row_per_unit: bool,
    pub columns: BTreeMap<String, ColumnConfig>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnConfig {
    /// The declared type (ingest enforces it; rows that do not parse are quarantined).
    pub ty: Option<crate::storage::schema::ColumnType>,
    pub bounds: Option<(f64, f64)>,
    pub domain: Option<DomainConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DomainConfig {
    Values(Vec<DomainValue>),
    Table { table: String, column: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum DomainValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for DomainValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainValue::Str(s) => write!(f, "{s}"),
            DomainValue::Int(i) => write!(f, "{i}"),
            DomainValue::Float(x) => write!(f, "{x}"),
            DomainValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

// ---- raw (serde) model: unknown keys are errors ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    budget: Option<RawBudget>,
    defaults: Option<RawDefaults>,
    #[serde(default)]
    tables: BTreeMap<String, RawTable>,
    gateway: Option<RawGateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    max_connections: Option<i64>,
    statement_timeout: Option<String>,
    memory_per_statement: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    epsilon: Option<toml::Value>,
    delta: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    epsilon: Option<toml::Value>,
    delta: Option<toml::Value>,
    max_rows_per_unit: Option<i64>,
    max_groups_per_unit: Option<i64>,
    max_rows_per_group: Option<i64>,
    mechanism: Option<MechanismKind>,
    partition_selection: Option<PartitionSelectionKind>,
    confidence: Option<f64>,
    auto_bounds: Option<bool>,
    auto_bounds_share: Option<f64>,
    memory_limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    public: bool,
    privacy_unit: Option<String>,
    #[serde(default)]
    one_row_per_unit: bool,
    #[serde(default)]
    columns: BTreeMap<String, RawColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    #[serde(rename = "type")]
    ty: Option<String>,
    bounds: Option<Vec<toml::Value>>,
    domain: Option<RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    values: Option<Vec<toml::Value>>,
    table: Option<String>,
    column: Option<String>,
}

impl TableConfig {
    /// The declared schema (every column with its type), if the table declares one.
    pub fn declared_schema(&self) -> Option<Vec<crate::storage::manifest::ColumnSpec>> {
        if self.columns.is_empty() || self.columns.values().any(|c| c.ty.is_none()) {
            return None;
        }
        Some(self.columns.iter().map(|(n, c)| crate::storage::manifest::ColumnSpec { name: n.clone(), ty: c.ty.expect("checked") }).collect())
    }
}

impl Config {
    /// Load `DIR/dpq.toml`.
    pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
        let file = dir.join(CONFIG_FILE);
        if !file.exists() {
            return Err(ConfigError::Missing { dir: dir.display().to_string(), file: CONFIG_FILE.to_string() });
        }
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io { file: file.display().to_string(), source })?;
        Config::parse(&text, &file)
    }

    /// Parse and validate configuration text; `file` is used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let fname = file.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse { file: fname.clone(), message: describe_toml_error(&e) })?;
        let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid { file: fname.clone(), key: key.to_string(), problem, fix: fix.to_string() };

        let rb = raw.budget.ok_or_else(|| invalid("budget", "is missing".into(), "add a [budget] table with epsilon = 10.0 and delta = 1e-6"))?;
        let budget_eps = amount(&rb.epsilon, "budget.epsilon", &fname)?
            .ok_or_else(|| invalid("budget.epsilon", "is missing".into(), "set the dataset's lifetime total, e.g. epsilon = 10.0"))?;
        if budget_eps.is_zero() {
            return Err(invalid("budget.epsilon", "must be > 0 (got 0)".into(), "set a positive lifetime total, e.g. epsilon = 10.0"));
        }
        let budget_delta = amount(&rb.delta, "budget.delta", &fname)?.unwrap_or(Amount::ZERO);
        if budget_delta >= Amount::ONE {
            return Err(invalid(
                "budget.delta",
                format!("must be in [0, 1) (got {budget_delta})"),
                "use a small value such as delta = 1e-6, or 0 for pure ε-DP",
            ));
        }

        let rd = raw.defaults.unwrap_or(RawDefaults {
            epsilon: None,
            delta: None,
            max_rows_per_unit: None,
            max_groups_per_unit: None,
            max_rows_per_group: None,
            mechanism: None,
            partition_selection: None,
            confidence: None,
            auto_bounds: None,
            auto_bounds_share: None,
            memory_limit: None,
        });
        let def_eps = amount(&rd.epsilon, "defaults.epsilon", &fname)?.unwrap_or_else(|| "0.5".parse().unwrap());
        if def_eps.is_zero() {
            return Err(invalid("defaults.epsilon", "must be > 0 (got 0)".into(), "set the per-query default, e.g. epsilon = 0.5"));
        }
        let def_delta = amount(&rd.delta, "defaults.delta", &fname)?.unwrap_or(Amount::ZERO);
        if def_delta >= Amount::ONE {
            return Err(invalid("defaults.delta", format!("must be in [0, 1) (got {def_delta})"), "use a small value such as delta = 1e-8, or 0"));
        }
        let positive = |v: Option<i64>, key: &str, default: u64| -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some(x) if x >= 1 => Ok(x as u64),
                Some(x) => Err(invalid(key, format!("must be ≥ 1 (got {x})"), "use a positive whole number")),
            }
        };
        let confidence = rd.confidence.unwrap_or(0.95);
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(invalid("defaults.confidence", format!("must be strictly between 0 and 1 (got {confidence})"), "use e.g. confidence = 0.95"));
        }
        let auto_bounds_share = rd.auto_bounds_share.unwrap_or(0.1);
        if !(auto_bounds_share > 0.0 && auto_bounds_share < 1.0) {
            return Err(invalid(
                "defaults.auto_bounds_share",
                format!("must be strictly between 0 and 1 (got {auto_bounds_share})"),
                "use e.g. auto_bounds_share = 0.1",
            ));
        }
        let defaults = Defaults {
            epsilon: def_eps,
            delta: def_delta,
            max_rows_per_unit: positive(rd.max_rows_per_unit, "defaults.max_rows_per_unit", 100)?,
            max_groups_per_unit: positive(rd.max_groups_per_unit, "defaults.max_groups_per_unit", 4)?,
            max_rows_per_group: positive(rd.max_rows_per_group, "defaults.max_rows_per_group", 20)?,
            mechanism: rd.mechanism.unwrap_or_default(),
            partition_selection: rd.partition_selection.unwrap_or_default(),
            confidence,
            auto_bounds: rd.auto_bounds.unwrap_or(true),
            auto_bounds_share,
            memory_limit: rd.memory_limit,
        };
        if let Some(m) = &defaults.memory_limit {
            parse_bytes(m).map_err(|e| invalid("defaults.memory_limit", e, "write a size such as \"2GiB\" or \"512MiB\""))?;
        }

        let mut tables = BTreeMap::new();
        for (name, rt) in raw.tables {
            let tkey = format!("tables.{name}");
            if !is_identifier(&name) {
                return Err(invalid(&tkey, "is not a valid table name".into(), "use lowercase letters, digits and underscores, starting with a letter"));
            }
            if rt.public && rt.privacy_unit.is_some() {
                return Err(invalid(
                    &format!("{tkey}.privacy_unit"),
                    "is set on a table declared public = true".into(),
                    "a public table holds no personal data: remove privacy_unit, or remove public = true if the table is about people",
                ));
            }
            if !rt.public && rt.privacy_unit.is_none() {
                return Err(invalid(
                    &tkey,
                    "is a private table without privacy_unit".into(),
                    &format!(
                        "name the column that identifies a person, e.g. privacy_unit = \"user_id\" under [{tkey}], or declare public = true if it holds no personal data"
                    ),
                ));
            }
            let mut columns = BTreeMap::new();
            for (cname, rc) in rt.columns {
                let ckey = format!("{tkey}.columns.{cname}");
                let bounds = match rc.bounds {
                    None => None,
                    Some(v) => {
                        if v.len() != 2 {
                            return Err(invalid(
                                &format!("{ckey}.bounds"),
                                format!("must have two numbers [lo, hi] (got {})", v.len()),
                                "write bounds = [0, 2000]",
                            ));
                        }
                        let num = |x: &toml::Value| match x {
                            toml::Value::Integer(i) => Some(*i as f64),
                            toml::Value::Float(f) => Some(*f),
                            _ => None,
                        };
                        let (lo, hi) = match (num(&v[0]), num(&v[1])) {
                            (Some(a), Some(b)) => (a, b),
                            _ => {
                                return Err(invalid(&format!("{ckey}.bounds"), "must contain numbers".into(), "write bounds = [0, 2000]"));
                            }
                        };
                        if !lo.is_finite() || !hi.is_finite() {
                            return Err(invalid(
                                &format!("{ckey}.bounds"),
                                "must be finite numbers".into(),
                                "replace inf/nan with the largest value a person can plausibly have",
                            ));
                        }
                        if lo > hi {
                            return Err(invalid(&format!("{ckey}.bounds"), format!("has lo > hi ({lo} > {hi})"), &format!("swap them: bounds = [{hi}, {lo}]")));
                        }
                        Some((lo, hi))
                    }
                };
                let domain = match rc.domain {
                    None => None,
                    Some(RawDomain { values: Some(vals), table: None, column: None }) => {
                        if vals.is_empty() {
                            return Err(invalid(&format!("{ckey}.domain"), "has an empty list of values".into(), "list every value the column may take"));
                        }
                        let mut out = Vec::new();
                        for v in vals {
                            out.push(match v {
                                toml::Value::String(s) => DomainValue::Str(s),
                                toml::Value::Integer(i) => DomainValue::Int(i),
                                toml::Value::Float(f) => DomainValue::Float(f),
                                toml::Value::Boolean(b) => DomainValue::Bool(b),
                                _ => {
                                    return Err(invalid(
                                        &format!("{ckey}.domain.values"),
                                        "contains a value that is not a string, number or boolean".into(),
                                        "list plain values, e.g. values = [\"a\", \"b\"]",
                                    ));
                                }
                            });
                        }
                        Some(DomainConfig::Values(out))
                    }
                    Some(RawDomain { values: None, table: Some(t), column }) => {
                        let column = column.unwrap_or_else(|| cname.clone());
                        Some(DomainConfig::Table { table: t, column })
                    }
                    Some(_) => {
                        return Err(invalid(
                            &format!("{ckey}.domain"),
                            "must be either { values = [...] } or { table = \"...\", column = \"...\" }".into(),
                            "use domain = { table = \"emoji_catalog\", column = \"emoji\" } or domain = { values = [\"a\", \"b\"] }",
                        ));
                    }
                };
                let ty = match &rc.ty {
                    None => None,
                    Some(t) => Some(crate::storage::schema::ColumnType::parse(t).ok_or_else(|| {
                        invalid(
                            &format!("{ckey}.type"),
                            format!("is `{t}`, not a type dpq stores"),
                            "use one of: int64, float64, boolean, timestamp, date, utf8",
                        )
                    })?),
                };
                columns.insert(cname, ColumnConfig { ty, bounds, domain });
            }
            // a declared schema is all or nothing: every column the table lists has a type
            if columns.values().any(|c| c.ty.is_some()) {
                if let Some((c, _)) = columns.iter().find(|(_, c)| c.ty.is_none()) {
                    return Err(invalid(
                        &format!("{tkey}.columns.{c}.type"),
                        "is missing while other columns of the table declare theirs".into(),
                        "declare a type for every column of the table (type = \"int64\" | \"float64\" | \"boolean\" | \"timestamp\" | \"date\" | \"utf8\"), or for none",
                    ));
                }
                if let Some(u) = &rt.privacy_unit
                    && !columns.contains_key(u)
                {
                    return Err(invalid(
                        &format!("{tkey}.columns.{u}"),
                        "(the privacy unit) is not declared while the table declares its columns' types".into(),
                        &format!("add [{tkey}.columns.{u}] with its type"),
                    ));
                }
            }
            tables.insert(name, TableConfig { public: rt.public, privacy_unit: rt.privacy_unit, one_row_per_unit: rt.one_row_per_unit, columns });
        }
        // cross-table checks: domains must point at declared public tables
        for (name, t) in &tables {
            for (cname, c) in &t.columns {
                if let Some(DomainConfig::Table { table, .. }) = &c.domain {
                    let key = format!("tables.{name}.columns.{cname}.domain");
                    match tables.get(table) {
                        None => {
                            return Err(invalid(
                                &key,
                                format!("points to table `{table}`, which is not declared"),
                                &format!("declare it with [tables.{table}] and public = true, or fix the name"),
                            ));
                        }
                        Some(tt) if !tt.public => {
                            return Err(invalid(
                                &key,
                                format!("points to table `{table}`, which is private"),
                                "a key domain must come from a public table (one holding no personal data) or a values list",
                            ));
                        }
                        _ => {}
                    }
                }
                if t.public && c.bounds.is_some() {
                    // harmless but pointless; accepted
                }
            }
        }
        let gateway = match raw.gateway {
            None => GatewayConfig::default(),
            Some(g) => GatewayConfig {
                max_connections: match g.max_connections {
                    None => None,
                    Some(n) if n >= 1 => Some(n as usize),
                    Some(n) => return Err(invalid("gateway.max_connections", format!("must be ≥ 1 (got {n})"), "use e.g. max_connections = 64")),
                },
                statement_timeout: g.statement_timeout,
                memory_per_statement: match g.memory_per_statement {
                    None => None,
                    Some(m) => {
                        parse_bytes(&m).map_err(|e| invalid("gateway.memory_per_statement", e, "write a size such as \"512MiB\" or \"2GiB\""))?;
                        Some(m)
                    }
                },
            },
        };
        Ok(Config { file: file.to_path_buf(), budget: Budget { epsilon: budget_eps, delta: budget_delta }, defaults, tables, gateway })
    }

    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.get(name)
    }
}

fn amount(v: &Option<toml::Value>, key: &str, file: &str) -> Result<Option<Amount>, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        problem,
        fix: "write a non-negative decimal number such as 0.5 or 1e-6".to_string(),
    };
    match v {
        None => Ok(None),
        Some(toml::Value::Integer(i)) => {
            if *i < 0 {
                return Err(invalid(format!("must be ≥ 0 (got {i})")));
            }
            Ok(Some(Amount::from_atto(*i as u128 * crate::privacy::amount::SCALE)))
        }
        Some(toml::Value::Float(f)) => {
            if !f.is_finite() {
                return Err(invalid(format!("must be finite (got {f})")));
            }
            if *f < 0.0 {
                return Err(invalid(format!("must be ≥ 0 (got {f})")));
            }
            Amount::from_f64(*f).map(Some).map_err(|e| invalid(e.to_string()))
        }
        Some(toml::Value::String(s)) => s.parse().map(Some).map_err(|e: crate::privacy::amount::AmountError| invalid(e.to_string())),
        Some(_) => Err(invalid("must be a number".into())),
    }
}

fn describe_toml_error(e: &toml::de::Error) -> String {
    let msg = e.message().to_string();
    let mut out = msg.clone();
    if let Some(span) = e.span() {
        out = format!("{msg} (at byte {})", span.start);
    }
    if msg.contains("unknown field") {
        out.push_str("\n  fix: remove or rename the key; see the commented template written by `dpq init`");
    }
    out
}

/// dpq.toml's text with the `epsilon` and `delta` lines of `[budget]` replaced
/// (comments and everything else untouched; amounts as exact decimal strings),
/// checked to parse and to say exactly what was asked. Nothing is written.
pub fn budget_text(file: &Path, epsilon: Amount, delta: Amount) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io { file: file.display().to_string(), source };
    let text = std::fs::read_to_string(file).map_err(io)?;
    let (epsilon, delta) = (format!("\"{epsilon}\""), format!("\"{delta}\""));
    let mut out = String::new();
    let (mut in_budget, mut seen_e, mut seen_d) = (false, false, false);
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            if in_budget {
                if !seen_e {
                    out.push_str(&format!("epsilon = {epsilon}\n"));
                    seen_e = true;
                }
                if !seen_d {
                    out.push_str(&format!("delta = {delta}\n"));
                    seen_d = true;
                }
            }
            in_budget = t.starts_with("[budget]");
        }
        let key = t.split('=').next().unwrap_or("").trim();
        if in_budget && key == "epsilon" {
            out.push_str(&format!("epsilon = {epsilon}\n"));
            seen_e = true;
            continue;
        }
        if in_budget && key == "delta" {
            out.push_str(&format!("delta = {delta}\n"));
            seen_d = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !(seen_e && seen_d) {
        if !in_budget {
            out.push_str("\n[budget]\n");
        }
        if !seen_e {
            out.push_str(&format!("epsilon = {epsilon}\n"));
        }
        if !seen_d {
            out.push_str(&format!("delta = {delta}\n"));
        }
    }
    Ok(out)
}

/// Write dpq.toml's `[budget]` (see [`budget_text`]), atomically.
pub fn write_budget(file: &Path, epsilon: Amount, delta: Amount) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io { file: file.display().to_string(), source };
    let out = budget_text(file, epsilon, delta)?;
    // the rewrite must still parse and say what was asked
    let parsed = Config::parse(&out, file)?;
    if parsed.budget.epsilon != epsilon || parsed.budget.delta != delta {
        return Err(ConfigError::Parse { file: file.display().to_string(), message: "could not rewrite [budget]; edit it to match the ledger".into() });
    }
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, &out).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)?;
    Ok(())
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_') && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parse "512MiB", "2GiB", "1.5G", "1000000" into bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let idx = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(idx);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        other => return Err(format!("unknown size unit `{other}`")),
    };
    if !(n > 0.0) {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((n * mult) as u64)
}

/// The commented dpq.toml written by `dpq init`; it describes the tables that
/// `dpq generate` produces, so init → generate → ingest works without editing.
pub const TEMPLATE: &str = r#"# dpq dataset configuration.
#
# Every number dpq releases from this dataset is differentially private with
# respect to one *privacy unit* (a person): adding or removing all of one
# person's rows changes what anyone can learn by at most the budget below,
# summed over everything ever released (see `dpq budget`).

[budget]
# Total privacy loss for the dataset's whole lifetime. Queries and reports are
# charged against it in ledger.db; when it is spent, dpq refuses to answer.
# Lowering it below what is already spent is refused.
epsilon = 10.0
# Probability that the ε guarantee fails; keep it far below 1/(number of people).
delta = 1e-6

[defaults]
# Per-query defaults; each can be overridden on the command line.
epsilon = 0.5              # --epsilon
delta = 1e-8               # --delta; needed (> 0) to GROUP BY a column without a domain
auto_bounds = true         # choose each query's contribution limits from the data (a DP
                           # release, auto_bounds_share of its ε) to minimise bias plus
                           # noise, and estimate what they cut; false: the fixed limits below
auto_bounds_share = 0.1    # share of ε spent choosing limits and estimating what they cut
# fixed limits: used when auto_bounds = false, a --max-… flag is given, or a query
# holds too few people to choose limits at its ε (dpq says so in a note)
max_rows_per_unit = 100    # L1 bound: rows one person may add to one query in total
max_groups_per_unit = 4    # L0 bound: GROUP BY groups one person may touch
max_rows_per_group = 20    # Linf bound: rows one person adds to one group
mechanism = "laplace"      # or "gaussian" (zCDP; needs delta > 0)
partition_selection = "optimal"   # or "laplace" (thresholding)
confidence = 0.95          # level of the reported confidence intervals
# memory_limit = "4GiB"    # query memory before spilling to disk

# `dpq serve` (the PostgreSQL-wire gateway); analysts and quotas: analysts.toml
# [gateway]
# max_connections = 64      # more are refused (SQLSTATE 53300)
# statement_timeout = "300s" # longer statements are cancelled (SQLSTATE 57014); "0" for none
# memory_per_statement = "1GiB" # each statement's memory before spilling to disk (default: memory_limit)

# ---- tables written by `dpq generate` ----

[tables.users]
privacy_unit = "user_id"
one_row_per_unit = true    # one row per person: duplicates are quarantined at ingest
[tables.users.columns.user_id]
type = "int64"
[tables.users.columns.age_group]
type = "utf8"
domain = { values = ["00s", "90s", "80s", "70s", "55+"] }
[tables.users.columns.signup_date]
type = "date"

[tables.messages]
privacy_unit = "user_id"
[tables.messages.columns.user_id]
type = "int64"
[tables.messages.columns.ts]
type = "timestamp"         # declared types are enforced: rows that do not parse are quarantined
[tables.messages.columns.length]
type = "int64"
bounds = [0, 2000]         # SUM/AVG/quantiles clamp message length to this range
[tables.messages.columns.emoji]
type = "utf8"
domain = { table = "emoji_catalog", column = "emoji" }
[tables.messages.columns.chat_kind]
type = "utf8"
domain = { values = ["private", "group"] }

[tables.calls]
privacy_unit = "user_id"
[tables.calls.columns.user_id]
type = "int64"
[tables.calls.columns.ts]
type = "timestamp"
[tables.calls.columns.duration_s]
type = "int64"
bounds = [0, 7200]
[tables.calls.columns.kind]
type = "utf8"
domain = { values = ["voice", "video"] }

[tables.payments]
privacy_unit = "user_id"
[tables.payments.columns.user_id]
type = "int64"
[tables.payments.columns.ts]
type = "timestamp"
[tables.payments.columns.amount_cents]
type = "int64"
bounds = [0, 100000]
[tables.payments.columns.category]
type = "utf8"
domain = { values = ["transfer", "red_packet", "groceries", "dining", "transport", "utilities", "shopping", "games", "healthcare"] }

[tables.emoji_catalog]
public = true              # holds no personal data: usable freely as keys
[tables.emoji_catalog.columns.emoji]
type = "utf8"
[tables.emoji_catalog.columns.name]
type = "utf8"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("dpq.toml"))
    }

    #[test]
    fn template_is_valid() {
        let c = parse(TEMPLATE).unwrap();
        assert_eq!(c.budget.epsilon, "10".parse().unwrap());
        assert_eq!(c.tables["messages"].privacy_unit.as_deref(), Some("user_id"));
        assert!(c.tables["emoji_catalog"].public);
        assert_eq!(c.tables["messages"].columns["length"].bounds, Some((0.0, 2000.0)));
    }

    fn err_text(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn validation_errors_name_key_and_fix() {
        let e = err_text("[budget]\nepsilon = 1\nbogus = 2\n");
        assert!(e.contains("bogus") && e.contains("dpq.toml"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[tables.t]\n");
        assert!(e.contains("tables.t") && e.contains("privacy_unit"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit='u'\n[tables.t.columns.x]\nbounds=[5,1]\n");
        assert!(e.contains("tables.t.columns.x.bounds") && e.contains("lo > hi"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit='u'\n[tables.t.columns.x]\nbounds=[0,inf]\n");
        assert!(e.contains("finite"), "{e}");
        let e = err_text("[budget]\nepsilon = 0\n");
        assert!(e.contains("budget.epsilon") && e.contains("> 0"), "{e}");
        let e = err_text("[budget]\nepsilon = -1.0\n");
        assert!(e.contains("budget.epsilon"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\ndelta = 1.0\n");
        assert!(e.contains("budget.delta") && e.contains("[0, 1)"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\ndelta = -0.1\n");
        assert!(e.contains("budget.delta"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit='u'\n[tables.t.columns.x]\ndomain={table='nope', column='c'}\n");
        assert!(e.contains("nope") && e.contains("not declared"), "{e}");
        let e = err_text("[defaults]\nepsilon=1\n");
        assert!(e.contains("budget"), "{e}");
    }

    #[test]
    fn gateway_settings_parse_and_are_checked() {
        let c = parse("[budget]\nepsilon = 1\n[gateway]\nmax_connections = 8\nstatement_timeout = \"30s\"\nmemory_per_statement = \"256MiB\"\n").unwrap();
        assert_eq!(c.gateway.max_connections, Some(8));
        assert_eq!(c.gateway.statement_timeout.as_deref(), Some("30s"));
        assert_eq!(c.gateway.memory_per_statement.as_deref(), Some("256MiB"));
        let e = err_text("[budget]\nepsilon = 1\n[gateway]\nmemory_per_statement = \"lots\"\n");
        assert!(e.contains("gateway.memory_per_statement") && e.contains("512MiB"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[gateway]\nmax_connections = 0\n");
        assert!(e.contains("gateway.max_connections"), "{e}");
        let e = err_text("[budget]\nepsilon = 1\n[gateway]\nlisten = \"0.0.0.0:5433\"\n");
        assert!(e.contains("listen"), "unknown keys are refused: {e}");
    }

    #[test]
    fn parses_bytes() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert!(parse_bytes("lots").is_err());
    }
}
