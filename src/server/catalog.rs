//! The catalog a client sees: `pg_catalog` and `information_schema` over the
//! dataset's tables as dpq.toml declares them — names, columns and types, all
//! public configuration. The tables are registered here *empty*: this
//! context holds no row of private data, so a catalog query cannot read one
//! even if it names a private table (such queries go to the analyser anyway).
//!
//! `pg_catalog` comes from `datafusion-pg-catalog` (the tables psql's `\dt`
//! and `\d` read, and the functions they call); queries are rewritten by its
//! PostgreSQL-compatibility parser before planning.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::dataset::Dataset;
use crate::session::Error;

/// The database name clients see (`psql -d dpq`); any name is accepted.
pub const DATABASE: &str = "dpq";

/// The reported server version (clients parse it: SQLAlchemy needs
/// "PostgreSQL <major>.<minor>").
pub fn server_version() -> String {
    format!("PostgreSQL 16.6 (dpq {} differentially private gateway)", env!("CARGO_PKG_VERSION"))
}

/// The most rows a catalog query may return.
pub const MAX_CATALOG_ROWS: usize = 100_000;

pub struct Catalog {
    ctx: SessionContext,
    parser: PostgresCompatibilityParser,
    /// The dataset's table names (to route queries that name them to the analyser).
    pub tables: Vec<String>,
}

/// The declared schema of each table: dpq.toml's types, else the stored
/// manifest's (types are part of the dataset's public layout), else text.
fn declared_schema(ds: &Dataset, table: &str) -> SchemaRef {
    let cfg = &ds.config.tables[table];
    let manifest = crate::storage::manifest::Manifest::load(&ds.dir, table).ok().flatten();
    let stored = |col: &str| manifest.as_ref().and_then(|m| m.schema.iter().find(|c| c.name == col)).map(|c| c.ty.arrow());
    let mut names: Vec<String> = match &manifest {
        Some(m) => m.schema.iter().map(|c| c.name.clone()).collect(),
        None => Vec::new(),
    };
    for c in cfg.columns.keys() {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .map(|n| {
            let ty = cfg.columns.get(n).and_then(|c| c.ty).map(|t| t.arrow()).or_else(|| stored(n)).unwrap_or(DataType::Utf8);
            Field::new(n, ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn version_udf() -> ScalarUDF {
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(server_version()))))),
    )
}

/// `to_regtype(name)`: the OID of a built-in type, NULL for others (psycopg
/// and SQLAlchemy probe for extension types such as hstore this way).
fn to_regtype_udf() -> ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    use pgwire::api::Type;
    const KNOWN: &[Type] = &[
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::CHAR,
        Type::NAME,
        Type::BYTEA,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::JSON,
        Type::JSONB,
        Type::UUID,
        Type::OID,
    ];
    let oid = |name: &str| -> Option<i32> {
        let n = name.trim().trim_start_matches("pg_catalog.").to_ascii_lowercase();
        let alias = match n.as_str() {
            "integer" | "int" => "int4",
            "bigint" => "int8",
            "smallint" => "int2",
            "boolean" => "bool",
            "real" => "float4",
            "double precision" => "float8",
            "character varying" => "varchar",
            "timestamp without time zone" => "timestamp",
            "timestamp with time zone" => "timestamptz",
            other => other,
        };
        KNOWN.iter().find(|t| t.name() == alias).map(|t| t.oid() as i32)
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_any().downcast_ref::<StringArray>().cloned().unwrap_or_else(|| StringArray::from(vec![None::<&str>; arrays[0].len()]));
            let out: Int32Array = (0..names.len()).map(|i| if names.is_null(i) { None } else { oid(names.value(i)) }).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

impl Catalog {
    pub fn new(ds: &Dataset) -> Result<Catalog, Error> {
        let cfg = SessionConfig::new().with_default_catalog_and_schema(DATABASE, "public").with_information_schema(true);
        // catalog queries are small: a bounded memory pool (a hostile cross join fails, the server stays)
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(datafusion::execution::memory_pool::GreedyMemoryPool::new(256 << 20)))
            .build_arc()
            .map_err(|e| Error::Internal(format!("catalog runtime: {e}")))?;
        let ctx = SessionContext::new_with_config_rt(cfg, runtime);
        let mut tables = Vec::new();
        for name in ds.config.tables.keys() {
            let schema = declared_schema(ds, name);
            let empty = MemTable::try_new(schema.clone(), vec![vec![RecordBatch::new_empty(schema)]])
                .map_err(|e| Error::Internal(format!("catalog table {name}: {e}")))?;
            ctx.register_table(name.as_str(), Arc::new(empty)).map_err(|e| Error::Internal(format!("catalog table {name}: {e}")))?;
            tables.push(name.clone());
        }
        datafusion_pg_catalog::pg_catalog::setup_pg_catalog(&ctx, DATABASE, datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider)
            .map_err(|e| Error::Internal(format!("pg_catalog: {e}")))?;
        ctx.register_udf(version_udf());
        ctx.register_udf(to_regtype_udf());
        Ok(Catalog { ctx, parser: PostgresCompatibilityParser::new(), tables })
    }

    /// The result of a catalog query (after the compatibility rewrite), up
    /// to [`MAX_CATALOG_ROWS`] rows: a cross join of catalog tables must not
    /// take the server's memory (found by the gateway attack).
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        use futures::StreamExt;
        let plan = self.plan(sql).await?;
        let df = self.ctx.execute_logical_plan(plan).await.map_err(|e| e.to_string())?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let task_ctx = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await.map_err(|e| e.to_string())?;
        // joins without an equality (cross joins, nested loops) are what a
        // hostile catalog query multiplies: its CPU outlives the statement
        // timeout (found by the gateway attack); clients' catalog queries join
        // on oids, which plan as hash joins
        fn nested(p: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> bool {
            matches!(p.name(), "NestedLoopJoinExec" | "CrossJoinExec") || p.children().into_iter().any(nested)
        }
        if nested(&physical) {
            return Err("a catalog query may join only on equality conditions (a cross join of catalog tables is refused)".into());
        }
        let mut stream = datafusion::physical_plan::execute_stream(physical, task_ctx).map_err(|e| e.to_string())?;
        let (mut batches, mut rows) = (Vec::new(), 0usize);
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| e.to_string())?;
            rows += b.num_rows();
            if rows > MAX_CATALOG_ROWS {
                return Err(format!("a catalog query may return at most {MAX_CATALOG_ROWS} rows"));
            }
            batches.push(b);
        }
        Ok((schema, batches))
    }

    /// The result schema of a catalog query, without running it.
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, String> {
        let plan = self.plan(sql).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    async fn plan(&self, sql: &str) -> Result<datafusion::logical_expr::LogicalPlan, String> {
        let mut statements = self.parser.parse(sql).map_err(|e| e.to_string())?;
        if statements.len() != 1 {
            return Err("one statement at a time".into());
        }
        let st = datafusion::sql::parser::Statement::Statement(Box::new(statements.remove(0)));
        self.ctx.state().statement_to_plan(st).await.map_err(|e| e.to_string())
    }

    /// The types DataFusion infers for `$n` placeholders of `sql`, planned
    /// over the declared (empty) tables; `None` where it cannot tell.
    pub async fn parameter_types(&self, sql: &str, n: usize) -> Vec<Option<DataType>> {
        let Ok(plan) = self.ctx.state().create_logical_plan(sql).await else { return vec![None; n] };
        let Ok(types) = plan.get_parameter_types() else { return vec![None; n] };
        (1..=n).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect()
    }
}
