//! The DP rewrite's analysis: walk the logical plan, accept only the shapes of
//! DESIGN §4, and describe the query as source rows + privacy unit + group keys +
//! aggregates + post-processing. Anything not understood is refused (fails
//! closed) with the construct, the reason and the way out.
//!
//! Plan shape accepted:
//! ```text
//! [post-processing: Projection | Filter (HAVING) | Sort | Limit | Window | SubqueryAlias]*
//!   Aggregate  (the DP aggregate: GROUP BY keys, COUNT/SUM/AVG/VAR/STDDEV/quantiles)
//!     source: TableScan | Projection | Filter | SubqueryAlias | Sort (no limit)
//!             | Join (private–private on the unit; private–public any)
//!             | Aggregate grouped by the unit (per-person summaries)
//!             | Distinct over rows that include the unit
//! ```

pub mod exprs;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, ExprSchemable, JoinType, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::error::{EngineError, Result, refused};
use crate::config::{Config, DomainConfig, DomainValue};
use exprs::{ColInfo, Domain, check_row_expr, finite, infer_bounds, infer_domain, make_total};

/// What the columns of a relation are.
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
    tables: BTreeSet<String>,
}

fn is_private_scan(config: &Config, plan: &LogicalPlan) -> bool {
    let mut private = false;
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(ts) = n {
            if config.table(ts.table_name.table()).is_none_or(|t| !t.public) {
                private = true;
                return Ok(TreeNodeRecursion::Stop);
            }
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

/// Parse on a helper thread and give up after [`PARSE_DEADLINE`]. A parse that
/// runs over is abandoned: its thread finishes (with a parse error) in the
/// background, or ends with the process — the CLI exits right after the error.
fn parse_with_deadline(state: &datafusion::execution::SessionState, sql: &str) -> Result<datafusion::sql::parser::Statement> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let st = state.clone();
    let text = sql.to_string();
    std::thread::Builder::new()
        .name("dpq-sql-parse".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let dialect = st.config().options().sql_parser.dialect;
            let _ = tx.send(st.sql_to_statement(&text, &dialect));
        })
        .map_err(|e| EngineError::Invalid(format!("cannot start the SQL parser: {e}")))?;
    match rx.recv_timeout(PARSE_DEADLINE) {
        Ok(r) => r.map_err(super::error::sql),
        Err(_) => Err(EngineError::Sql(format!(
            "invalid query: the SQL parser gave up after {} s on this text (some malformed inputs, such as dotted names inside unclosed `[`, make it backtrack without end); check the syntax",
            PARSE_DEADLINE.as_secs()
        ))),
    }
}

/// Parse and analyse `sql`.
pub async fn analyze(ctx: &SessionContext, config: &Config, domains: &PublicDomains, sql: &str) -> Result<Analysis> {
    let state = ctx.state();
    let statement = parse_with_deadline(&state, sql)?;
    let plan = state.statement_to_plan(statement).await.map_err(super::error::sql)?;
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
    let tables = tables_of(&plan);
    if !is_private_scan(config, &plan) {
        return Ok(Analysis::Public { plan, tables });
    }
    let mut a = Analyzer { config, domains, tables: BTreeSet::new() };
    let q = a.dp_query(plan)?;
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
        // 1. walk the post-processing chain down to the DP aggregate
        let mut depth = 0;
        let mut node = &plan;
        let agg: &Aggregate = loop {
            check_no_subquery_exprs(node, "the query")?;
            node = match node {
                LogicalPlan::Projection(p) => &p.input,
                LogicalPlan::Filter(f) => &f.input,
                LogicalPlan::Sort(s) => &s.input,
                LogicalPlan::Limit(l) => &l.input,
                LogicalPlan::Window(w) => {
                    let mut has_agg = false;
                    let _ = w.input.apply(|n| {
                        if matches!(n, LogicalPlan::Aggregate(_)) {
                            has_agg = true;
                            return Ok(TreeNodeRecursion::Stop);
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                    if !has_agg {
                        return Err(refused(
                            "window function over private rows",
                            "a window lets one person's rows change what is computed for others, and outputs individual rows",
                            "aggregate with GROUP BY; windows are fine on the noisy result (e.g. ROW_NUMBER() OVER (… ORDER BY COUNT(*) DESC) in the aggregate query)",
                        ));
                    }
                    &w.input
                }
                LogicalPlan::SubqueryAlias(s) => &s.input,
                LogicalPlan::Aggregate(a) => break a,
                LogicalPlan::Distinct(d) if matches!(d.input().as_ref(), LogicalPlan::Union(_)) => {
                    return Err(refused(
                        "UNION mixing private rows",
                        "rows from several private sources cannot be bounded per person as one release",
                        "run each part as its own query",
                    ));
                }
                LogicalPlan::Distinct(_) => {
                    return Err(refused(
                        "SELECT DISTINCT over private rows",
                        "listing distinct values would reveal individual people's values",
                        "count people per value instead: SELECT col, COUNT(DISTINCT <unit>) … GROUP BY col",
                    ));
                }
                LogicalPlan::Union(_) => {
                    return Err(refused(
                        "UNION mixing private rows",
                        "rows from several private queries cannot be bounded per person as one release",
                        "run each part as its own query",
                    ));
                }
                LogicalPlan::Join(_) => {
                    return Err(refused(
                        "a join above the aggregate",
                        "dpq releases one aggregate per query; joining results is post-processing dpq does not do",
                        "run the aggregate query on its own and join the (noisy) results outside",
                    ));
                }
                _ => {
                    return Err(refused(
                        "a non-aggregate SELECT over private rows",
                        "it would output individual rows of people's data",
                        "aggregate: SELECT key, COUNT(*) … GROUP BY key (or COUNT/SUM/AVG/MEDIAN without GROUP BY)",
                    ));
                }
            };
            depth += 1;
        };
        // 2. the source below the DP aggregate
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
        let schema = source.schema().clone();
        let lookup = |c: &Column| -> Option<ColInfo> { schema.index_of_column(c).ok().map(|i| rel.cols[i].clone()) };
        // 3. group keys
        let mut keys = Vec::new();
        for g in &agg.group_expr {
            if matches!(g, Expr::GroupingSet(_)) {
                return Err(refused("GROUPING SETS / ROLLUP / CUBE", "several groupings in one release are not supported", "run one query per grouping"));
            }
            check_row_expr(g, "GROUP BY")?;
            let info = self.expr_info(g, &schema, &rel)?;
            if info.unit {
                return Err(refused(
                    format!("the privacy unit `{}` in the output", unit.name),
                    "grouping by the privacy unit would publish one row per person",
                    "aggregate over people: COUNT(DISTINCT <unit>), or summarise per person in a sub-query and aggregate that",
                ));
            }
            let g_total = make_total(g.clone(), &schema)?;
            let data_type = g.get_type(&schema).map_err(super::error::sql)?;
            let domain = infer_domain(g, &schema, &lookup).map(Arc::new);
            keys.push(Key { expr: g_total, data_type, domain, display: g.schema_name().to_string(), unit_attr: info.unit_attr });
        }
        // 4. aggregates
        let n_keys = agg.group_expr.len();
        let mut aggs = Vec::new();
        for (j, e) in agg.aggr_expr.iter().enumerate() {
            let (_, field) = agg.schema.qualified_field(n_keys + j);
            aggs.push(self.dp_aggregate(e, field.name(), field.data_type(), &schema, &rel, &unit, &lookup)?);
        }
        // user-facing names: an alias in the top projection wins over DataFusion's display
        if let LogicalPlan::Projection(p) = &plan {
            for e in &p.expr {
                if let Expr::Alias(al) = e {
                    let mut inner = &*al.expr;
                    while let Expr::Alias(x) = inner {
                        inner = &x.expr;
                    }
                    if let Expr::Column(c) = inner {
                        for a in aggs.iter_mut() {
                            if a.name == c.name {
                                a.display = al.name.clone();
                            }
                        }
                    }
                }
            }
        }
        // per-person summaries: the source's top aggregate groups by the unit only (+ per-person attributes)
        let per_person = is_per_person(&agg.input, &rel);
        let mut tables = tables_of(&plan);
        tables.extend(self.tables.iter().cloned());
        Ok(DpQuery { agg_schema: agg.schema.clone(), plan: plan.clone(), depth, source, unit_name: unit.name.clone(), unit, keys, aggs, tables, per_person })
    }

    #[allow(clippy::too_many_arguments)]
    fn dp_aggregate(
        &self,
        e: &Expr,
        name: &str,
        out_type: &DataType,
        schema: &DFSchemaRef,
        rel: &Rel,
        unit: &Column,
        lookup: &dyn Fn(&Column) -> Option<ColInfo>,
    ) -> Result<Agg> {
        let inner = match e {
            Expr::Alias(a) => &*a.expr,
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Err(refused(
                format!("aggregate expression `{e}`"),
                "not understood",
                "use COUNT, SUM, AVG, VARIANCE, STDDEV, MEDIAN or APPROX_PERCENTILE_CONT",
            ));
        };
        let fname = func.name().to_ascii_lowercase();
        let display = name.to_string();
        if params.filter.is_some() {
            return Err(refused(
                format!("{display} with a FILTER clause"),
                "filtered aggregates are not supported",
                "move the condition into WHERE, or use SUM(CASE WHEN … THEN 1 ELSE 0 END)",
            ));
        }
        let mut arg = params.args.first().cloned();
        let kind = match fname.as_str() {
            "count" => {
                let a = params.args.first();
                let is_star = a.is_none_or(|x| matches!(x, Expr::Literal(v, _) if !v.is_null()));
                let is_unit = matches!(a, Some(Expr::Column(c)) if lookup(c).is_some_and(|i| i.unit));
                if params.distinct {
                    if is_unit {
                        arg = None;
                        AggKind::CountUnits
                    } else {
                        return Err(refused(
                            format!("{display}"),
                            "COUNT(DISTINCT x) for x other than the privacy unit has no per-person sensitivity dpq can bound",
                            format!("count people with COUNT(DISTINCT {}), or count distinct values per person in a sub-query", unit.name),
                        ));
                    }
                } else if is_star || is_unit {
                    arg = None;
                    AggKind::CountRows
                } else {
                    AggKind::CountValues
                }
            }
            "sum" => AggKind::Sum,
            "avg" | "mean" => AggKind::Avg,
            "var" | "var_samp" | "variance" | "var_sample" => AggKind::Variance { sample: true, stddev: false },
            "var_pop" | "variance_pop" => AggKind::Variance { sample: false, stddev: false },
            "stddev" | "stddev_samp" => AggKind::Variance { sample: true, stddev: true },
            "stddev_pop" => AggKind::Variance { sample: false, stddev: true },
            "median" | "approx_median" => AggKind::Quantile { q: 0.5 },
            "approx_percentile_cont" | "percentile_cont" | "quantile_cont" => {
                let (value, level) = if !params.order_by.is_empty() {
                    (params.order_by[0].expr.clone(), params.args.first().cloned())
                } else {
                    (params.args.first().cloned().unwrap_or(Expr::Literal(ScalarValue::Null, None)), params.args.get(1).cloned())
                };
                arg = Some(value);
                let q = level.as_ref().and_then(|l| match l {
                    Expr::Literal(v, _) => v.cast_to(&DataType::Float64).ok().and_then(|v| match v {
                        ScalarValue::Float64(Some(x)) => Some(x),
                        _ => None,
                    }),
                    _ => None,
                });
                match q {
                    Some(q) if q > 0.0 && q < 1.0 => AggKind::Quantile { q },
                    _ => {
                        return Err(refused(
                            format!("{display}"),
                            "the percentile must be a literal strictly between 0 and 1",
                            "e.g. APPROX_PERCENTILE_CONT(x, 0.9)",
                        ));
                    }
                }
            }
            "min" | "max" => {
                return Err(refused(
                    format!("{}(…) of private values", fname.to_uppercase()),
                    "the minimum or maximum is one person's value, which no amount of noise protects",
                    "use a DP quantile instead, e.g. APPROX_PERCENTILE_CONT(x, 0.05) or (x, 0.95), or MEDIAN(x)",
                ));
            }
            other => {
                return Err(refused(
                    format!("aggregate function `{other}`"),
                    "dpq has no DP mechanism for it",
                    "use COUNT, COUNT(DISTINCT <unit>), SUM, AVG, VARIANCE, STDDEV, MEDIAN or APPROX_PERCENTILE_CONT",
                ));
            }
        };
        if params.distinct && kind != AggKind::CountUnits {
            return Err(refused(
                format!("{display}"),
                "DISTINCT inside this aggregate is not supported",
                "remove DISTINCT, or de-duplicate per person in a sub-query",
            ));
        }
        let mut bounds = None;
        let mut integer = false;
        if let Some(a) = &arg {
            check_row_expr(a, "an aggregate argument")?;
            let info = self.expr_info(a, schema, rel)?;
            let ty = a.get_type(schema).map_err(super::error::sql)?;
            integer = exprs::integer_valued(a, schema);
            if kind.needs_bounds() {
                if !ty.is_numeric() {
                    return Err(refused(format!("{display}"), format!("its argument has type {ty}, not a number"), "aggregate a numeric expression"));
                }
                bounds = finite(infer_bounds(a, lookup));
                if bounds.is_none() {
                    let what = if info.origin.is_empty() { a.to_string() } else { info.origin.clone() };
                    return Err(refused(
                        format!("{} over `{what}`, which has no bounds", kind.name()),
                        "without a declared range one person could move the result arbitrarily",
                        format!(
                            "declare bounds in dpq.toml ([tables.<table>.columns.<column>] bounds = [lo, hi]) or clamp in SQL: {}(clamp({a}, lo, hi))",
                            kind.name()
                        ),
                    ));
                }
            }
        }
        let arg = match arg {
            Some(a) => Some(make_total(a, schema)?),
            None => None,
        };
        Ok(Agg { kind, arg, bounds, integer, name: name.to_string(), out_type: out_type.clone(), display })
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
        let bounds = Some(infer_bounds(e, &lookup)).map(|b| b);
        Ok(ColInfo {
            unit: false,
            private,
            bounds: bounds.filter(|b| b.0.is_finite() || b.1.is_finite()),
            domain: infer_domain(e, schema, &lookup).map(Arc::new),
            unit_attr: unit_attr && cols > 0,
            origin: origin.join(", "),
        })
    }

    /// Analyse a source relation; returns it rewritten with total expressions.
    fn rel(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
        match plan {
            LogicalPlan::TableScan(ts) => {
                let name = ts.table_name.table().to_string();
                self.tables.insert(name.clone());
                let tc = self
                    .config
                    .table(&name)
                    .ok_or_else(|| refused(format!("table `{name}`"), "it is not declared in dpq.toml", format!("declare [tables.{name}]")))?;
                if !ts.filters.is_empty() || ts.fetch.is_some() {
                    return Err(refused("a pre-filtered table scan", "not produced by SQL planning", "report this as a bug"));
                }
                let mut cols = Vec::new();
                for f in ts.projected_schema.fields() {
                    let cc = tc.columns.get(f.name());
                    let domain = match cc.and_then(|c| c.domain.as_ref()) {
                        Some(DomainConfig::Values(vals)) => Some(Arc::new(Domain {
                            values: vals.iter().map(|v| domain_value(v, f.data_type())).collect::<Result<_>>()?,
                            source: format!("dpq.toml values of {name}.{}", f.name()),
                        })),
                        Some(DomainConfig::Table { table, column }) => match self.domains.get(&(table.clone(), column.clone())) {
                            Some(d) => Some(Arc::new(Domain {
                                values: d.values.iter().map(|v| v.cast_to(f.data_type())).collect::<Result<_, _>>().map_err(super::error::sql)?,
                                source: d.source.clone(),
                            })),
                            None => {
                                return Err(EngineError::Data(format!(
                                    "the domain of {name}.{} is the public table `{table}`, which has no data yet\n  hint: ingest it first: dpq ingest {table} FILE",
                                    f.name()
                                )));
                            }
                        },
                        None => None,
                    };
                    cols.push(ColInfo {
                        unit: !tc.public && tc.privacy_unit.as_deref() == Some(f.name().as_str()),
                        private: !tc.public,
                        bounds: cc.and_then(|c| c.bounds),
                        domain,
                        unit_attr: !tc.public && tc.one_row_per_unit,
                        origin: format!("{name}.{}", f.name()),
                    });
                }
                Ok((plan.clone(), Rel { cols, private: !tc.public }))
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                let n = plan.schema().fields().len();
                Ok((plan.clone(), Rel { cols: vec![ColInfo::default(); n], private: false }))
            }
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) | LogicalPlan::Projection(_) | LogicalPlan::Sort(_) => {
                let input = plan.inputs()[0];
                let (new_input, rel) = self.rel(input)?;
                if !rel.private {
                    return Ok((plan.clone(), rel));
                }
                let schema = input.schema().clone();
                let mut exprs = Vec::new();
                match plan {
                    LogicalPlan::Sort(s) if s.fetch.is_some() => {
                        return Err(limit_refusal());
                    }
                    _ => {}
                }
                let what = match plan {
                    LogicalPlan::Filter(_) => "WHERE",
                    LogicalPlan::Projection(_) => "SELECT",
                    _ => "ORDER BY",
                };
                check_no_subquery_exprs(plan, &format!("{what} over private rows"))?;
                for e in plan.expressions() {
                    check_row_expr(&e, what)?;
                    let name = e.schema_name().to_string();
                    let total = make_total(e, &schema)?;
                    exprs.push(if matches!(plan, LogicalPlan::Projection(_)) { total.alias_if_changed(name).map_err(super::error::sql)? } else { total });
                }
                let new_plan = plan.with_new_exprs(exprs, vec![new_input]).map_err(super::error::sql)?;
                let out_rel = match plan {
                    LogicalPlan::Projection(p) => {
                        let mut cols = Vec::new();
                        for e in &p.expr {
                            cols.push(self.expr_info(e, &schema, &rel)?);
                        }
                        Rel { cols, private: true }
                    }
                    _ => rel,
                };
                Ok((new_plan, out_rel))
            }
            LogicalPlan::Limit(_) => Err(limit_refusal()),
            LogicalPlan::Join(j) => {
                let (l_plan, l) = self.rel(&j.left)?;
                let (r_plan, r) = self.rel(&j.right)?;
                check_no_subquery_exprs(plan, "a join")?;
                let (ls, rs) = (j.left.schema().clone(), j.right.schema().clone());
                if l.private && r.private {
                    let unit_in = |e: &Expr, s: &DFSchemaRef, rel: &Rel| match e {
                        Expr::Column(c) => s.index_of_column(c).ok().is_some_and(|i| rel.cols[i].unit),
                        _ => false,
                    };
                    let pair = |a: &Expr, b: &Expr| (unit_in(a, &ls, &l) && unit_in(b, &rs, &r)) || (unit_in(b, &ls, &l) && unit_in(a, &rs, &r));
                    // equalities in ON pairs, or in the join filter's conjuncts
                    let mut on_unit = j.on.iter().any(|(a, b)| pair(a, b));
                    if let Some(f) = &j.filter {
                        for c in datafusion::logical_expr::utils::split_conjunction(f) {
                            if let Expr::BinaryExpr(be) = c {
                                if be.op == datafusion::logical_expr::Operator::Eq && pair(&be.left, &be.right) {
                                    on_unit = true;
                                }
                            }
                        }
                    }
                    if !on_unit {
                        return Err(refused(
                            "a join of two private tables not on the privacy unit",
                            "it would combine rows of different people, so one person could affect others' rows",
                            "join private tables ON a.<unit> = b.<unit>; join public tables freely",
                        ));
                    }
                }
                let private_outer = match j.join_type {
                    JoinType::Inner => false,
                    JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => r.private && !l.private,
                    JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => l.private && !r.private,
                    JoinType::Full => l.private || r.private,
                };
                if j.join_type == JoinType::Full {
                    return Err(refused(
                        "FULL OUTER JOIN over private rows",
                        "rows without a match on one side belong to no person (or to the wrong one), so they cannot be bounded per person",
                        "use an INNER join on the privacy unit, or a LEFT join keeping the private side",
                    ));
                }
                if private_outer {
                    return Err(refused(
                        format!("{} join that keeps public rows depending on private ones", j.join_type),
                        "which public rows appear (or get NULLs) would depend on private data",
                        "use an INNER join, or put the private table on the preserved side",
                    ));
                }
                for e in plan.expressions() {
                    if l.private || r.private {
                        check_row_expr(&e, "a join condition")?;
                    }
                }
                let exprs: Vec<Expr> = plan
                    .expressions()
                    .into_iter()
                    .map(|e| if l.private || r.private { make_total(e, &plan.schema().clone()) } else { Ok(e) })
                    .collect::<Result<_>>()?;
                // join conditions reference both sides: totals computed against the join schema
                let new_plan = plan.with_new_exprs(exprs, vec![l_plan, r_plan]).map_err(super::error::sql)?;
                let cols = match j.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti => l.cols.clone(),
                    JoinType::RightSemi | JoinType::RightAnti => r.cols.clone(),
                    JoinType::LeftMark => {
                        let mut c = l.cols.clone();
                        c.push(ColInfo { private: r.private, ..Default::default() });
                        c
                    }
                    JoinType::RightMark => {
                        let mut c = r.cols.clone();
                        c.push(ColInfo { private: l.private, ..Default::default() });
                        c
                    }
                    _ => l.cols.iter().chain(r.cols.iter()).cloned().collect(),
                };
                Ok((new_plan, Rel { cols, private: l.private || r.private }))
            }
            LogicalPlan::Aggregate(a) => {
                let (new_input, rel) = self.rel(&a.input)?;
                if !rel.private {
                    return Ok((plan.clone(), rel));
                }
                let schema = a.input.schema().clone();
                let unit_keys: Vec<usize> = a
                    .group_expr
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| matches!(g, Expr::Column(c) if schema.index_of_column(c).ok().is_some_and(|i| rel.cols[i].unit)))
                    .map(|(i, _)| i)
                    .collect();
                if unit_keys.is_empty() {
                    return Err(refused(
                        "a sub-query that aggregates across people",
                        "it is not grouped by the privacy unit, so its rows mix several people's data",
                        "group the sub-query by the privacy unit to build per-person summaries, or make it the outer query",
                    ));
                }
                let mut cols = Vec::new();
                let mut per_person_attrs = true;
                for g in &a.group_expr {
                    if matches!(g, Expr::GroupingSet(_)) {
                        return Err(refused("GROUPING SETS in a sub-query", "not supported", "group by plain columns"));
                    }
                    check_row_expr(g, "a sub-query GROUP BY")?;
                    let info = self.expr_info(g, &schema, &rel)?;
                    per_person_attrs &= info.unit || info.unit_attr;
                    cols.push(info);
                }
                for e in &a.aggr_expr {
                    cols.push(self.inner_aggregate(e, &schema, &rel, per_person_attrs)?);
                }
                let mut exprs = Vec::new();
                let n_g = a.group_expr.len();
                for (i, e) in plan.expressions().into_iter().enumerate() {
                    let name = e.schema_name().to_string();
                    let total = make_total(e, &schema)?;
                    exprs.push(if i >= n_g { total.alias_if_changed(name).map_err(super::error::sql)? } else { total });
                }
                let new_plan = plan.with_new_exprs(exprs, vec![new_input]).map_err(super::error::sql)?;
                Ok((new_plan, Rel { cols, private: true }))
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let (new_input, rel) = self.rel(input)?;
                if rel.private && !rel.cols.iter().any(|c| c.unit) {
                    return Err(refused(
                        "DISTINCT over private rows without the privacy unit",
                        "de-duplicating across people lets one person's row hide another's",
                        "include the privacy unit in the DISTINCT columns (per-person de-duplication)",
                    ));
                }
                let new_plan = plan.with_new_exprs(vec![], vec![new_input]).map_err(super::error::sql)?;
                Ok((new_plan, rel))
            }
            LogicalPlan::Union(u) => {
                let mut any_private = false;
                for i in &u.inputs {
                    any_private |= is_private_scan(self.config, i);
                }
                if any_private {
                    return Err(refused(
                        "UNION mixing private rows",
                        "rows from several private sources cannot be bounded per person as one source",
                        "run each part as its own query",
                    ));
                }
                let n = plan.schema().fields().len();
                Ok((plan.clone(), Rel { cols: vec![ColInfo::default(); n], private: false }))
            }
            LogicalPlan::Window(_) => {
                if is_private_scan(self.config, plan) {
                    return Err(refused(
                        "window function over private rows",
                        "a window lets one person's rows change what is computed for others",
                        "aggregate with GROUP BY; windows are fine on the noisy result (put them above the aggregate)",
                    ));
                }
                let n = plan.schema().fields().len();
                Ok((plan.clone(), Rel { cols: vec![ColInfo::default(); n], private: false }))
            }
            other => {
                if !is_private_scan(self.config, other) {
                    let n = plan.schema().fields().len();
                    return Ok((plan.clone(), Rel { cols: vec![ColInfo::default(); n], private: false }));
                }
                Err(refused(
                    format!("`{}` over private rows", node_name(other).lines().next().unwrap_or("plan node")),
                    "dpq does not understand this shape, and unknown shapes fail closed",
                    "rewrite the query as SELECT … FROM … [JOIN …] [WHERE …] GROUP BY …",
                ))
            }
        }
    }

    fn inner_aggregate(&self, e: &Expr, schema: &DFSchemaRef, rel: &Rel, per_person: bool) -> Result<ColInfo> {
        let inner = match e {
            Expr::Alias(a) => &*a.expr,
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Err(refused(format!("`{e}` in a per-person sub-query"), "not understood", "use ordinary aggregate functions"));
        };
        if params.filter.is_some() {
            return Err(refused("FILTER in a per-person sub-query", "not supported", "use CASE WHEN inside the aggregate"));
        }
        let name = func.name().to_ascii_lowercase();
        let lookup = |c: &Column| -> Option<ColInfo> { schema.index_of_column(c).ok().map(|i| rel.cols[i].clone()) };
        let arg = if !params.order_by.is_empty() && name.contains("percentile") { Some(params.order_by[0].expr.clone()) } else { params.args.first().cloned() };
        if let Some(a) = &arg {
            check_row_expr(a, "a per-person aggregate")?;
        }
        let ab = arg.as_ref().map(|a| infer_bounds(a, &lookup)).unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let inf = f64::INFINITY;
        let bounds = match name.as_str() {
            "count" | "approx_distinct" => Some((0.0, inf)),
            "min" | "max" | "avg" | "mean" | "median" | "approx_median" | "approx_percentile_cont" | "percentile_cont" | "first_value" | "last_value" => {
                Some(ab)
            }
            "sum" => Some((if ab.0 >= 0.0 { 0.0 } else { -inf }, if ab.1 <= 0.0 { 0.0 } else { inf })),
            "var" | "var_samp" | "var_pop" | "variance" | "variance_pop" => finite(ab).map(|(lo, hi)| (0.0, (hi - lo).powi(2) / 4.0 * 2.0)),
            "stddev" | "stddev_samp" | "stddev_pop" => finite(ab).map(|(lo, hi)| (0.0, (hi - lo))),
            "bool_and" | "bool_or" => None,
            other => {
                return Err(refused(
                    format!("aggregate `{other}` in a per-person sub-query"),
                    "it is not on dpq's list of per-person aggregates",
                    "use COUNT, SUM, AVG, MIN, MAX, MEDIAN, STDDEV or APPROX_PERCENTILE_CONT per person",
                ));
            }
        };
        let domain = match name.as_str() {
            "min" | "max" | "first_value" | "last_value" => arg.as_ref().and_then(|a| infer_domain(a, schema, &lookup)).map(Arc::new),
            _ => None,
        };
        Ok(ColInfo {
            unit: false,
            private: true,
            bounds: bounds.filter(|b| b.0.is_finite() || b.1.is_finite()),
            domain,
            unit_attr: per_person,
            origin: format!("per-person {name}"),
        })
    }
}

fn limit_refusal() -> EngineError {
    refused(
        "LIMIT (or ORDER BY … LIMIT) inside a sub-query over private rows",
        "which rows survive a LIMIT depends on other people's rows, so per-person bounding no longer holds",
        "remove the LIMIT from the sub-query; LIMIT on the final (noisy) result is fine",
    )
}

/// Is `plan` (the DP aggregate's input) one row per person? True when its top
/// aggregate (below projections/filters/aliases) groups by the unit and only
/// per-person attributes.
fn is_per_person(plan: &LogicalPlan, rel: &Rel) -> bool {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::SubqueryAlias(s) => node = &s.input,
            LogicalPlan::Sort(s) => node = &s.input,
            LogicalPlan::Aggregate(_) => {
                // the aggregate's outputs that are not unit/unit_attr mean several rows per person
                return rel.cols.iter().any(|c| c.unit) && rel.cols.iter().all(|c| c.unit || c.unit_attr);
            }
            _ => return false,
        }
    }
}

fn domain_value(v: &DomainValue, ty: &DataType) -> Result<ScalarValue> {
    let s = match v {
        DomainValue::Str(s) => ScalarValue::Utf8(Some(s.clone())),
        DomainValue::Int(i) => ScalarValue::Int64(Some(*i)),
        DomainValue::Float(f) => ScalarValue::Float64(Some(*f)),
        DomainValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
    };
    s.cast_to(ty).map_err(|e| EngineError::Invalid(format!("domain value `{v}` does not fit the column type {ty}: {e}")))
}
