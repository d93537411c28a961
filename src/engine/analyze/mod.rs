//! The DP rewrite's analysis: walk the logical plan, accept only the shapes of
//! DESIGN §4, and describe the query as source rows + privacy unit + group keys +
//! aggregates + post-processing. Anything not understood is refused (fails
//! closed) with the construct, the reason and the way out.
//!
//! Plan shape accepted:
//! ```text
//! [post-processing: Projection | Filter (HAVING) | Sort | Limit | Window | SubqueryAlias]*   post.rs
//!   Aggregate  (the DP aggregate)                                  keys.rs, aggregate.rs
//!     source: TableScan                                            scan.rs
//!             | Projection | Filter | SubqueryAlias | Sort (no limit)   rows.rs
//!             | Join (private–private on the unit; private–public any)   join.rs
//!             | Aggregate grouped by the unit (per-person summaries)     per_person.rs
//!             | Distinct over rows that include the unit               set_ops.rs
//! ```
//! Every expression evaluated over private rows is an accepted one
//! ([`expr::allowed`]) and is made total ([`expr::total`]): whether a query
//! answers never depends on one person's rows.

mod aggregate;
pub mod expr;
mod join;
mod keys;
mod per_person;
mod post;
pub mod public;
mod rows;
mod scan;
mod set_ops;
#[cfg(test)]
mod test_util;
pub(crate) mod verify;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::error::{EngineError, Result, refused};
use crate::config::{Config, DomainConfig};
use expr::{ColInfo, Domain, infer_bounds, infer_domain};

#[derive(Debug, Clone)]
pub struct Rel {
    pub cols: Vec<ColInfo>,
    pub private: bool,
}

/// The aggregates dpq releases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggKind {
    /// COUNT(*) (or COUNT of a never-null column)
    CountRows,
    /// COUNT(col)
    CountValues,
    /// COUNT(DISTINCT unit): people
    CountUnits,
    Sum,
    Avg,
    Variance {
        sample: bool,
        stddev: bool,
    },
    Quantile {
        q: f64,
    },
}

impl AggKind {
    pub fn name(&self) -> String {
        match self {
            AggKind::CountRows => "COUNT(*)".into(),
            AggKind::CountValues => "COUNT".into(),
            AggKind::CountUnits => "COUNT(DISTINCT unit)".into(),
            AggKind::Sum => "SUM".into(),
            AggKind::Avg => "AVG".into(),
            AggKind::Variance { stddev: false, .. } => "VARIANCE".into(),
            AggKind::Variance { stddev: true, .. } => "STDDEV".into(),
            AggKind::Quantile { q } if (*q - 0.5).abs() < 1e-12 => "MEDIAN".into(),
            AggKind::Quantile { q } => format!("PERCENTILE({q})"),
        }
    }
    /// Needs a bounded numeric argument.
    pub fn needs_bounds(&self) -> bool {
        matches!(self, AggKind::Sum | AggKind::Avg | AggKind::Variance { .. } | AggKind::Quantile { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Agg {
    pub kind: AggKind,
    /// Row-level argument (over the source schema), total.
    pub arg: Option<Expr>,
    pub bounds: Option<(f64, f64)>,
    pub integer: bool,
    /// Output column name (as in the aggregate's schema).
    pub name: String,
    pub out_type: DataType,
    pub display: String,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub expr: Expr,
    pub data_type: DataType,
    pub domain: Option<Arc<Domain>>,
    pub display: String,
    pub unit_attr: bool,
}

/// A DP query, understood.
#[derive(Debug, Clone)]
pub struct DpQuery {
    /// The whole (type-coerced) plan; the DP aggregate is `depth` single-input
    /// nodes below its root.
    pub plan: LogicalPlan,
    pub depth: usize,
    pub agg_schema: DFSchemaRef,
    /// The DP aggregate's input with row expressions made total.
    pub source: LogicalPlan,
    pub unit: Column,
    pub unit_name: String,
    pub keys: Vec<Key>,
    pub aggs: Vec<Agg>,
    pub tables: BTreeSet<String>,
    /// Source rows are per-person summaries (one row per person).
    pub per_person: bool,
}

impl DpQuery {
    /// Group keys are all per-person attributes: one group per person.
    pub fn unit_level_keys(&self) -> bool {
        !self.keys.is_empty() && self.keys.iter().all(|k| k.unit_attr)
    }
    pub fn needs_partition_selection(&self) -> bool {
        self.keys.iter().any(|k| k.domain.is_none())
    }
}

#[derive(Debug, Clone)]
pub enum Analysis {
    /// Reads only public tables: answered as is, no charge.
    Public {
        plan: LogicalPlan,
        tables: BTreeSet<String>,
    },
    Dp(Box<DpQuery>),
}

/// Known public-table domains, loaded before analysis (public data only).
pub type PublicDomains = HashMap<(String, String), Arc<Domain>>;

pub async fn load_public_domains(ctx: &SessionContext, config: &Config, loaded: &BTreeSet<String>) -> Result<PublicDomains> {
    let mut out = HashMap::new();
    for t in config.tables.values() {
        for c in t.columns.values() {
            if let Some(DomainConfig::Table { table, column }) = &c.domain {
                if out.contains_key(&(table.clone(), column.clone())) || !loaded.contains(table) {
                    continue;
                }
                let sql = format!("SELECT DISTINCT \"{column}\" FROM \"{table}\" WHERE \"{column}\" IS NOT NULL ORDER BY 1");
                let batches = ctx.sql(&sql).await.map_err(super::error::sql)?.collect().await.map_err(super::error::sql)?;
                let mut values = Vec::new();
                for b in batches {
                    for i in 0..b.num_rows() {
                        values.push(ScalarValue::try_from_array(b.column(0), i).map_err(super::error::sql)?);
                    }
                }
                out.insert((table.clone(), column.clone()), Arc::new(Domain { values, source: format!("public table {table}.{column}") }));
            }
        }
    }
    Ok(out)
}

pub struct Analyzer<'a> {
    pub config: &'a Config,
    pub domains: &'a PublicDomains,
    public: &'a public::PublicParts,
    /// Inside a public part (described, not rewritten).
    in_public: bool,
    tables: BTreeSet<String>,
}

fn is_private_scan(config: &Config, plan: &LogicalPlan) -> bool {
    let mut private = false;
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(ts) = n
            && config.table(ts.table_name.table()).is_none_or(|t| !t.public)
        {
            private = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    private
}

fn tables_of(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(ts) = n {
            out.insert(ts.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

fn node_name(p: &LogicalPlan) -> String {
    match p {
        LogicalPlan::Statement(_) => "a statement (SET, BEGIN, …)".into(),
        LogicalPlan::Dml(d) => format!("{} statement", d.op),
        LogicalPlan::Ddl(_) => "a DDL statement (CREATE/DROP)".into(),
        LogicalPlan::Copy(_) => "COPY".into(),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => "EXPLAIN".into(),
        LogicalPlan::DescribeTable(_) => "DESCRIBE".into(),
        other => other.display().to_string(),
    }
}

/// How long the SQL parser may work on one query text. Real queries parse in
/// well under a millisecond; some malformed texts of ~130 bytes make sqlparser
/// 0.62 backtrack exponentially (dotted chains inside `[`, found by the `sql`
/// fuzz target; the upstream family is datafusion-sqlparser-rs #2344/#2352).
pub const PARSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Parse threads still running past their deadline (abandoned: such a
/// thread keeps going until sqlparser returns, which for some inputs is hours).
static ABANDONED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// With this many abandoned parses still running, new parses are refused:
/// runaway parses cannot take every core.
pub const MAX_ABANDONED: usize = 2;

/// Run a parse on a thread of its own and wait for it — without blocking the
/// async runtime — for at most [`PARSE_DEADLINE`]. A parse that runs over is
/// abandoned: its thread ends when sqlparser returns, or with the process.
/// With [`MAX_ABANDONED`] abandoned parses still running, refuses at once.
pub async fn parse_on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if ABANDONED.load(Ordering::SeqCst) >= MAX_ABANDONED {
        return Err(EngineError::Sql(format!(
            "the SQL parser is busy: {MAX_ABANDONED} malformed statements have been parsing for longer than {} s (texts that make it backtrack); try again later",
            PARSE_DEADLINE.as_secs()
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    // set by whichever comes second of "the parse ended" and "the deadline passed"
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let spawned = std::thread::Builder::new().name("dpq-sql-parse".into()).stack_size(8 << 20).spawn(move || {
        let r = f();
        if d.swap(true, Ordering::SeqCst) {
            // the deadline passed first and counted this thread as abandoned
            ABANDONED.fetch_sub(1, Ordering::SeqCst);
        }
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        return Err(EngineError::Invalid(format!("cannot start the SQL parser: {e}")));
    }
    match tokio::time::timeout(PARSE_DEADLINE, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(super::error::internal("the SQL parser's thread ended without an answer")),
        Err(_) => {
            if !done.swap(true, Ordering::SeqCst) {
                ABANDONED.fetch_add(1, Ordering::SeqCst);
            }
            Err(EngineError::Sql(format!(
                "invalid query: the SQL parser gave up after {} s on this text (some malformed inputs, such as dotted names inside unclosed `[`, make it backtrack without end); check the syntax",
                PARSE_DEADLINE.as_secs()
            )))
        }
    }
}

/// Parse with DataFusion's parser, within [`PARSE_DEADLINE`].
async fn parse_with_deadline(state: &datafusion::execution::SessionState, sql: &str, config: &Config) -> Result<datafusion::sql::parser::Statement> {
    let st = state.clone();
    let text = sql.to_string();
    let r = parse_on_thread(move || {
        let dialect = st.config().options().sql_parser.dialect;
        st.sql_to_statement(&text, &dialect)
    })
    .await?;
    r.map_err(|e| super::error::planning(e, sql, config))
}

/// Parse and analyse `sql`.
pub async fn analyze(ctx: &SessionContext, config: &Config, domains: &PublicDomains, sql: &str) -> Result<Analysis> {
    let state = ctx.state();
    let statement = parse_with_deadline(&state, sql, config).await?;
    let plan = state.statement_to_plan(statement).await.map_err(|e| super::error::planning(e, sql, config))?;
    match &plan {
        LogicalPlan::Statement(_) | LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) | LogicalPlan::DescribeTable(_) => {
            return Err(refused(node_name(&plan), "dpq answers SELECT queries only; it never changes data", "write a SELECT … GROUP BY query"));
        }
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => {
            return Err(refused("EXPLAIN inside the SQL", "plans of private queries are shown by dpq itself", "use `dpq explain \"SELECT …\"`"));
        }
        _ => {}
    }
    // make implicit casts explicit, so that they can be made total
    let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).map_err(super::error::sql)?;
    if !is_private_scan(config, &plan) {
        let tables = tables_of(&plan);
        return Ok(Analysis::Public { plan, tables });
    }
    let parts = public::evaluate(ctx, config, &plan).await?;
    analyze_logical(config, domains, &parts, plan)
}

/// Analyse a type-coerced logical plan whose public parts were evaluated.
pub fn analyze_logical(config: &Config, domains: &PublicDomains, public: &public::PublicParts, plan: LogicalPlan) -> Result<Analysis> {
    let tables = tables_of(&plan);
    if !is_private_scan(config, &plan) {
        return Ok(Analysis::Public { plan, tables });
    }
    let mut a = Analyzer { config, domains, public, in_public: false, tables: BTreeSet::new() };
    let q = a.dp_query(plan)?;
    verify::verify_query(config, &q, matches!(public, public::PublicParts::Evaluated(_)))?;
    Ok(Analysis::Dp(Box::new(q)))
}

fn check_no_subquery_exprs(p: &LogicalPlan, where_: &str) -> Result<()> {
    for e in p.expressions() {
        let mut found = false;
        let _ = e.apply(|x| {
            if matches!(x, Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) | Expr::SetComparison(_)) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if found {
            return Err(refused(
                format!("sub-query expression in {where_}"),
                "a query touching private tables may not embed sub-queries in expressions",
                "join the tables instead, or run the sub-query separately",
            ));
        }
    }
    Ok(())
}

impl Analyzer<'_> {
    fn dp_query(&mut self, plan: LogicalPlan) -> Result<DpQuery> {
        // 1. the post-processing chain down to the DP aggregate
        let (depth, agg) = post::dp_aggregate_of(&plan)?;
        // 2. the source below it
        let (source, rel) = self.rel(&agg.input)?;
        if !rel.private {
            return Err(refused(
                "an aggregate over public rows combined with private data elsewhere",
                "the private part of this query is not understood",
                "query the public table on its own",
            ));
        }
        let unit_idx = rel.cols.iter().position(|c| c.unit).ok_or_else(|| {
            refused(
                "rows without a privacy unit",
                "the source rows no longer carry the privacy-unit column, so they cannot be bounded per person",
                "keep the privacy-unit column in sub-queries (e.g. SELECT user_id, … in the derived table)",
            )
        })?;
        let (q, f) = source.schema().qualified_field(unit_idx);
        let unit = Column::new(q.cloned(), f.name());
        let schema = agg.input.schema().clone();
        let lookup = |c: &Column| -> Option<ColInfo> { schema.index_of_column(c).ok().map(|i| rel.cols[i].clone()) };
        // 3. group keys
        let mut keys = Vec::new();
        for g in &agg.group_expr {
            keys.push(self.group_key(g, &schema, &rel, &unit, &lookup)?);
        }
        // 4. aggregates
        let n_keys = agg.group_expr.len();
        let mut aggs = Vec::new();
        for (j, e) in agg.aggr_expr.iter().enumerate() {
            let (_, field) = agg.schema.qualified_field(n_keys + j);
            aggs.push(self.dp_aggregate(e, field.name(), field.data_type(), &schema, &rel, &unit, &lookup)?);
        }
        post::name_outputs(&plan, &mut aggs);
        // per-person summaries: the source's top aggregate groups by the unit only (+ per-person attributes)
        let per_person = per_person::is_per_person(&agg.input, &rel);
        let mut tables = tables_of(&plan);
        tables.extend(self.tables.iter().cloned());
        Ok(DpQuery { agg_schema: agg.schema.clone(), plan: plan.clone(), depth, source, unit_name: unit.name.clone(), unit, keys, aggs, tables, per_person })
    }

    /// Column info of an expression over `rel` (unit only for plain unit columns).
    fn expr_info(&self, e: &Expr, schema: &DFSchemaRef, rel: &Rel) -> Result<ColInfo> {
        let lookup = |c: &Column| -> Option<ColInfo> { schema.index_of_column(c).ok().map(|i| rel.cols[i].clone()) };
        let base = match e {
            Expr::Column(c) => lookup(c),
            Expr::Alias(a) => match &*a.expr {
                Expr::Column(c) => lookup(c),
                _ => None,
            },
            _ => None,
        };
        if let Some(info) = base {
            return Ok(info);
        }
        // derived expression: private if it reads private columns; unit attribute
        // if every column it reads is one
        let mut private = false;
        let mut unit_attr = true;
        let mut cols = 0;
        let mut origin = Vec::new();
        for c in e.column_refs() {
            cols += 1;
            if let Some(i) = lookup(c) {
                private |= i.private;
                unit_attr &= i.unit_attr || i.unit;
                if !i.origin.is_empty() {
                    origin.push(i.origin.clone());
                }
            }
        }
        let bounds = infer_bounds(e, &lookup);
        Ok(ColInfo {
            unit: false,
            private,
            bounds: Some(bounds).filter(|b| b.0.is_finite() || b.1.is_finite()),
            domain: infer_domain(e, schema, &lookup).map(Arc::new),
            unit_attr: unit_attr && cols > 0,
            origin: origin.join(", "),
            missing_domain: None,
        })
    }

    /// Analyse a source relation; returns it rewritten with total expressions,
    /// and its public parts replaced by their rows ([`public`]).
    fn rel(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
        if self.in_public || is_private_scan(self.config, plan) || matches!(plan, LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_)) {
            return self.rel_of(plan);
        }
        // a maximal public part: its columns are described from the original,
        // and the private query reads its rows, evaluated beforehand
        self.in_public = true;
        let described = self.rel_of(plan);
        self.in_public = false;
        let (_, rel) = described?;
        Ok((self.public.replacement(plan)?, rel))
    }

    fn rel_of(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
        match plan {
            LogicalPlan::TableScan(ts) => self.scan(plan, ts),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => self.constant_rows(plan),
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) | LogicalPlan::Projection(_) | LogicalPlan::Sort(_) => self.row_op(plan),
            LogicalPlan::Limit(_) => Err(rows::limit_refusal()),
            LogicalPlan::Join(j) => self.join(plan, j),
            LogicalPlan::Aggregate(a) => self.per_person(plan, a),
            _ => self.other_node(plan),
        }
    }
}
