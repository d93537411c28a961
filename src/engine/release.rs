//! From bounded group totals to released numbers: partition selection, noise,
//! confidence intervals, then post-processing (HAVING, ORDER BY, LIMIT, windows,
//! arithmetic) on the noisy table only.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, col};
use datafusion::prelude::SessionContext;
use rand::{CryptoRng, RngCore};

use super::analyze::{AggKind, DpQuery};
use super::bounded::{GroupTotal, Groups};
use super::error::{EngineError, Result, refused};
use super::plan::{AggMechanism, Calibration};
use super::result::{ColumnMeta, Noisy, QueryResult};

pub const LO: &str = "__dpq_lo";
pub const HI: &str = "__dpq_hi";
pub const SD: &str = "__dpq_sd";

pub use crate::privacy::mechanisms::Cell;

/// Select the groups to release (all domain groups, or those passing partition selection).
pub fn released_groups<R: RngCore + CryptoRng>(groups: &Groups, stats: &HashMap<u32, GroupTotal>, cal: &Calibration, rng: &mut R) -> Result<Vec<u32>> {
    let ids = groups.sorted_ids();
    let Some(sel) = &cal.selection else { return Ok(ids) };
    let units = |id: u32| stats.get(&id).map(|t| t.units).unwrap_or(0);
    // every candidate draws its own decision; absent keys are never candidates (they have no rows)
    Ok(ids.into_iter().filter(|&id| sel.keep(rng, units(id))).collect())
}

/// Release every aggregate for one group through its mechanism.
pub fn release_group<R: RngCore + CryptoRng>(
    q: &DpQuery,
    cal: &Calibration,
    stats: Option<&GroupTotal>,
    quantile_hists: &[Option<&GroupTotal>],
    value_slots: &[Option<usize>],
    rng: &mut R,
) -> Result<Vec<Cell>> {
    let conf = cal.confidence;
    let empty = GroupTotal::default();
    let st = stats.unwrap_or(&empty);
    let mut out = Vec::new();
    for (j, a) in q.aggs.iter().enumerate() {
        let vs = value_slots[j].and_then(|s| st.values.get(s)).copied().unwrap_or_default();
        let cell = match &cal.aggs[j].mechanism {
            AggMechanism::Count(c) => {
                let exact = match a.kind {
                    AggKind::CountRows => st.rows,
                    AggKind::CountValues => vs.count,
                    _ => st.units,
                };
                c.release(rng, exact, conf)
            }
            AggMechanism::Sum(m) => m.release(rng, vs.sum, conf),
            AggMechanism::Mean(m) => m.release(rng, vs.count as i128, vs.sum, conf),
            AggMechanism::Variance(m) => m.release(rng, vs.count as i128, vs.sum, vs.sum_sq, conf),
            AggMechanism::Quantile(m) => {
                let hist: Vec<u64> = quantile_hists[j].map(|t| t.hist.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| vec![0; m.domain.bins]);
                m.release(rng, &hist, conf).map_err(|e| EngineError::Invalid(e.to_string()))?
            }
        };
        out.push(cell);
    }
    Ok(out)
}

/// Convert a float to a JSON-friendly scalar of `ty`.
fn typed(v: f64, ty: &DataType) -> ScalarValue {
    if ty.is_integer() {
        ScalarValue::Int64(Some(v.round() as i64)).cast_to(ty).unwrap_or(ScalarValue::Int64(Some(v.round() as i64)))
    } else {
        ScalarValue::Float64(Some(v)).cast_to(ty).unwrap_or(ScalarValue::Float64(Some(v)))
    }
}

/// Build the noisy table (keys, released values, hidden interval columns) and
/// run the query's post-processing on it, in a session that holds no private data.
pub async fn post_process(q: &DpQuery, groups: &Groups, released: &[(u32, Vec<Cell>)], cal: &Calibration) -> Result<QueryResult> {
    let plan = post_plan(q, groups, released)?;
    let ctx = SessionContext::new();
    let batches = ctx.execute_logical_plan(plan).await.map_err(super::error::sql)?.collect().await.map_err(super::error::sql)?;
    Ok(to_result(&batches, cal.confidence))
}

/// Check at planning time that the post-processing can carry intervals (builds
/// the plan over an empty noisy table; nothing is executed).
pub fn check_post_processing(q: &DpQuery) -> Result<()> {
    let groups = Groups::new(q)?;
    post_plan(q, &groups, &[]).map(|_| ())
}

/// The schema of the post-processed answer (keys, released values and their
/// hidden interval columns), known before anything runs.
pub fn output_schema(q: &DpQuery) -> Result<datafusion::arrow::datatypes::SchemaRef> {
    let groups = Groups::new(q)?;
    Ok(Arc::new(post_plan(q, &groups, &[])?.schema().as_arrow().clone()))
}

fn post_plan(q: &DpQuery, groups: &Groups, released: &[(u32, Vec<Cell>)]) -> Result<LogicalPlan> {
    let n_keys = q.keys.len();
    let agg_fields: Vec<(Option<datafusion::common::TableReference>, Arc<Field>)> = q.agg_schema.iter().map(|(qf, f)| (qf.cloned(), f.clone())).collect();
    // noisy table columns: __c0.. for every aggregate-schema field, + hidden columns
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, (_, f)) in agg_fields.iter().enumerate() {
        let ty = f.data_type().clone();
        let vals: Vec<ScalarValue> =
            released.iter().map(|(gid, cells)| if i < n_keys { groups.keys[*gid as usize][i].clone() } else { typed(cells[i - n_keys].value, &ty) }).collect();
        let arr = if vals.is_empty() { datafusion::arrow::array::new_empty_array(&ty) } else { ScalarValue::iter_to_array(vals).map_err(super::error::sql)? };
        fields.push(Field::new(format!("__c{i}"), arr.data_type().clone(), true));
        arrays.push(arr);
    }
    for j in 0..q.aggs.len() {
        for (suffix, pick) in [(LO, 0), (HI, 1), (SD, 2)] {
            let v: Float64Array = released
                .iter()
                .map(|(_, cells)| {
                    let c = cells[j];
                    Some(match pick {
                        0 => c.lo,
                        1 => c.hi,
                        _ => c.sd,
                    })
                })
                .collect();
            fields.push(Field::new(format!("__c{}{suffix}", n_keys + j), DataType::Float64, true));
            arrays.push(Arc::new(v));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(super::error::sql)?;
    // replacement for the DP aggregate: the noisy columns under the aggregate's names
    let mut proj = Vec::new();
    for (i, (qual, f)) in agg_fields.iter().enumerate() {
        let c = col(Column::new_unqualified(format!("__c{i}")));
        proj.push(c.alias_qualified(qual.clone(), f.name()));
    }
    for j in 0..q.aggs.len() {
        let (qual, f) = &agg_fields[n_keys + j];
        for suffix in [LO, HI, SD] {
            proj.push(col(Column::new_unqualified(format!("__c{}{suffix}", n_keys + j))).alias_qualified(qual.clone(), format!("{}{suffix}", f.name())));
        }
    }
    let base = LogicalPlanBuilder::scan("__dpq_noisy", provider_as_source(Arc::new(table)), None)
        .map_err(super::error::sql)?
        .project(proj)
        .map_err(super::error::sql)?
        .build()
        .map_err(super::error::sql)?;
    rebuild(&q.plan, q.depth, base)
}

/// Rebuild the post-processing chain over `base` (which replaces the node at `depth`).
fn rebuild(plan: &LogicalPlan, depth: usize, base: LogicalPlan) -> Result<LogicalPlan> {
    if depth == 0 {
        return Ok(base);
    }
    let child = rebuild(plan.inputs()[0], depth - 1, base)?;
    let child_schema = child.schema().clone();
    let mut exprs = plan.expressions();
    if let LogicalPlan::Projection(_) = plan {
        let mut extra = Vec::new();
        for e in &exprs {
            extra.extend(interval_exprs(e, &child_schema)?);
        }
        exprs.extend(extra);
        return LogicalPlanBuilder::from(child).project(exprs).map_err(super::error::sql)?.build().map_err(super::error::sql);
    }
    plan.with_new_exprs(exprs, vec![child]).map_err(super::error::sql)
}

/// The hidden column of `c` with `suffix`, if `c` is noisy in `schema`.
fn hidden(c: &Column, suffix: &str, schema: &DFSchemaRef) -> Option<Column> {
    let name = format!("{}{suffix}", c.name);
    schema.iter().find(|(_, f)| f.name() == &name).map(|(q, f)| Column::new(q.cloned(), f.name()))
}

/// For an output expression over noisy columns, the expressions of its interval
/// ends and standard deviation. Only expressions monotone in one noisy value are
/// supported (a CI maps through a monotone function); others are refused.
fn interval_exprs(e: &Expr, schema: &DFSchemaRef) -> Result<Vec<Expr>> {
    let mut noisy: Vec<Column> = Vec::new();
    e.apply(|x| {
        if let Expr::Column(c) = x
            && !c.name.ends_with(LO)
            && !c.name.ends_with(HI)
            && !c.name.ends_with(SD)
            && hidden(c, LO, schema).is_some()
            && !noisy.contains(c)
        {
            noisy.push(c.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(super::error::sql)?;
    if noisy.is_empty() {
        return Ok(vec![]);
    }
    let name = e.schema_name().to_string();
    let out_name = match e {
        Expr::Column(c) => c.name.clone(),
        _ => crate::sqltext::sql_notation(&name),
    };
    if noisy.len() > 1 || !monotone(e, &noisy[0]) {
        let names: Vec<String> = noisy.iter().map(|c| c.name.clone()).collect();
        // the expression itself, not its alias
        let name = match e {
            Expr::Alias(a) => a.expr.schema_name().to_string(),
            _ => name,
        };
        return Err(refused(
            format!("the output expression `{name}`"),
            "it combines noisy aggregates in a way dpq cannot attach an honest confidence interval to",
            ratio_fix(&name, &names),
        ));
    }
    let c = &noisy[0];
    let subst = |with: Expr| -> Result<Expr> {
        Ok(e.clone()
            .transform(|x| {
                Ok(match &x {
                    Expr::Column(cc) if cc == c => Transformed::yes(with.clone()),
                    _ => Transformed::no(x),
                })
            })
            .map_err(super::error::sql)?
            .data)
    };
    let strip = |x: Expr| match x {
        Expr::Alias(a) => *a.expr,
        other => other,
    };
    let lo = strip(subst(Expr::Column(hidden(c, LO, schema).unwrap()))?);
    let hi = strip(subst(Expr::Column(hidden(c, HI, schema).unwrap()))?);
    let plus = strip(subst(Expr::Column(c.clone()) + Expr::Column(hidden(c, SD, schema).unwrap()))?);
    let base = strip(e.clone());
    let sd = datafusion::functions::math::expr_fn::abs(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(datafusion::logical_expr::cast(plus, DataType::Float64)),
        Operator::Minus,
        Box::new(datafusion::logical_expr::cast(base, DataType::Float64)),
    )));
    Ok(vec![
        datafusion::logical_expr::cast(lo, DataType::Float64).alias(format!("{out_name}{LO}")),
        datafusion::logical_expr::cast(hi, DataType::Float64).alias(format!("{out_name}{HI}")),
        sd.alias(format!("{out_name}{SD}")),
    ])
}

/// Built only from the noisy column, literals, +/− with noise-free terms, × or ÷
/// by literals, casts and rounding: monotone in the noisy value.
fn monotone(e: &Expr, c: &Column) -> bool {
    let has = |x: &Expr| x.column_refs().contains(c);
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::Alias(a) => monotone(&a.expr, c),
        Expr::Cast(x) => monotone(&x.expr, c),
        Expr::TryCast(x) => monotone(&x.expr, c),
        Expr::Negative(x) => monotone(x, c),
        Expr::BinaryExpr(b) => match b.op {
            Operator::Plus | Operator::Minus => {
                (!has(&b.left) || monotone(&b.left, c)) && (!has(&b.right) || monotone(&b.right, c)) && !(has(&b.left) && has(&b.right))
            }
            Operator::Multiply => {
                (matches!(*b.left, Expr::Literal(..)) && monotone(&b.right, c)) || (matches!(*b.right, Expr::Literal(..)) && monotone(&b.left, c))
            }
            Operator::Divide => matches!(*b.right, Expr::Literal(..)) && monotone(&b.left, c),
            _ => false,
        },
        Expr::ScalarFunction(f) => matches!(f.func.name(), "round" | "floor" | "ceil" | "trunc") && f.args.first().is_some_and(|a| monotone(a, c)),
        _ => false,
    }
}

fn json_of(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if v.is_null() {
        return J::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(x)) => J::from(*x),
        ScalarValue::Int16(Some(x)) => J::from(*x),
        ScalarValue::Int32(Some(x)) => J::from(*x),
        ScalarValue::Int64(Some(x)) => J::from(*x),
        ScalarValue::UInt8(Some(x)) => J::from(*x),
        ScalarValue::UInt16(Some(x)) => J::from(*x),
        ScalarValue::UInt32(Some(x)) => J::from(*x),
        ScalarValue::UInt64(Some(x)) => J::from(*x),
        ScalarValue::Float32(Some(x)) => serde_json::Number::from_f64(*x as f64).map(J::Number).unwrap_or(J::Null),
        ScalarValue::Float64(Some(x)) => serde_json::Number::from_f64(*x).map(J::Number).unwrap_or(J::Null),
        ScalarValue::Utf8(Some(x)) | ScalarValue::LargeUtf8(Some(x)) | ScalarValue::Utf8View(Some(x)) => J::String(x.clone()),
        // times, dates, intervals, decimals: as arrow displays them (ISO 8601 for
        // times and dates), never the raw integer of their storage
        other => J::String(
            other.to_array().ok().and_then(|a| datafusion::arrow::util::display::array_value_to_string(&a, 0).ok()).unwrap_or_else(|| other.to_string()),
        ),
    }
}

fn f64_of(v: &ScalarValue) -> f64 {
    match v.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(Some(x))) => x,
        _ => f64::NAN,
    }
}

/// Assemble the output: hidden columns become each noisy cell's interval.
pub fn to_result(batches: &[RecordBatch], confidence: f64) -> QueryResult {
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let visible: Vec<usize> = (0..names.len()).filter(|&i| !names[i].ends_with(LO) && !names[i].ends_with(HI) && !names[i].ends_with(SD)).collect();
    let find = |n: &str| names.iter().position(|x| x == n);
    let columns: Vec<ColumnMeta> = visible
        .iter()
        .map(|&i| ColumnMeta {
            name: names[i].clone(),
            data_type: schema.field(i).data_type().to_string(),
            noisy: find(&format!("{}{LO}", names[i])).is_some(),
        })
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut obj = serde_json::Map::new();
            for (ci, &i) in visible.iter().enumerate() {
                let v = ScalarValue::try_from_array(b.column(i), r).unwrap_or(ScalarValue::Null);
                let cell = if columns[ci].noisy {
                    let get = |s: &str| {
                        find(&format!("{}{s}", names[i]))
                            .map(|k| f64_of(&ScalarValue::try_from_array(b.column(k), r).unwrap_or(ScalarValue::Null)))
                            .unwrap_or(f64::NAN)
                    };
                    let (a, z) = (get(LO), get(HI));
                    serde_json::to_value(Noisy { value: json_of(&v), stddev: get(SD), ci_low: a.min(z), ci_high: a.max(z), confidence }).unwrap()
                } else {
                    json_of(&v)
                };
                obj.insert(names[i].clone(), cell);
            }
            rows.push(obj);
        }
    }
    QueryResult { columns, bounding_used: None, family: None, bias: None, rows, privacy: None, notes: vec![] }
}

/// Public queries: plain values.
pub fn plain_result(batches: &[RecordBatch]) -> QueryResult {
    to_result(batches, 0.0)
}

/// The way out of a refused combination of noisy aggregates, as SQL to paste
/// where a pattern is recognised: a sum over a count is `AVG`, a share is
/// the `AVG` of a 0/1 `CASE`, rows per person is a per-person sub-query.
pub fn ratio_fix(expr: &str, noisy: &[String]) -> String {
    let inner = |n: &str, f: &str| n.strip_prefix(f).and_then(|r| r.strip_suffix(')')).map(str::to_string);
    let sum = noisy.iter().find_map(|n| inner(n, "sum("));
    let count_all = noisy.iter().any(|n| n == "count(*)" || n.starts_with("count(") && !n.starts_with("count(DISTINCT"));
    let distinct = noisy.iter().find_map(|n| inner(n, "count(DISTINCT "));
    if noisy.iter().any(|n| n.contains("ROWS BETWEEN") || n.contains(" OVER ")) || expr.contains("ROWS BETWEEN") {
        return "a percent of total: release the counts per group (SELECT key, COUNT(*) … GROUP BY key) and divide each by their sum afterwards (post-processing of released numbers costs nothing), or ask for one group's share: 100 * AVG(CASE WHEN key = '…' THEN 1 ELSE 0 END)".into();
    }
    if !expr.contains(" / ") {
        return "return the aggregates as separate columns and combine them after the release".into();
    }
    match (noisy.len(), sum, count_all, distinct) {
        (2, Some(x), true, None) if x.starts_with("CASE") => {
            format!("a share is the mean of a 0/1 expression, one aggregate with one interval: AVG({x}) (multiply by 100 for percent: 100 * AVG({x}))")
        }
        (2, Some(x), true, None) => format!("a sum over a count is a mean, one aggregate with one interval: AVG({x})"),
        (2, None, true, Some(u)) => {
            let u_bare = u.rsplit('.').next().unwrap_or(&u).to_string();
            format!(
                "rows per person is a mean over people, with a cap you choose: SELECT AVG(LEAST(n, 100)) FROM (SELECT {u_bare}, COUNT(*) AS n FROM … GROUP BY {u_bare}) AS per_person"
            )
        }
        _ => "return the aggregates as separate columns; for a ratio of a sum to a count use AVG(x), for a share AVG(CASE WHEN … THEN 1 ELSE 0 END)".into(),
    }
}
