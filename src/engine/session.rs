//! DataFusion sessions over a dataset: tables from the manifests, the guard on
//! private tables, the `clamp` function, memory limits with spilling.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::error::{EngineError, Result};
use super::guard::{PrivateTable, ScanToken};
use crate::config::Config;
use crate::storage::manifest::Manifest;
use crate::storage::schema::arrow_schema;

/// What the engine knows about a dataset's tables.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub manifest: Manifest,
    pub providers: Arc<dyn TableProvider>,
}

/// Where bounded plans execute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// In this process (DataFusion).
    #[default]
    Local,
    /// On an Apache DataFusion Ballista cluster: `df://host:port`, or
    /// `standalone` for an in-process scheduler and executor.
    Ballista(String),
}

/// Sessions over one dataset.
pub struct Sessions {
    /// Tables by name: the raw (unguarded) providers.
    pub tables: BTreeMap<String, TableInfo>,
    pub config: Config,
    memory_limit: Option<u64>,
    pub backend: Backend,
    /// Rows bounded plans have returned to this process (every pass): with
    /// bounding in the engine, about one per group, whatever the number of people.
    pub driver_rows: Arc<std::sync::atomic::AtomicU64>,
    /// Partitions per query (default: the number of cores).
    pub partitions: Option<usize>,
}

pub fn clamp_udf() -> ScalarUDF {
    create_udf(
        "clamp",
        vec![DataType::Float64, DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let n = args.iter().find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                _ => None,
            });
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let get = |i: usize| arrays[i].as_any().downcast_ref::<Float64Array>().cloned().expect("float64 argument");
            let (x, lo, hi) = (get(0), get(1), get(2));
            let out: Float64Array = (0..x.len())
                .map(|i| {
                    if x.is_null(i) || lo.is_null(i) || hi.is_null(i) {
                        None
                    } else if x.value(i).is_nan() {
                        Some(f64::NAN)
                    } else {
                        Some(x.value(i).max(lo.value(i)).min(hi.value(i)))
                    }
                })
                .collect();
            let out: ArrayRef = Arc::new(out);
            Ok(match n {
                Some(_) => ColumnarValue::Array(out),
                None => ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&out, 0)?),
            })
        }),
    )
}

/// dpq's own functions: `clamp` and every totality wrapper the rewrite can put
/// in a plan (for registries that resolve functions by name, such as Ballista's).
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub fn dpq_functions() -> Vec<Arc<ScalarUDF>> {
    let defaults = SessionContext::new();
    let inner: Vec<Arc<ScalarUDF>> = super::analyze::expr::allowed::CONTRACTS
        .iter()
        .filter(|c| c.totality == super::analyze::expr::allowed::Totality::Wrapped)
        .filter_map(|c| defaults.state().scalar_functions().get(c.name).cloned())
        .collect();
    let mut out = super::total::registry(&inner);
    out.push(Arc::new(clamp_udf()));
    out.push(super::bound_op::log2_bin_udf());
    out
}

/// The per-person aggregates under the totality wrapper (for registries that
/// resolve functions by name, such as Ballista's).
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub fn dpq_aggregate_functions() -> Vec<Arc<datafusion::logical_expr::AggregateUDF>> {
    let defaults = SessionContext::new();
    let state = defaults.state();
    let mut out: Vec<_> = state.aggregate_functions().values().map(|f| super::total::total_agg(f.clone())).collect();
    out.push(super::bound_op::bound_udaf());
    out.push(super::bound_op::total_udaf());
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out.dedup_by(|a, b| a.name() == b.name());
    out
}

impl Sessions {
    pub fn new(data: &Path, config: &Config, memory_limit: Option<u64>) -> Result<Sessions> {
        let data = std::fs::canonicalize(data).map_err(|e| EngineError::Data(format!("cannot open {}: {e}", data.display())))?;
        let mut tables = BTreeMap::new();
        for name in config.tables.keys() {
            let Some(manifest) = Manifest::load(&data, name)? else { continue };
            let paths = manifest.part_paths(&data)?;
            if paths.is_empty() {
                continue;
            }
            let urls = paths.iter().map(|p| ListingTableUrl::parse(p.to_string_lossy().as_ref()).map_err(super::error::sql)).collect::<Result<Vec<_>>>()?;
            let opts = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let cfg = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(opts).with_schema(arrow_schema(&manifest.schema));
            let table = ListingTable::try_new(cfg).map_err(super::error::sql)?;
            tables.insert(name.clone(), TableInfo { manifest, providers: Arc::new(table) });
        }
        Ok(Sessions { tables, config: config.clone(), memory_limit, backend: Backend::Local, partitions: None, driver_rows: Default::default() })
    }

    fn context(&self, token: bool) -> Result<SessionContext> {
        let threads = self.partitions.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        let mut cfg = SessionConfig::new().with_target_partitions(threads).with_information_schema(false);
        if token {
            cfg = cfg.with_extension(Arc::new(ScanToken(())));
        }
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = self.memory_limit {
            rt = rt.with_memory_pool(Arc::new(FairSpillPool::new(limit as usize)));
        }
        let runtime = rt.build_arc().map_err(super::error::sql)?;
        let state = SessionStateBuilder::new()
            .with_config(cfg)
            .with_runtime_env(runtime)
            .with_default_features()
            // bounded plans shuffle once, by person (after DataFusion's own rules)
            .with_physical_optimizer_rule(Arc::new(super::one_shuffle::OneShuffle))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(clamp_udf());
        ctx.register_udf(super::bound_op::log2_bin_udf().as_ref().clone());
        ctx.register_udaf(super::bound_op::bound_udaf().as_ref().clone());
        ctx.register_udaf(super::bound_op::total_udaf().as_ref().clone());
        // VARIANCE / VARIANCE_POP as in most SQL dialects
        use datafusion::functions_aggregate::variance::{var_pop_udaf, var_samp_udaf};
        ctx.register_udaf(var_samp_udaf().as_ref().clone().with_aliases(["variance", "var_samp", "var_sample"]));
        ctx.register_udaf(var_pop_udaf().as_ref().clone().with_aliases(["variance_pop", "var_pop", "var_population"]));
        for (name, info) in &self.tables {
            let public = self.config.table(name).map(|t| t.public).unwrap_or(false);
            let provider: Arc<dyn TableProvider> =
                if public { info.providers.clone() } else { Arc::new(PrivateTable { name: name.clone(), inner: info.providers.clone() }) };
            ctx.register_table(name.as_str(), provider).map_err(super::error::sql)?;
        }
        Ok(ctx)
    }

    /// A session for planning and public queries: private tables cannot be scanned.
    pub fn planning(&self) -> Result<SessionContext> {
        self.context(false)
    }

    /// A session that may scan private tables; only the bounded executor uses it.
    pub(super) async fn bounded(&self) -> Result<SessionContext> {
        match &self.backend {
            Backend::Local => self.context(true),
            #[cfg(feature = "ballista")]
            Backend::Ballista(url) => {
                use ballista::prelude::{SessionConfigExt, SessionContextExt};
                use datafusion::execution::FunctionRegistry;
                let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
                let mut state =
                    SessionStateBuilder::new().with_config(SessionConfig::new_with_ballista().with_target_partitions(threads)).with_default_features().build();
                // the scheduler and (standalone) executors resolve dpq's functions by name
                for f in dpq_functions() {
                    state.register_udf(f).map_err(super::error::sql)?;
                }
                for f in dpq_aggregate_functions() {
                    state.register_udaf(f).map_err(super::error::sql)?;
                }
                let ctx = if url == "standalone" { SessionContext::standalone_with_state(state).await } else { SessionContext::remote_with_state(url, state).await }
                    .map_err(|_| EngineError::Data(format!("cannot reach the Ballista scheduler at {url}\n  hint: start it with `dpq cluster scheduler` and at least one `dpq cluster executor`, or use --engine local")))?;
                Ok(ctx)
            }
            #[cfg(not(feature = "ballista"))]
            Backend::Ballista(url) => Err(EngineError::Invalid(format!("--engine {url} needs a build with `--features ballista`"))),
        }
    }

    /// The raw provider of a table (for rebuilding scans sent to a cluster).
    pub(super) fn raw_provider(&self, table: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.get(table).map(|t| t.providers.clone())
    }

    pub fn version(&self, table: &str) -> Option<String> {
        self.tables.get(table).map(|t| t.manifest.version())
    }
}

/// A context with dpq's functions and no tables, for unit tests of planning code.
#[cfg(test)]
pub fn test_context() -> SessionContext {
    let ctx = SessionContext::new();
    ctx.register_udf(clamp_udf());
    ctx
}
