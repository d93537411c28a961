//! The native part of the `dpq` Python package: a thin layer over
//! `dpq::Session`. Answers cross as Arrow IPC streams (turned into
//! `pyarrow.Table` by `dpq/__init__.py`), everything else as JSON. The GIL is
//! released while dpq works.

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(_dpq, Error, PyException, "A dpq error; the subclasses say which phase failed.");
create_exception!(_dpq, Refused, Error, "The query was refused before any private row was read (construct, why, fix).");
create_exception!(_dpq, QueryError, Error, "The SQL or the parameters are not valid.");
create_exception!(_dpq, ConfigError, Error, "dpq.toml, analysts.toml or a report spec is not valid.");
create_exception!(_dpq, BudgetExhausted, Error, "Not enough privacy budget (the dataset's, or the analyst's quota).");
create_exception!(_dpq, LedgerError, Error, "The ledger is missing, foreign, out of date, or fails verification.");
create_exception!(_dpq, DataError, Error, "The data: files, ingest, execution.");
create_exception!(_dpq, FailedError, Error, "The question's charge ended in a recorded failure (replayed as such).");
create_exception!(_dpq, InternalError, Error, "A bug in dpq.");

fn py_err(e: dpq::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        dpq::Error::Refused { .. } => Refused::new_err(msg),
        dpq::Error::Query(_) => QueryError::new_err(msg),
        dpq::Error::Config(_) => ConfigError::new_err(msg),
        dpq::Error::Budget(_) => BudgetExhausted::new_err(msg),
        dpq::Error::Ledger(_) => LedgerError::new_err(msg),
        dpq::Error::Data(_) => DataError::new_err(msg),
        dpq::Error::Failed { .. } => FailedError::new_err(msg),
        dpq::Error::Internal(_) => InternalError::new_err(msg),
    }
}

fn runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| InternalError::new_err(format!("cannot start the runtime: {e}")))
}

/// An exact amount from a Python number or string (a float goes through its
/// shortest decimal form, `repr`).
fn amount(v: &Bound<'_, PyAny>, what: &str) -> PyResult<dpq::privacy::amount::Amount> {
    let text: String = if let Ok(s) = v.extract::<String>() { s } else { v.repr()?.extract()? };
    text.parse().map_err(|e| QueryError::new_err(format!("{what} {text}: {e}")))
}

/// A dataset opened for analysis (see `dpq.Session`).
#[pyclass(module = "dpq._dpq")]
struct Session {
    rt: tokio::runtime::Runtime,
    inner: dpq::Session,
}

#[allow(clippy::too_many_arguments)]
fn options(
    epsilon: Option<&Bound<'_, PyAny>>,
    delta: Option<&Bound<'_, PyAny>>,
    mechanism: Option<&str>,
    confidence: Option<f64>,
    max_rows_per_unit: Option<u64>,
    max_groups_per_unit: Option<u64>,
    max_rows_per_group: Option<u64>,
    auto_bounds: Option<bool>,
    fresh: bool,
) -> PyResult<dpq::QueryOptions> {
    let mut o = dpq::QueryOptions::new().fresh(fresh);
    if let Some(e) = epsilon {
        o = o.epsilon(amount(e, "epsilon")?);
    }
    if let Some(d) = delta {
        o = o.delta(amount(d, "delta")?);
    }
    if let Some(m) = mechanism {
        o = o.mechanism(match m.to_ascii_lowercase().as_str() {
            "laplace" => dpq::config::MechanismKind::Laplace,
            "gaussian" => dpq::config::MechanismKind::Gaussian,
            other => return Err(QueryError::new_err(format!("mechanism `{other}`: use \"laplace\" or \"gaussian\""))),
        });
    }
    if let Some(c) = confidence {
        o = o.confidence(c);
    }
    if let Some(n) = max_rows_per_unit {
        o = o.max_rows_per_unit(n);
    }
    if let Some(n) = max_groups_per_unit {
        o = o.max_groups_per_unit(n);
    }
    if let Some(n) = max_rows_per_group {
        o = o.max_rows_per_group(n);
    }
    if let Some(a) = auto_bounds {
        o = o.auto_bounds(a);
    }
    Ok(o)
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| InternalError::new_err(e.to_string()))
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (path, analyst=None))]
    fn new(py: Python<'_>, path: PathBuf, analyst: Option<String>) -> PyResult<Session> {
        let rt = runtime()?;
        let inner = py.detach(|| rt.block_on(dpq::Session::open_with(&path, dpq::SessionOptions { analyst, ..Default::default() }))).map_err(py_err)?;
        Ok(Session { rt, inner })
    }

    /// Who is asking (recorded with every charge).
    #[getter]
    fn analyst(&self) -> String {
        self.inner.analyst().to_string()
    }

    /// Answer a query: (Arrow IPC stream bytes, JSON of the privacy metadata).
    #[pyo3(signature = (sql, epsilon=None, delta=None, mechanism=None, confidence=None, max_rows_per_unit=None, max_groups_per_unit=None, max_rows_per_group=None, auto_bounds=None, fresh=false))]
    #[allow(clippy::too_many_arguments)]
    fn query<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        epsilon: Option<Bound<'py, PyAny>>,
        delta: Option<Bound<'py, PyAny>>,
        mechanism: Option<String>,
        confidence: Option<f64>,
        max_rows_per_unit: Option<u64>,
        max_groups_per_unit: Option<u64>,
        max_rows_per_group: Option<u64>,
        auto_bounds: Option<bool>,
        fresh: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, String)> {
        let o = options(
            epsilon.as_ref(),
            delta.as_ref(),
            mechanism.as_deref(),
            confidence,
            max_rows_per_unit,
            max_groups_per_unit,
            max_rows_per_group,
            auto_bounds,
            fresh,
        )?;
        let answer = py.detach(|| self.rt.block_on(self.inner.query(&sql, &o))).map_err(py_err)?;
        let meta = serde_json::json!({ "privacy": answer.privacy, "bias": answer.bias, "notes": answer.notes, "json": answer.to_json() });
        let mut buf = Vec::new();
        {
            let mut w = dpq::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &answer.batch.schema()).map_err(|e| InternalError::new_err(e.to_string()))?;
            w.write(&answer.batch).map_err(|e| InternalError::new_err(e.to_string()))?;
            w.finish().map_err(|e| InternalError::new_err(e.to_string()))?;
        }
        Ok((PyBytes::new(py, &buf), meta.to_string()))
    }

    /// What a query would cost and how accurate it would be, as JSON (and its text).
    #[pyo3(signature = (sql, epsilon=None, delta=None, mechanism=None, confidence=None, max_rows_per_unit=None, max_groups_per_unit=None, max_rows_per_group=None, auto_bounds=None))]
    #[allow(clippy::too_many_arguments)]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        epsilon: Option<Bound<'py, PyAny>>,
        delta: Option<Bound<'py, PyAny>>,
        mechanism: Option<String>,
        confidence: Option<f64>,
        max_rows_per_unit: Option<u64>,
        max_groups_per_unit: Option<u64>,
        max_rows_per_group: Option<u64>,
        auto_bounds: Option<bool>,
    ) -> PyResult<(String, String)> {
        let o = options(
            epsilon.as_ref(),
            delta.as_ref(),
            mechanism.as_deref(),
            confidence,
            max_rows_per_unit,
            max_groups_per_unit,
            max_rows_per_group,
            auto_bounds,
            false,
        )?;
        let e = py.detach(|| self.rt.block_on(self.inner.explain(&sql, &o))).map_err(py_err)?;
        Ok((json(&e)?, e.to_text()))
    }

    /// The budget: spent, remaining, under which rule (JSON).
    fn budget(&self, py: Python<'_>) -> PyResult<String> {
        let s = py.detach(|| self.inner.budget()).map_err(py_err)?;
        Ok(serde_json::json!({
            "dataset": s.dataset,
            "accountant": s.budget.rule.to_string(),
            "total_epsilon": s.budget.epsilon,
            "total_delta": s.budget.delta,
            "spent_epsilon": s.epsilon_spent,
            "spent_delta": s.totals.delta,
            "remaining_epsilon": s.remaining_epsilon(),
            "remaining_delta": s.remaining_delta(),
            "entries": s.entries,
            "head": s.head.to_string(),
        })
        .to_string())
    }

    /// Verify the ledger (optionally against a published head): JSON report.
    #[pyo3(signature = (anchor=None))]
    fn verify(&self, py: Python<'_>, anchor: Option<String>) -> PyResult<String> {
        let head = anchor.map(|a| a.parse::<dpq::ledger::anchor::Head>().map_err(QueryError::new_err)).transpose()?;
        let v = py.detach(|| -> Result<dpq::ledger::VerifyReport, dpq::Error> { Ok(self.inner.ledger()?.verify(head.as_ref())?) }).map_err(py_err)?;
        json(&v)
    }

    /// Plan a report spec (a TOML file): JSON of the plan and its text.
    fn report_plan(&self, py: Python<'_>, spec: PathBuf) -> PyResult<(String, String)> {
        let spec = dpq::session::Spec::load(&spec).map_err(|e| ConfigError::new_err(e.to_string()))?;
        let p = py.detach(|| self.rt.block_on(self.inner.report_plan(&spec))).map_err(py_err)?;
        Ok((json(&p)?, p.to_text()))
    }

    /// Run a report (charged once); write index.html, report.md and report.json
    /// into `out` if given. Returns the report as JSON.
    #[pyo3(signature = (spec, out=None, fresh=false))]
    fn report(&self, py: Python<'_>, spec: PathBuf, out: Option<PathBuf>, fresh: bool) -> PyResult<String> {
        let spec = dpq::session::Spec::load(&spec).map_err(|e| ConfigError::new_err(e.to_string()))?;
        let r = py
            .detach(|| -> Result<dpq::session::ReportResult, dpq::Error> {
                let plan = self.rt.block_on(self.inner.report_plan(&spec))?;
                let r = self.rt.block_on(self.inner.report(&spec, &plan, fresh))?;
                if let Some(dir) = &out {
                    dpq::report::write(&r, dir)?;
                }
                Ok(r)
            })
            .map_err(py_err)?;
        json(&r)
    }

    /// See the data as it is now (after the data owner ingested more).
    fn reload(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.rt.block_on(self.inner.reload())).map_err(py_err)
    }
}

/// Ingest files into a declared table of the dataset in `path` — the data
/// owner's operation (it writes private data), not an analyst's: it is not a
/// method of `Session`.
#[pyfunction]
#[pyo3(signature = (path, table, files, force=false, format=None))]
fn ingest(py: Python<'_>, path: PathBuf, table: String, files: Vec<PathBuf>, force: bool, format: Option<String>) -> PyResult<String> {
    let format = format.map(|f| f.parse::<dpq::storage::FileFormat>().map_err(QueryError::new_err)).transpose()?;
    let s = py
        .detach(|| -> Result<dpq::ingest::IngestSummary, dpq::Error> {
            let ds = dpq::dataset::Dataset::open(&path)?;
            let id = ds.id("owner")?;
            let o = dpq::ingest::IngestOptions { dataset: Some(id), table, files, force, format, progress: dpq::progress::silent() };
            Ok(dpq::ingest::ingest(&ds.dir, &ds.config, &o)?)
        })
        .map_err(py_err)?;
    json(&s)
}

/// Create a dataset directory with a commented dpq.toml.
#[pyfunction]
fn init(path: PathBuf) -> PyResult<()> {
    dpq::dataset::Dataset::init(&path).map(|_| ()).map_err(|e| py_err(e.into()))
}

/// Generate synthetic event logs of a messaging app (JSON summary).
#[pyfunction]
#[pyo3(signature = (users, days, out, seed=42, format="csv", start="2025-01-01", messages_per_day=2.0))]
#[allow(clippy::too_many_arguments)]
fn generate(py: Python<'_>, users: u64, days: u32, out: PathBuf, seed: u64, format: &str, start: &str, messages_per_day: f64) -> PyResult<String> {
    let format: dpq::storage::FileFormat = format.parse().map_err(QueryError::new_err)?;
    let start = start.parse().map_err(|e| QueryError::new_err(format!("start {start}: {e} (use YYYY-MM-DD)")))?;
    let o = dpq::generate::GenerateOptions { users, days, out, seed, format, start, messages_per_day, progress: dpq::progress::silent() };
    let s = py.detach(|| dpq::generate::generate(&o)).map_err(|e| DataError::new_err(e.to_string()))?;
    json(&s)
}

#[pymodule]
fn _dpq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    dpq::install_panic_hook();
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(ingest, m)?)?;
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("Refused", py.get_type::<Refused>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("BudgetExhausted", py.get_type::<BudgetExhausted>())?;
    m.add("LedgerError", py.get_type::<LedgerError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("FailedError", py.get_type::<FailedError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
