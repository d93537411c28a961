//! [`Session`]: the library's only door to private data.
//!
//! A session opens a dataset directory with the ledger bound to it. Every
//! answer computed from private rows goes through [`Session::query`] or
//! [`Session::report`], which run the one release protocol (replay a stored
//! answer, or charge → compute → store → return); nothing else in the public
//! API reads private rows.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dpq::Error> {
//! let s = dpq::Session::open("mydata").await?;
//! let answer = s.query("SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind", &dpq::QueryOptions::new().epsilon("0.5".parse()?)).await?;
//! println!("{:?}", answer.batch);
//! # Ok(()) }
//! ```
//!
//! The engine's internals are not reachable from outside the crate: there is
//! no way to compute a noisy answer without its charge, or to scan a private
//! table without the rewrite.
//!
//! ```compile_fail
//! // the engine, its bounded executor and its table providers are crate-private
//! let _ = dpq::engine::Engine::compute;
//! ```
//!
//! ```compile_fail
//! let _ = dpq::engine::bounded::bounded_totals;
//! ```

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::config::MechanismKind;
use crate::dataset::Dataset;
use crate::engine::{Engine, Prepared};
use crate::ledger::{Ledger, LedgerError, Status};
use crate::privacy::amount::Amount;

pub use crate::engine::Caller;
pub use crate::engine::explain::Explanation;
pub use crate::engine::plan::QueryParams;
pub use crate::engine::result::{Bias, ColumnMeta, Noisy, Privacy, QueryResult};
pub use crate::engine::session::Backend;
pub use crate::report::spec::Spec;
pub use crate::report::{ReportPlan, ReportResult};

/// Errors by phase: what the user can fix (the query, the parameters, the
/// configuration), the budget, the ledger, the data, a recorded failure, and
/// dpq's own bugs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused before any private row was read: the construct, why, and the way out.
    #[error("refused: {construct}\n  why: {why}\n  fix: {fix}")]
    Refused { construct: String, why: String, fix: String },
    /// The SQL or the parameters.
    #[error("{0}")]
    Query(String),
    /// dpq.toml, analysts.toml or a report spec.
    #[error("{0}")]
    Config(String),
    /// Not enough budget (the dataset's or the analyst's quota).
    #[error("{0}")]
    Budget(String),
    /// The ledger: missing, foreign, failing verification, out of date with dpq.toml.
    #[error("{0}")]
    Ledger(String),
    /// The data: files, ingest, execution, memory.
    #[error("{0}")]
    Data(String),
    /// The question's charge ended in a recorded failure (replayed as such).
    #[error("{message}")]
    Failed { entry: i64, message: String },
    /// A dpq bug.
    #[error("internal error (a bug in dpq): {0}\n  please report it with what you ran; nothing was released")]
    Internal(String),
}

impl Error {
    /// The kind, as a short word (for bindings and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Refused { .. } => "refused",
            Error::Query(_) => "query",
            Error::Config(_) => "config",
            Error::Budget(_) => "budget",
            Error::Ledger(_) => "ledger",
            Error::Data(_) => "data",
            Error::Failed { .. } => "failed",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<crate::engine::EngineError> for Error {
    fn from(e: crate::engine::EngineError) -> Error {
        use crate::engine::EngineError as E;
        match e {
            E::Refused { construct, why, fix } => Error::Refused { construct, why, fix },
            E::Sql(_) | E::Invalid(_) => Error::Query(e.to_string()),
            E::Ledger(l) => l.into(),
            E::Internal(m) => Error::Internal(m),
            E::Failed { entry, .. } => Error::Failed { entry, message: e.to_string() },
            E::Execution | E::Data(_) | E::Manifest(_) | E::PostProcessing => Error::Data(e.to_string()),
        }
    }
}

impl From<LedgerError> for Error {
    fn from(e: LedgerError) -> Error {
        match e {
            LedgerError::Exhausted { .. } | LedgerError::Quota { .. } | LedgerError::BelowSpent { .. } => Error::Budget(e.to_string()),
            LedgerError::Internal(m) => Error::Internal(m),
            other => Error::Ledger(other.to_string()),
        }
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Error {
        Error::Config(e.to_string())
    }
}

impl From<crate::dataset::DatasetError> for Error {
    fn from(e: crate::dataset::DatasetError) -> Error {
        match e {
            crate::dataset::DatasetError::Config(c) => c.into(),
            other => Error::Data(other.to_string()),
        }
    }
}

impl From<crate::dataset::DatasetLedgerError> for Error {
    fn from(e: crate::dataset::DatasetLedgerError) -> Error {
        match e {
            crate::dataset::DatasetLedgerError::Ledger(l) => l.into(),
            other => Error::Data(other.to_string()),
        }
    }
}

impl From<crate::ingest::IngestError> for Error {
    fn from(e: crate::ingest::IngestError) -> Error {
        Error::Data(e.to_string())
    }
}

impl From<crate::report::ReportError> for Error {
    fn from(e: crate::report::ReportError) -> Error {
        use crate::report::ReportError as R;
        match e {
            R::Spec(_) => Error::Config(e.to_string()),
            R::Section { section, source } => match Error::from(source) {
                Error::Refused { construct, why, fix } => Error::Refused { construct: format!("section `{section}`: {construct}"), why, fix },
                Error::Query(m) => Error::Query(format!("section `{section}`: {m}")),
                other => other,
            },
            R::Plan { .. } => Error::Query(e.to_string()),
            R::TargetsTooCostly { .. } => Error::Budget(e.to_string()),
            R::Engine(x) => x.into(),
            R::Ledger(l) => l.into(),
            R::Io { .. } => Error::Data(e.to_string()),
        }
    }
}

impl From<crate::privacy::amount::AmountError> for Error {
    fn from(e: crate::privacy::amount::AmountError) -> Error {
        Error::Query(e.to_string())
    }
}

/// A result for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a session runs.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Who is asking (recorded with every charge); default: `$DPQ_ANALYST`, else the OS user.
    pub analyst: Option<String>,
    /// Query memory before spilling to disk; default: dpq.toml's `memory_limit`.
    pub memory_limit: Option<u64>,
    /// Where bounded plans run.
    pub backend: Backend,
}

/// Per-query privacy parameters; what is not set comes from dpq.toml's
/// `[defaults]`. Built with the methods below:
/// `QueryOptions::new().epsilon(e).delta(d).fresh(true)`.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    // crate-visible: the gateway keeps a connection's `SET dpq.…` settings as
    // QueryOptions and changes them field by field (and `RESET` back to None)
    pub(crate) epsilon: Option<Amount>,
    pub(crate) delta: Option<Amount>,
    pub(crate) mechanism: Option<MechanismKind>,
    pub(crate) confidence: Option<f64>,
    pub(crate) max_rows_per_unit: Option<u64>,
    pub(crate) max_groups_per_unit: Option<u64>,
    pub(crate) max_rows_per_group: Option<u64>,
    pub(crate) bounds: Option<bool>,
    pub(crate) fresh: bool,
}

impl QueryOptions {
    pub fn new() -> QueryOptions {
        QueryOptions::default()
    }
    /// ε to spend (> 0).
    pub fn epsilon(mut self, e: Amount) -> Self {
        self.epsilon = Some(e);
        self
    }
    /// δ to spend (< 1; needed to group by a column without a declared domain).
    pub fn delta(mut self, d: Amount) -> Self {
        self.delta = Some(d);
        self
    }
    pub fn mechanism(mut self, m: MechanismKind) -> Self {
        self.mechanism = Some(m);
        self
    }
    /// Level of the reported intervals, in (0, 1).
    pub fn confidence(mut self, c: f64) -> Self {
        self.confidence = Some(c);
        self
    }
    /// L1: rows one person adds in total (fixes the limits: no choice from the data).
    pub fn max_rows_per_unit(mut self, n: u64) -> Self {
        self.max_rows_per_unit = Some(n);
        self
    }
    /// L0: groups one person may touch (fixes the limits).
    pub fn max_groups_per_unit(mut self, n: u64) -> Self {
        self.max_groups_per_unit = Some(n);
        self
    }
    /// Linf: rows one person adds to one group (fixes the limits).
    pub fn max_rows_per_group(mut self, n: u64) -> Self {
        self.max_rows_per_group = Some(n);
        self
    }
    /// Choose the limits from the data (`true`) or use dpq.toml's fixed ones
    /// (`false`); default: dpq.toml's `auto_bounds`, unless limits are given.
    pub fn auto_bounds(mut self, auto: bool) -> Self {
        self.bounds = Some(auto);
        self
    }
    /// Draw new noise (and pay again) even if the question was answered before.
    pub fn fresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// The parameters these options give on `ds`, checked.
    pub fn params(&self, ds: &Dataset) -> Result<QueryParams> {
        if self.epsilon.is_some_and(|e| e.is_zero()) {
            return Err(Error::Query("ε must be > 0".into()));
        }
        if self.delta.is_some_and(|d| d >= Amount::ONE) {
            return Err(Error::Query("δ must be < 1".into()));
        }
        if let Some(c) = self.confidence
            && !(c > 0.0 && c < 1.0)
        {
            return Err(Error::Query(format!("confidence {c}: must be strictly between 0 and 1 (e.g. 0.95)")));
        }
        for (name, v) in
            [("max_rows_per_unit", self.max_rows_per_unit), ("max_groups_per_unit", self.max_groups_per_unit), ("max_rows_per_group", self.max_rows_per_group)]
        {
            if v == Some(0) {
                return Err(Error::Query(format!("{name} must be ≥ 1")));
            }
        }
        Ok(crate::engine::params_from(
            &ds.config,
            self.epsilon,
            self.delta,
            self.max_rows_per_unit,
            self.max_groups_per_unit,
            self.max_rows_per_group,
            self.mechanism,
            self.confidence,
            self.bounds,
        ))
    }
}

/// A released answer: an Arrow record batch and what it cost.
///
/// The batch has the query's output columns in order. A noisy column `c`
/// holds the released value, followed by three sibling Float64 columns
/// `c_stddev`, `c_ci_low` and `c_ci_high` (the noise's standard deviation and
/// the confidence interval). Key columns have their own types (timestamps and
/// dates as Arrow timestamps and dates). An empty answer keeps its schema.
#[derive(Debug, Clone)]
pub struct Answer {
    pub batch: RecordBatch,
    /// What the answer cost and where it is recorded (`None` for public data).
    pub privacy: Option<PrivacyInfo>,
    /// What bounding each person's contribution cut.
    pub bias: Option<Bias>,
    pub notes: Vec<String>,
    /// The answer as released and stored (JSON-shaped).
    pub result: QueryResult,
}

/// Typed privacy metadata of an answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrivacyInfo {
    /// Spent by this call (zero when replayed).
    pub epsilon: Amount,
    pub delta: Amount,
    /// Charged when the answer was first computed.
    pub charged_epsilon: Amount,
    pub charged_delta: Amount,
    /// Left of the dataset's budget, under the governing rule.
    pub remaining_epsilon: Amount,
    pub remaining_delta: Amount,
    /// The ledger entry of the charge.
    pub entry: Option<i64>,
    pub replayed: bool,
    pub mechanism: String,
    /// The contribution limits applied.
    pub limits: Option<crate::privacy::bounding::Family>,
    pub bounding: String,
    pub unit: String,
    pub analyst: String,
    pub result_hash: Option<String>,
}

impl Answer {
    fn from_result(r: QueryResult) -> Answer {
        let a = |s: &str| s.parse::<Amount>().unwrap_or(Amount::ZERO);
        let privacy = r.privacy.as_ref().map(|p| PrivacyInfo {
            epsilon: a(&p.epsilon),
            delta: a(&p.delta),
            charged_epsilon: a(&p.charged_epsilon),
            charged_delta: a(&p.charged_delta),
            remaining_epsilon: a(&p.remaining_epsilon),
            remaining_delta: a(&p.remaining_delta),
            entry: p.entry,
            replayed: p.replayed,
            mechanism: p.mechanism.clone(),
            limits: r.family,
            bounding: p.bounding.clone(),
            unit: p.unit.clone(),
            analyst: p.analyst.clone(),
            result_hash: p.result_hash.clone(),
        });
        Answer { batch: record_batch(&r), privacy, bias: r.bias.clone(), notes: r.notes.clone(), result: r }
    }

    /// The answer as dpq's JSON output (`dpq query --format json`).
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.result;
        let columns: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        serde_json::json!({
            "columns": columns,
            "column_types": r.columns,
            "rows": r.rows,
            "privacy": r.privacy,
            "bias": r.bias,
            "notes": r.notes,
        })
    }
}

/// The Arrow form of a released result (see [`Answer`]).
fn record_batch(r: &QueryResult) -> RecordBatch {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let n = r.rows.len();
    let cell = |i: usize, name: &str| r.rows[i].get(name).cloned().unwrap_or(serde_json::Value::Null);
    for c in &r.columns {
        let ty: DataType = c.data_type.parse().unwrap_or(DataType::Utf8);
        let values: Vec<serde_json::Value> =
            (0..n).map(|i| if c.noisy { cell(i, &c.name).get("value").cloned().unwrap_or_default() } else { cell(i, &c.name) }).collect();
        arrays.push(typed_array(&values, &ty));
        fields.push(Field::new(&c.name, arrays.last().unwrap().data_type().clone(), true));
        if c.noisy {
            for k in ["stddev", "ci_low", "ci_high"] {
                let v: Float64Array = (0..n).map(|i| cell(i, &c.name).get(k).and_then(|x| x.as_f64())).collect();
                fields.push(Field::new(format!("{}_{k}", c.name), DataType::Float64, true));
                arrays.push(Arc::new(v));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns of one length")
}

/// JSON values as an array of `ty` (numbers and strings cast; what does not
/// cast stays text).
fn typed_array(values: &[serde_json::Value], ty: &DataType) -> ArrayRef {
    use datafusion::arrow::compute::cast;
    let all_int = values.iter().all(|v| v.is_null() || v.as_i64().is_some());
    let all_num = values.iter().all(|v| v.is_null() || v.is_number());
    let base: ArrayRef = if (ty.is_integer() && all_int) || (all_int && !values.is_empty() && ty.is_numeric()) {
        Arc::new(values.iter().map(|v| v.as_i64()).collect::<Int64Array>())
    } else if all_num && ty.is_numeric() {
        Arc::new(values.iter().map(|v| v.as_f64()).collect::<Float64Array>())
    } else if values.is_empty() {
        return new_null_array(ty, 0);
    } else {
        Arc::new(
            values
                .iter()
                .map(|v| match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect::<StringArray>(),
        )
    };
    cast(&base, ty).unwrap_or(base)
}

/// The library's door to a dataset.
pub struct Session {
    ds: Dataset,
    engine: tokio::sync::RwLock<Arc<Engine>>,
    analyst: String,
    options: SessionOptions,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("dir", &self.ds.dir).field("analyst", &self.analyst).finish()
    }
}

impl Session {
    /// Open the dataset in `dir` (holding dpq.toml) with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Session> {
        Session::open_with(dir, SessionOptions::default()).await
    }

    /// Open the dataset in `dir` with `options`.
    pub async fn open_with(dir: impl AsRef<Path>, options: SessionOptions) -> Result<Session> {
        crate::engine::total::install_panic_hook();
        let ds = Dataset::open(dir.as_ref())?;
        let analyst = crate::ledger::analyst(options.analyst.as_deref());
        let engine = Session::engine_for(&ds, &options).await?;
        Ok(Session { ds, engine: tokio::sync::RwLock::new(Arc::new(engine)), analyst, options })
    }

    async fn engine_for(ds: &Dataset, options: &SessionOptions) -> Result<Engine> {
        let mem = match options.memory_limit {
            Some(m) => Some(m),
            None => ds.config.defaults.memory_limit.as_deref().map(crate::config::parse_bytes).transpose().map_err(Error::Config)?,
        };
        Ok(Engine::open_on(ds, mem, options.backend.clone()).await?)
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }

    /// Who is asking.
    pub fn analyst(&self) -> &str {
        &self.analyst
    }

    /// The dataset's ledger (budget, log, verification, budget changes).
    pub fn ledger(&self) -> Result<Ledger> {
        Ok(self.ds.ledger(&self.analyst)?)
    }

    /// The budget, spent and remaining.
    pub fn budget(&self) -> Result<Status> {
        Ok(self.ledger()?.status()?)
    }

    fn caller(&self) -> Result<Caller> {
        let quota = crate::config::analysts::Analysts::load(&self.ds.dir)?.quota(&self.analyst);
        Ok(Caller { analyst: self.analyst.clone(), quota })
    }

    async fn engine(&self) -> Arc<Engine> {
        self.engine.read().await.clone()
    }

    /// What `sql` would cost and how accurate it would be. Spends nothing,
    /// reads no private rows.
    pub async fn explain(&self, sql: &str, options: &QueryOptions) -> Result<Explanation> {
        let params = options.params(&self.ds)?;
        let engine = self.engine().await;
        let prepared = engine.prepare(sql, &params).await?;
        let ledger = self.ledger()?;
        let recent = crate::engine::explain::recent_limits(&ledger, &prepared);
        Ok(crate::engine::explain::explain(&prepared, Some(ledger.status()?.remaining_epsilon().to_f64()), recent)?)
    }

    /// Answer `sql` with differential privacy: a stored answer to the same
    /// question is replayed at no cost; otherwise the query is charged, run,
    /// its answer stored in the ledger and returned.
    pub async fn query(&self, sql: &str, options: &QueryOptions) -> Result<Answer> {
        let params = options.params(&self.ds)?;
        let engine = self.engine().await;
        let prepared = engine.prepare(sql, &params).await?;
        let mut ledger = self.ledger()?;
        if matches!(prepared, Prepared::Dp { .. }) {
            ledger.ensure_current()?;
        }
        let r = engine.run(&prepared, &mut ledger, options.fresh, &self.caller()?).await?;
        Ok(Answer::from_result(r))
    }

    /// The Arrow schema `sql`'s answer will have (the [`Answer::batch`] columns,
    /// intervals included), without running it: spends nothing, reads no
    /// private rows. A query that would be refused is refused here.
    pub async fn describe(&self, sql: &str, options: &QueryOptions) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let params = options.params(&self.ds)?;
        let engine = self.engine().await;
        let schema = match engine.prepare(sql, &params).await? {
            Prepared::Public { plan, .. } => Arc::new(plan.schema().as_arrow().clone()),
            Prepared::Dp { query, .. } => crate::engine::release::output_schema(&query)?,
        };
        let empty = RecordBatch::new_empty(schema);
        Ok(record_batch(&crate::engine::release::to_result(&[empty], 0.95)).schema())
    }

    /// See the data as it is now (after the data owner ingested more).
    pub async fn reload(&self) -> Result<()> {
        let engine = Session::engine_for(&self.ds, &self.options).await?;
        *self.engine.write().await = Arc::new(engine);
        Ok(())
    }

    /// Plan a report: each section's ε and expected error. Spends nothing.
    pub async fn report_plan(&self, spec: &Spec) -> Result<ReportPlan> {
        let engine = self.engine().await;
        let remaining = self.budget()?.remaining_epsilon().to_f64();
        Ok(crate::report::plan(&engine, &self.ds, spec, remaining).await?)
    }

    /// Run a planned report: charged once, stored, replayed when asked again
    /// (unless `fresh`).
    pub async fn report(&self, spec: &Spec, plan: &ReportPlan, fresh: bool) -> Result<ReportResult> {
        let engine = self.engine().await;
        let mut ledger = self.ledger()?;
        ledger.ensure_current()?;
        Ok(crate::report::run(&engine, spec, plan, &mut ledger, fresh, &self.caller()?).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_an_arrow_batch_with_sibling_interval_columns() {
        let r: QueryResult = serde_json::from_value(serde_json::json!({
            "columns": [
                {"name": "day", "type": "Date32", "noisy": false},
                {"name": "n", "type": "Int64", "noisy": true}
            ],
            "rows": [
                {"day": "2025-01-02", "n": {"value": 7, "stddev": 1.5, "ci_low": 4.0, "ci_high": 10.0, "confidence": 0.95}}
            ],
            "privacy": null,
            "notes": []
        }))
        .unwrap();
        let a = Answer::from_result(r);
        let schema = a.batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["day", "n", "n_stddev", "n_ci_low", "n_ci_high"]);
        assert_eq!(a.batch.schema().field(0).data_type(), &DataType::Date32);
        assert_eq!(a.batch.schema().field(1).data_type(), &DataType::Int64);
        // an empty answer keeps its schema
        let empty: QueryResult = serde_json::from_value(serde_json::json!({
            "columns": [{"name": "k", "type": "Utf8", "noisy": false}, {"name": "n", "type": "Int64", "noisy": true}],
            "rows": [], "privacy": null, "notes": []
        }))
        .unwrap();
        let e = Answer::from_result(empty);
        assert_eq!(e.batch.num_rows(), 0);
        assert_eq!(e.batch.num_columns(), 5);
    }
}
