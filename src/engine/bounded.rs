//! The bounded plan: per-(person, group) partial aggregates computed exactly by
//! DataFusion, streamed in person order into the bounding rules of
//! [`crate::privacy::bounding`], which produce the group totals.
//!
//! ```text
//! Aggregate: groupBy=[g], aggr=[dpq_total(c)]                      per-group totals: all the driver receives
//!   Projection: b.g AS g, b.c AS c
//!     Unnest: b
//!       Aggregate: groupBy=[__u], aggr=[dpq_bound(__u, keys…, partials…, config) AS b]   bounding, per person (bound_op.rs)
//! Aggregate: groupBy=[__u, __k0, …(, __b)], aggr=[count(*) AS __rows,
//!              count(__vj) AS __cj, sum(CAST(__vj AS DECIMAL(38,0))) AS __sj, (sum of squares AS __qj)]
//!     Filter: __u IS NOT NULL (AND key IN (domain) for a key with a domain when another key has none)
//!       Projection: unit AS __u, key AS __k0 | CASE key WHEN d0 THEN 0 … END AS __k0, encode(clamp(arg)) AS __vj …
//!         <source rows, with row expressions made total>
//! ```
//! When every group key has a declared domain (the common case: emoji from a
//! public catalogue, hour, age group) each key is replaced by its index in the
//! domain — a `CASE key WHEN …` that DataFusion evaluates as one hash lookup, NULL
//! outside the domain — so the per-person aggregate groups by small integers
//! instead of strings, and a group's id is the mixed-radix number of its codes.
//! Values are clamped to their bounds and encoded on the fixed-point grid before
//! the sums, which accumulate in i128 (Decimal128). Nothing DataFusion sums in
//! floating point is released.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
#[cfg(test)]
use datafusion::arrow::array::{Decimal128Array, Int64Array, RecordBatch};
#[cfg(test)]
use datafusion::arrow::datatypes::Decimal128Type;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Operator, col, in_list, lit, when};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::analyze::{AggKind, DpQuery};
use super::error::{EngineError, Result};
use super::plan::Calibration;
use super::session::Sessions;
use super::total::{total_cast, total_fn, total_op};
#[cfg(test)]
use crate::privacy::bounding::GroupPartial;
use crate::privacy::bounding::{self, ValueStats};

const U: &str = "__u";

/// A plan over private tables that went through the DP rewrite. Only this module
/// can build one, and only [`execute_bounded`] can run it.
#[derive(Debug, Clone)]
pub struct BoundedPlan {
    plan: LogicalPlan,
    keys: usize,
    /// value aggregates in this plan: (index into q.aggs, has a sum, has squares)
    values: Vec<(usize, bool, bool)>,
    /// quantile plan: index of its aggregate
    quantile: Option<usize>,
    /// the keys are Int32 domain codes (every key has a declared domain)
    coded: bool,
}

impl BoundedPlan {
    pub fn display(&self) -> String {
        self.plan.display_indent().to_string()
    }
}

fn dec() -> DataType {
    DataType::Decimal128(38, 0)
}

// dpq's own expressions over private rows are total like the user's: every
// cast, operator and function under a wrapper (the verifier checks the plan)
fn tcast(e: Expr, ty: DataType) -> Expr {
    total_cast().call(vec![e, lit(ScalarValue::try_from(&ty).expect("a null of a primitive type"))])
}
fn top(op: Operator, l: Expr, r: Expr) -> Expr {
    total_op(op).call(vec![l, r])
}
fn tfn(f: std::sync::Arc<datafusion::logical_expr::ScalarUDF>, args: Vec<Expr>) -> Expr {
    total_fn(f).call(args)
}

/// Clamp, drop NaN, encode on the grid as BIGINT.
fn encode(arg: Expr, lo: f64, hi: f64, grid: f64) -> Expr {
    use datafusion::functions::math;
    let x = tcast(arg, DataType::Float64);
    let clamped = super::analyze::expr::clamp_expr(x.clone(), lit(lo), lit(hi));
    let enc = tcast(tfn(math::round(), vec![top(Operator::Divide, clamped, lit(grid))]), DataType::Int64);
    when(tfn(math::isnan(), vec![x]), lit(ScalarValue::Int64(None))).otherwise(enc).expect("case builds")
}

fn bin_expr(arg: Expr, dom: &crate::privacy::quantile::Domain) -> Expr {
    use datafusion::functions::{core, math};
    let x = tcast(arg, DataType::Float64);
    let clamped = super::analyze::expr::clamp_expr(x.clone(), lit(dom.lo), lit(dom.hi));
    let idx = if dom.integer {
        tcast(tfn(math::round(), vec![top(Operator::Minus, clamped, lit(dom.lo))]), DataType::Int64)
    } else {
        let w = (dom.hi - dom.lo) / dom.bins as f64;
        let raw = if w > 0.0 && w.is_finite() {
            tfn(math::floor(), vec![top(Operator::Divide, top(Operator::Minus, clamped, lit(dom.lo)), lit(w))])
        } else {
            lit(0.0)
        };
        tcast(tfn(core::least(), vec![raw, lit((dom.bins - 1) as f64)]), DataType::Int64)
    };
    when(tfn(math::isnan(), vec![x]), lit(ScalarValue::Int64(None))).otherwise(idx).expect("case builds")
}

/// A declared domain's distinct values, first occurrence first: code i is the
/// i-th value here, both in the plan's CASE and in [`Groups`].
fn unique_values(d: &super::analyze::expr::Domain) -> Vec<ScalarValue> {
    let mut seen = std::collections::HashSet::new();
    d.values.iter().filter(|v| seen.insert((*v).clone())).cloned().collect()
}

/// Whether the plan groups by domain codes: every key has a declared domain.
fn coded(q: &DpQuery) -> bool {
    !q.keys.is_empty() && q.keys.iter().all(|k| k.domain.is_some())
}

/// The expression of group key `i`: its domain code when the plan is coded.
fn key_expr(q: &DpQuery, i: usize) -> Expr {
    let k = &q.keys[i];
    let e = match (&k.domain, coded(q)) {
        (Some(d), true) => {
            let vals = unique_values(d);
            let when_then = vals.into_iter().enumerate().map(|(c, v)| (Box::new(Expr::Literal(v, None)), Box::new(lit(c as i32)))).collect();
            Expr::Case(datafusion::logical_expr::expr::Case { expr: Some(Box::new(k.expr.clone())), when_then_expr: when_then, else_expr: None })
        }
        _ => k.expr.clone(),
    };
    e.alias(format!("__k{i}"))
}

/// Build the partials plan for the non-quantile aggregates; it also yields rows
/// and distinct people per group (for partition selection) and the per-person
/// sizes of `--auto-bounds`. It runs only when [`super::needs_counts_pass`] or
/// `--auto-bounds` asks for it.
pub fn stats_plan(q: &DpQuery, cal: &Calibration) -> Result<BoundedPlan> {
    let mut proj = vec![Expr::Column(q.unit.clone()).alias(U)];
    for i in 0..q.keys.len() {
        proj.push(key_expr(q, i));
    }
    let mut values = Vec::new();
    for (j, a) in q.aggs.iter().enumerate() {
        let ap = &cal.aggs[j];
        match a.kind {
            AggKind::CountValues => {
                proj.push(a.arg.clone().expect("count arg").alias(format!("__v{j}")));
                values.push((j, false, false));
            }
            AggKind::Sum | AggKind::Avg | AggKind::Variance { .. } => {
                let (lo, hi) = a.bounds.expect("bounded");
                let e = encode(a.arg.clone().expect("arg"), lo, hi, ap.mechanism.grid().size());
                // AVG/VARIANCE: centred exactly at the bounds' midpoint before any bounding
                let e = match ap.mechanism.centre() {
                    Some(mid) => top(Operator::Minus, e, lit(mid)),
                    None => e,
                };
                proj.push(e.alias(format!("__v{j}")));
                values.push((j, true, matches!(a.kind, AggKind::Variance { .. })));
            }
            _ => {}
        }
    }
    let mut b = LogicalPlanBuilder::from(q.source.clone()).project(proj).map_err(super::error::sql)?;
    b = b.filter(key_filter(q)).map_err(super::error::sql)?;
    let mut group: Vec<Expr> = vec![col(U)];
    group.extend((0..q.keys.len()).map(|i| col(format!("__k{i}"))));
    let mut aggs = vec![count(lit(1i64)).alias("__rows")];
    for &(j, has_sum, squares) in &values {
        let v = col(format!("__v{j}"));
        aggs.push(count(v.clone()).alias(format!("__c{j}")));
        if has_sum {
            aggs.push(sum(tcast(v.clone(), dec())).alias(format!("__s{j}")));
        }
        if squares {
            aggs.push(sum(top(Operator::Multiply, tcast(v.clone(), dec()), tcast(v, dec()))).alias(format!("__q{j}")));
        }
    }
    let plan = b.aggregate(group, aggs).map_err(super::error::sql)?.build().map_err(super::error::sql)?;
    super::analyze::verify::verify_bounded(&plan)?;
    Ok(BoundedPlan { plan, keys: q.keys.len(), values, quantile: None, coded: coded(q) })
}

/// The partials plan of one quantile aggregate: counts per (person, group, bin).
pub fn quantile_plan(q: &DpQuery, cal: &Calibration, j: usize) -> Result<BoundedPlan> {
    let a = &q.aggs[j];
    let dom = cal.aggs[j].mechanism.quantile().ok_or_else(|| super::error::internal("a quantile plan for an aggregate that is not a quantile"))?.domain;
    let mut proj = vec![Expr::Column(q.unit.clone()).alias(U)];
    for i in 0..q.keys.len() {
        proj.push(key_expr(q, i));
    }
    proj.push(bin_expr(a.arg.clone().expect("arg"), &dom).alias("__b"));
    let mut group: Vec<Expr> = vec![col(U)];
    group.extend((0..q.keys.len()).map(|i| col(format!("__k{i}"))));
    group.push(col("__b"));
    let plan = LogicalPlanBuilder::from(q.source.clone())
        .project(proj)
        .map_err(super::error::sql)?
        .filter(key_filter(q).and(col("__b").is_not_null()))
        .map_err(super::error::sql)?
        .aggregate(group, vec![count(lit(1i64)).alias("__rows")])
        .map_err(super::error::sql)?
        .build()
        .map_err(super::error::sql)?;
    super::analyze::verify::verify_bounded(&plan)?;
    Ok(BoundedPlan { plan, keys: q.keys.len(), values: vec![], quantile: Some(j), coded: coded(q) })
}

/// Rows to aggregate: a known person, and keys inside their declared domains.
/// A coded plan needs no domain filter (a code is NULL outside the domain and
/// [`Groups`] drops it), which spares a second lookup per row.
fn key_filter(q: &DpQuery) -> Expr {
    let mut f = col(U).is_not_null();
    if coded(q) {
        return f;
    }
    for (i, k) in q.keys.iter().enumerate() {
        if let Some(d) = &k.domain {
            let list: Vec<Expr> = d.values.iter().map(|v| Expr::Literal(v.clone(), None)).collect();
            f = f.and(in_list(col(format!("__k{i}")), list, false));
        }
    }
    f
}

/// Dense ids for group keys, in a deterministic (key-byte) order.
pub struct Groups {
    converter: RowConverter,
    /// Row-format key bytes → id (looked up by `&[u8]`: no allocation per row).
    ids: HashMap<Box<[u8]>, u32>,
    pub keys: Vec<Vec<ScalarValue>>,
    rows: Vec<OwnedRow>,
    pub domain_complete: bool,
    /// Per key, the number of distinct domain values (mixed-radix digits of an id).
    radix: Vec<u32>,
}

impl Groups {
    pub fn new(q: &DpQuery) -> Result<Groups> {
        let converter = RowConverter::new(q.keys.iter().map(|k| SortField::new(k.data_type.clone())).collect()).map_err(arrow_err)?;
        let mut g = Groups { converter, ids: HashMap::new(), keys: Vec::new(), rows: Vec::new(), domain_complete: false, radix: Vec::new() };
        // a global aggregate has exactly one (empty) group
        if q.keys.is_empty() {
            g.keys.push(vec![]);
            g.domain_complete = true;
            return Ok(g);
        }
        if q.keys.iter().all(|k| k.domain.is_some()) {
            // zero-filled cartesian product of the domains
            let mut combos: Vec<Vec<ScalarValue>> = vec![vec![]];
            for k in &q.keys {
                let values = unique_values(k.domain.as_ref().unwrap());
                g.radix.push(values.len() as u32);
                let mut next = Vec::with_capacity(combos.len() * values.len());
                for c in &combos {
                    for v in &values {
                        let mut c2 = c.clone();
                        c2.push(v.clone());
                        next.push(c2);
                    }
                }
                combos = next;
                if combos.len() > 1_000_000 {
                    return Err(EngineError::Invalid("the key domains multiply to more than a million groups; group by fewer columns".into()));
                }
            }
            for c in combos {
                let arrays: Vec<ArrayRef> = c.iter().map(|v| v.to_array()).collect::<std::result::Result<_, _>>().map_err(super::error::sql)?;
                let rows = g.converter.convert_columns(&arrays).map_err(arrow_err)?;
                let r = rows.row(0).owned();
                // distinct values per key make distinct combinations: the id of a
                // combination is its mixed-radix number, as coded plans compute it
                if g.ids.insert(r.row().as_ref().into(), g.keys.len() as u32).is_some() {
                    return Err(EngineError::Invalid("internal error: two domain values encode alike".into()));
                }
                g.keys.push(c);
                g.rows.push(r);
            }
            g.domain_complete = true;
        }
        Ok(g)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The id of a group from its key bytes as `dpq_bound` wrote them: the
    /// big-endian mixed-radix id of a coded plan, nothing for a global
    /// aggregate, else the keys' row encoding.
    pub fn id_of_bytes(&mut self, bytes: &[u8], coded: bool) -> Result<Option<u32>> {
        if self.rows.is_empty() && self.keys.len() == 1 && self.keys[0].is_empty() {
            return Ok(Some(0)); // global aggregate
        }
        if coded {
            let id = u32::from_be_bytes(bytes.try_into().map_err(|_| super::error::internal("a coded group id of the wrong size"))?);
            return Ok(((id as usize) < self.keys.len()).then_some(id));
        }
        if let Some(&id) = self.ids.get(bytes) {
            return Ok(Some(id));
        }
        if self.domain_complete {
            return Ok(None);
        }
        let parser = self.converter.parser();
        let row = parser.parse(bytes);
        let cols = self.converter.convert_rows([row]).map_err(arrow_err)?;
        let vals: Vec<ScalarValue> =
            cols.iter().map(|c| ScalarValue::try_from_array(c, 0)).collect::<std::result::Result<_, _>>().map_err(super::error::sql)?;
        let id = self.keys.len() as u32;
        self.ids.insert(bytes.into(), id);
        self.keys.push(vals);
        self.rows.push(self.converter.parser().parse(bytes).owned());
        Ok(Some(id))
    }

    /// Group ids in a deterministic order: the declared domain order when every
    /// key has a domain, else sorted by key bytes.
    pub fn sorted_ids(&self) -> Vec<u32> {
        if self.rows.is_empty() || self.domain_complete {
            return (0..self.keys.len() as u32).collect();
        }
        let mut ids: Vec<u32> = (0..self.keys.len() as u32).collect();
        ids.sort_by(|a, b| self.rows[*a as usize].cmp(&self.rows[*b as usize]));
        ids
    }

    #[cfg(test)]
    fn id(&mut self, key_cols: &[ArrayRef], rows: Option<&datafusion::arrow::row::Rows>, i: usize) -> Result<Option<u32>> {
        let Some(rows) = rows else { return Ok(Some(0)) }; // global aggregate
        let r = rows.row(i);
        if let Some(&id) = self.ids.get(r.as_ref()) {
            return Ok(Some(id));
        }
        if self.domain_complete {
            return Ok(None); // outside the declared domain (the plan filters these; belt and braces)
        }
        let vals: Vec<ScalarValue> =
            key_cols.iter().map(|c| ScalarValue::try_from_array(c, i)).collect::<std::result::Result<_, _>>().map_err(super::error::sql)?;
        let id = self.keys.len() as u32;
        self.ids.insert(r.as_ref().into(), id);
        self.keys.push(vals);
        self.rows.push(r.owned());
        Ok(Some(id))
    }

    /// The id of row `i` of a coded plan: the mixed-radix number of its domain
    /// codes, `None` when a code is NULL (a key outside its domain).
    #[cfg(test)]
    fn coded_id(&self, codes: &[&datafusion::arrow::array::Int32Array], i: usize) -> Option<u32> {
        let mut id: u32 = 0;
        for (c, &r) in codes.iter().zip(&self.radix) {
            if c.is_null(i) {
                return None;
            }
            let v = c.value(i);
            if v < 0 || v as u32 >= r {
                return None;
            }
            id = id * r + v as u32;
        }
        Some(id)
    }

    #[cfg(test)]
    fn key_order(&self, a: u32, b: u32) -> std::cmp::Ordering {
        // coded plans order groups by id, as `dpq_bound` does
        if self.rows.is_empty() || !self.radix.is_empty() { a.cmp(&b) } else { self.rows[a as usize].cmp(&self.rows[b as usize]) }
    }
}

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> EngineError {
    EngineError::Invalid(format!("internal Arrow error: {e}"))
}

/// Totals per group after bounding.
#[derive(Debug, Clone, Default)]
pub struct GroupTotal {
    pub rows: u64,
    pub units: u64,
    pub values: Vec<ValueStats>,
    pub hist: Vec<u64>,
}

/// Execute a bounded plan. Errors carry no data.
pub async fn execute_bounded(sessions: &Sessions, plan: &BoundedPlan) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
    let ctx: SessionContext = sessions.bounded().await?;
    let logical = match sessions.backend {
        super::session::Backend::Local => plan.plan.clone(),
        // a cluster receives the plan serialised: scans must name plain Parquet
        // listing tables (the guard is this function's BoundedPlan argument)
        super::session::Backend::Ballista(_) => unguard_scans(sessions, &plan.plan)?,
    };
    let df = ctx.execute_logical_plan(logical).await.map_err(|e| remote_error(sessions, e))?;
    let stream = df.execute_stream().await.map_err(|e| remote_error(sessions, e))?;
    // count what reaches the driver (the cluster test: O(groups), not O(people × groups))
    let received = sessions.driver_rows.clone();
    let schema = stream.schema();
    let counted = stream.inspect(move |b| {
        if let Ok(b) = b {
            received.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, counted)))
}

/// An execution error after the charge. Nothing of its text is shown: a message
/// from the engine can quote a value from a private row (DESIGN §1). What the
/// user learns is the class of failure and what to do.
fn remote_error(sessions: &Sessions, _e: datafusion::error::DataFusionError) -> EngineError {
    #[cfg(test)]
    if std::env::var_os("DPQ_TEST_SHOW_ERRORS").is_some() {
        eprintln!("(test only) withheld error: {_e}");
    }
    match sessions.backend {
        super::session::Backend::Local => EngineError::Execution,
        super::session::Backend::Ballista(_) => EngineError::Data(
            "the Ballista cluster failed while running the bounded plan (its message is withheld: it could quote a private value)\n  hint: check the scheduler's and executors' logs and that they run the same dpq version; then run the query again"
                .into(),
        ),
    }
}

/// Rebuild every table scan over the raw provider of its table.
fn unguard_scans(sessions: &Sessions, plan: &LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let out = plan
        .clone()
        .transform_up(|node| {
            Ok(match node {
                LogicalPlan::TableScan(ts) => match sessions.raw_provider(ts.table_name.table()) {
                    Some(p) => {
                        let scan =
                            datafusion::logical_expr::logical_plan::TableScanBuilder::new(ts.table_name.clone(), datafusion::datasource::provider_as_source(p))
                                .with_projection(ts.projection.clone())
                                .with_filters(ts.filters.clone())
                                .with_fetch(ts.fetch)
                                .build()?;
                        Transformed::yes(LogicalPlan::TableScan(scan))
                    }
                    None => Transformed::no(LogicalPlan::TableScan(ts)),
                },
                other => Transformed::no(other),
            })
        })
        .map_err(super::error::sql)?;
    Ok(out.data)
}

/// Stream the partials of `plan`, calling `per_unit` with each person's partials
/// (sorted by key bytes, so that randomness is used in a deterministic order).
#[cfg(test)]
async fn for_each_unit(
    sessions: &Sessions,
    plan: &BoundedPlan,
    groups: &mut Groups,
    n_values: usize,
    mut per_unit: impl FnMut(&[u8], &[GroupPartial]),
) -> Result<()> {
    // the partials, in person order
    let sorted =
        LogicalPlanBuilder::from(plan.plan.clone()).sort(vec![col(U).sort(true, false)]).map_err(super::error::sql)?.build().map_err(super::error::sql)?;
    let mut stream = execute_bounded(sessions, &BoundedPlan { plan: sorted, ..plan.clone() }).await?;
    let mut unit_conv: Option<RowConverter> = None;
    let mut current: Option<OwnedRow> = None;
    // the current person's rows (one per group and, in quantile plans, per bin),
    // merged per group at flush; the buffers are reused from person to person
    let mut parts: Vec<GroupPartial> = Vec::new();
    let mut merged: Vec<GroupPartial> = Vec::new();
    let flush = |unit: Option<&OwnedRow>,
                 parts: &mut Vec<GroupPartial>,
                 merged: &mut Vec<GroupPartial>,
                 groups: &Groups,
                 per_unit: &mut dyn FnMut(&[u8], &[GroupPartial])| {
        if parts.is_empty() {
            return;
        }
        let unit_row = unit.map(|u| u.row());
        let unit_bytes: &[u8] = unit_row.as_ref().map(|r| r.as_ref()).unwrap_or(&[]);
        parts.sort_by(|a, b| groups.key_order(a.group, b.group));
        merged.clear();
        for p in parts.drain(..) {
            match merged.last_mut() {
                Some(m) if m.group == p.group => {
                    m.rows += p.rows;
                    m.bins.extend(p.bins);
                    for (a, b) in m.values.iter_mut().zip(&p.values) {
                        a.count += b.count;
                        a.sum += b.sum;
                        a.sum_sq += b.sum_sq;
                    }
                }
                _ => merged.push(p),
            }
        }
        for p in merged.iter_mut() {
            p.bins.sort_unstable();
        }
        per_unit(unit_bytes, merged);
    };
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch.map_err(|_e| {
            #[cfg(test)]
            if std::env::var_os("DPQ_TEST_SHOW_ERRORS").is_some() {
                eprintln!("(test only) withheld error: {_e}");
            }
            EngineError::Execution
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        let ucol = batch.column(0).clone();
        if unit_conv.is_none() {
            unit_conv = Some(RowConverter::new(vec![SortField::new(ucol.data_type().clone())]).map_err(arrow_err)?);
        }
        let urows = unit_conv.as_ref().unwrap().convert_columns(&[ucol]).map_err(arrow_err)?;
        let key_cols: Vec<ArrayRef> = (0..plan.keys).map(|i| batch.column(1 + i).clone()).collect();
        let codes: Vec<&datafusion::arrow::array::Int32Array> = if plan.coded {
            key_cols
                .iter()
                .map(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>())
                .collect::<Option<_>>()
                .ok_or_else(|| EngineError::Invalid("internal error: a domain code column is not Int32".into()))?
        } else {
            vec![]
        };
        let krows = if plan.keys == 0 || plan.coded { None } else { Some(groups.converter.convert_columns(&key_cols).map_err(arrow_err)?) };
        let mut c = 1 + plan.keys;
        let bins: Option<&Int64Array> = if plan.quantile.is_some() {
            let b = batch.column(c).as_primitive::<Int64Type>();
            c += 1;
            Some(b)
        } else {
            None
        };
        let rows_col = batch.column(c).as_primitive::<Int64Type>();
        c += 1;
        // value columns: (count, sum?, squares?)
        let mut vcols: Vec<(&Int64Array, Option<&Decimal128Array>, Option<&Decimal128Array>)> = Vec::new();
        for &(_, has_sum, squares) in &plan.values {
            let cnt = batch.column(c).as_primitive::<Int64Type>();
            c += 1;
            let s = if has_sum {
                let a = batch.column(c).as_primitive::<Decimal128Type>();
                c += 1;
                Some(a)
            } else {
                None
            };
            let sq = if squares {
                let a = batch.column(c).as_primitive::<Decimal128Type>();
                c += 1;
                Some(a)
            } else {
                None
            };
            vcols.push((cnt, s, sq));
        }
        for i in 0..batch.num_rows() {
            let u = urows.row(i);
            if current.as_ref().is_none_or(|cu| cu.row() != u) {
                flush(current.as_ref(), &mut parts, &mut merged, groups, &mut per_unit);
                current = Some(u.owned());
            }
            let gid = if plan.coded { groups.coded_id(&codes, i) } else { groups.id(&key_cols, krows.as_ref(), i)? };
            let Some(gid) = gid else { continue };
            if parts.last().is_none_or(|p| p.group != gid) {
                parts.push(GroupPartial { group: gid, rows: 0, values: vec![ValueStats::default(); n_values], bins: vec![] });
            }
            let p = parts.last_mut().expect("just pushed");
            let r = rows_col.value(i) as u64;
            p.rows += r;
            if let Some(b) = bins {
                p.bins.push((b.value(i) as u32, r));
            }
            for (vi, (cnt, s, sq)) in vcols.iter().enumerate() {
                let v = &mut p.values[vi];
                v.count += cnt.value(i) as u64;
                if let Some(s) = s
                    && s.is_valid(i)
                {
                    v.sum += s.value(i);
                }
                if let Some(sq) = sq
                    && sq.is_valid(i)
                {
                    v.sum_sq += sq.value(i);
                }
            }
        }
    }
    flush(current.as_ref(), &mut parts, &mut merged, groups, &mut per_unit);
    Ok(())
}

/// The joint histogram of per-person sizes for auto-bounds: ((log₂ bin of rows,
/// of groups, of the largest group), people), computed in the engine — the
/// driver receives at most one row per occupied cell.
pub async fn shape_histogram(sessions: &Sessions, plan: &BoundedPlan) -> Result<Vec<((usize, usize, usize), u64)>> {
    use datafusion::functions_aggregate::expr_fn::max;
    let log2 = |e: Expr| super::bound_op::log2_bin_udf().call(vec![e]);
    let shapes = LogicalPlanBuilder::from(plan.plan.clone())
        .aggregate(vec![col(U)], vec![sum(col("__rows")).alias("__r"), count(lit(1i64)).alias("__g"), max(col("__rows")).alias("__m")])
        .map_err(super::error::sql)?
        .project(vec![log2(col("__r")).alias("__rb"), log2(col("__g")).alias("__gb"), log2(col("__m")).alias("__mb")])
        .map_err(super::error::sql)?
        .aggregate(vec![col("__rb"), col("__gb"), col("__mb")], vec![count(lit(1i64)).alias("__n")])
        .map_err(super::error::sql)?
        .build()
        .map_err(super::error::sql)?;
    super::analyze::verify::verify_bounded(&shapes)?;
    let b = BoundedPlan { plan: shapes, ..plan.clone() };
    let mut stream = execute_bounded(sessions, &b).await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| stream_error(sessions, e))?;
        let c = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
        let (rb, gb, mb, n) = (c(0), c(1), c(2), c(3));
        for i in 0..batch.num_rows() {
            out.push(((rb.value(i) as usize, gb.value(i) as usize, mb.value(i) as usize), n.value(i) as u64));
        }
    }
    Ok(out)
}

fn stream_error(sessions: &Sessions, _e: datafusion::error::DataFusionError) -> EngineError {
    #[cfg(test)]
    if std::env::var_os("DPQ_TEST_SHOW_ERRORS").is_some() {
        eprintln!("(test only) withheld error: {_e}");
    }
    match sessions.backend {
        super::session::Backend::Local => EngineError::Execution,
        _ => remote_error(sessions, _e),
    }
}

/// People in a bounded pass and those whose rows the limits cut (exact: the
/// driver adds the disclosure's noise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeopleCut {
    pub people: u64,
    pub cut: u64,
}

/// The operator plan over a partials plan: `dpq_bound` per person, unnest,
/// `dpq_total` per group (see the module documentation).
pub fn totals_plan(plan: &BoundedPlan, groups: &Groups, cal: &Calibration, seed: &[u8; 32], plan_tag: u64) -> Result<BoundedPlan> {
    use super::bound_op::{BoundConfig, bound_udaf, total_udaf};
    let limits = limits(plan, cal);
    let cfg = BoundConfig {
        family: cal.family,
        seed: hex::encode(seed),
        tag: plan_tag,
        keys: plan.keys,
        radix: if plan.coded { Some(groups.radix.clone()) } else { None },
        values: plan.values.iter().map(|&(_, s, q)| (s, q)).collect(),
        quantile: plan.quantile.is_some(),
        limits: limits.iter().map(|l| (l.abs.to_string(), l.sq.map(|q| q.to_string()))).collect(),
    };
    let mut args = vec![col(U)];
    args.extend((0..plan.keys).map(|i| col(format!("__k{i}"))));
    if plan.quantile.is_some() {
        args.push(col("__b"));
    }
    args.push(col("__rows"));
    for &(j, s, q) in &plan.values {
        args.push(col(format!("__c{j}")));
        if s {
            args.push(col(format!("__s{j}")));
        }
        if q {
            args.push(col(format!("__q{j}")));
        }
    }
    args.push(lit(serde_json::to_string(&cfg).expect("config serialises")));
    let field = |name: &str| datafusion::functions::core::expr_fn::get_field(col("__bounded"), name);
    let totals_plan = LogicalPlanBuilder::from(plan.plan.clone())
        .aggregate(vec![col(U)], vec![bound_udaf().call(args).alias("__bounded")])
        .map_err(super::error::sql)?
        .unnest_column("__bounded")
        .map_err(super::error::sql)?
        .project(vec![field("g").alias("__g"), field("c").alias("__contribution")])
        .map_err(super::error::sql)?
        .aggregate(vec![col("__g")], vec![total_udaf().call(vec![col("__contribution")]).alias("__total")])
        .map_err(super::error::sql)?
        .build()
        .map_err(super::error::sql)?;
    super::analyze::verify::verify_bounded(&totals_plan)?;
    Ok(BoundedPlan { plan: totals_plan, ..plan.clone() })
}

/// Bound every person in the engine and total the bounded contributions per
/// group: the plan groups the partials by person, applies `dpq_bound` (every
/// contribution checked against the family's limits and the calibrated value
/// ranges; one outside them fails the query closed), unnests and sums per
/// group with `dpq_total`. The driver receives one row per group (and quantile
/// bin) plus one for the people counts. `seed` is the bounding seed.
#[allow(clippy::too_many_arguments)]
pub async fn bounded_totals(
    sessions: &Sessions,
    plan: &BoundedPlan,
    groups: &mut Groups,
    cal: &Calibration,
    bins: usize,
    seed: &[u8; 32],
    plan_tag: u64,
) -> Result<(HashMap<u32, GroupTotal>, PeopleCut)> {
    use super::bound_op::Contribution;
    let b = totals_plan(plan, groups, cal, seed, plan_tag)?;
    let mut stream = execute_bounded(sessions, &b).await?;
    let nv = plan.values.len();
    let mut totals: HashMap<u32, GroupTotal> = HashMap::new();
    let mut people = PeopleCut::default();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| stream_error(sessions, e))?;
        let g = batch.column(0).as_binary::<i32>();
        let t = batch.column(1).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            let c = Contribution::decode(t.value(i)).map_err(|e| super::error::internal(format!("a bounded total does not read: {e}")))?;
            if g.is_null(i) {
                people.people += c.people;
                people.cut += c.cut;
                continue;
            }
            let Some(id) = groups.id_of_bytes(g.value(i), plan.coded)? else { continue };
            let mut hist = if bins > 0 { vec![0u64; bins] } else { vec![] };
            for (bin, n) in c.hist {
                if let Some(h) = hist.get_mut(bin as usize) {
                    *h += n;
                }
            }
            let mut values = c.values;
            values.resize(nv, ValueStats::default());
            totals.insert(id, GroupTotal { rows: c.rows, units: c.units, values, hist });
        }
    }
    Ok((totals, people))
}

/// Add one person's bounded contributions to the group totals.
#[cfg(test)]
pub(crate) fn add_contributions(totals: &mut HashMap<u32, GroupTotal>, contributions: Vec<bounding::Contribution>, nv: usize, bins: usize) {
    for c in contributions {
        let t = totals.entry(c.group).or_insert_with(|| GroupTotal {
            values: vec![ValueStats::default(); nv],
            hist: if bins > 0 { vec![0; bins] } else { vec![] },
            ..Default::default()
        });
        t.rows += c.rows;
        t.units += 1;
        for (a, b) in t.values.iter_mut().zip(&c.values) {
            a.count += b.count;
            a.sum += b.sum;
            a.sum_sq += b.sum_sq;
        }
        for (b, n) in c.bins {
            if let Some(h) = t.hist.get_mut(b as usize) {
                *h += n;
            }
        }
    }
}

/// Every person's exact partials (before bounding), for audits that re-bound
/// with fresh randomness in every trial.
#[cfg(test)]
pub(crate) async fn unit_partials(sessions: &Sessions, plan: &BoundedPlan, groups: &mut Groups) -> Result<Vec<Vec<GroupPartial>>> {
    let mut out = Vec::new();
    let nv = plan.values.len();
    for_each_unit(sessions, plan, groups, nv, |_, parts| out.push(parts.to_vec())).await?;
    Ok(out)
}

/// Every person's identity (row-encoded unit) and exact partials, for tests
/// that bound in the driver as a reference.
#[cfg(test)]
pub(crate) async fn unit_partials_with_units(sessions: &Sessions, plan: &BoundedPlan, groups: &mut Groups) -> Result<Vec<(Vec<u8>, Vec<GroupPartial>)>> {
    let mut out = Vec::new();
    let nv = plan.values.len();
    for_each_unit(sessions, plan, groups, nv, |u, parts| out.push((u.to_vec(), parts.to_vec()))).await?;
    Ok(out)
}

/// The value limits of a plan's value columns (for [`bounding::check`]).
pub(crate) fn limits(plan: &BoundedPlan, cal: &Calibration) -> Vec<bounding::ValueLimit> {
    plan.values.iter().map(|&(j, _, _)| cal.aggs[j].mechanism.value_limit()).collect()
}

/// How many value columns a plan carries.
#[cfg(test)]
pub(crate) fn value_count(plan: &BoundedPlan) -> usize {
    plan.values.len()
}

/// Which value slot of a stats plan holds aggregate `j`.
pub fn value_slot(plan: &BoundedPlan, j: usize) -> Option<usize> {
    plan.values.iter().position(|(k, _, _)| *k == j)
}
