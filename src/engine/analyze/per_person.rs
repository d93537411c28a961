//! Rule: per-person sub-queries.
//!
//! A sub-query grouped by the privacy unit (plus per-person attributes) turns a
//! person's rows into one summary row per person ("messages per person per
//! day", "the hour of a person's last message"); the outer DP aggregate then
//! bounds people, not rows, with one row per person (structural bounds of 1).
//! A sub-query that aggregates across people is refused: its rows mix people.
//! The inner aggregates (COUNT, SUM, AVG, MIN, MAX, MEDIAN, STDDEV, …) run on one
//! person's rows only, so any of them is fine — they release nothing; their
//! arguments are accepted row expressions, made total, and their output bounds
//! are derived from the arguments' bounds.

use std::sync::Arc;

use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

use super::expr::{ColInfo, check_row_expr, finite, infer_bounds, infer_domain, make_total, make_total_aggregate};
use super::{Analyzer, Rel, refused};
use crate::engine::error::Result;

impl Analyzer<'_> {
    pub(super) fn per_person(&mut self, plan: &LogicalPlan, a: &Aggregate) -> Result<(LogicalPlan, Rel)> {
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
        // keep every output's name: the outer query refers to them
        let mut exprs = Vec::new();
        for g in &a.group_expr {
            let name = g.schema_name().to_string();
            exprs.push(make_total(g.clone(), &schema, "a sub-query GROUP BY")?.alias_if_changed(name).map_err(crate::engine::error::sql)?);
        }
        for e in &a.aggr_expr {
            exprs.push(make_total_aggregate(e.clone(), &schema)?);
        }
        let new_plan = plan.with_new_exprs(exprs, vec![new_input]).map_err(crate::engine::error::sql)?;
        Ok((new_plan, Rel { cols, private: true }))
    }

    pub(super) fn inner_aggregate(&self, e: &Expr, schema: &DFSchemaRef, rel: &Rel, per_person: bool) -> Result<ColInfo> {
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
            missing_domain: None,
        })
    }
}

/// Is `plan` (the DP aggregate's input) one row per person? True when every
/// column is the unit or a per-person attribute: the rows of a sub-query
/// grouped by the unit and per-person attributes, or of tables declared
/// `one_row_per_unit` (enforced at ingest: duplicates are quarantined) joined on
/// the unit, filtered or projected. Then each person adds at most one row —
/// structural bounds of 1, with no limit to choose and nothing cut.
pub(super) fn is_per_person(_plan: &LogicalPlan, rel: &Rel) -> bool {
    rel.cols.iter().any(|c| c.unit) && rel.cols.iter().all(|c| c.unit || c.unit_attr)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::{avg, count, max, median};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn per_person_summaries_feed_the_outer_aggregate() {
        let inner =
            scan("messages").aggregate(vec![col("user_id")], vec![count(lit(1)).alias("n"), max(col("length")).alias("longest")]).unwrap().build().unwrap();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(inner)
            .aggregate(
                Vec::<datafusion::logical_expr::Expr>::new(),
                vec![avg(col("longest")), median(crate::engine::session::clamp_udf().call(vec![col("n"), lit(0.0), lit(100.0)]))],
            )
            .unwrap()
            .build()
            .unwrap();
        let q = dp(plan);
        assert!(q.per_person);
        assert_eq!(q.aggs[0].bounds, Some((0.0, 2000.0)), "MAX per person keeps the column's bounds");
        assert_eq!(q.aggs[1].bounds, Some((0.0, 100.0)));
        let inner = datafusion::logical_expr::LogicalPlanBuilder::from(
            scan("messages").aggregate(vec![col("user_id")], vec![count(lit(1)).alias("n")]).unwrap().build().unwrap(),
        )
        .aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![median(col("n"))])
        .unwrap()
        .build()
        .unwrap();
        assert!(refusal(inner).contains("has no bounds"), "a per-person count has no upper bound");
    }

    #[test]
    fn sub_queries_across_people_are_refused() {
        let inner = scan("messages").aggregate(vec![col("emoji")], vec![count(lit(1)).alias("n")]).unwrap().build().unwrap();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(inner)
            .aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap();
        assert!(refusal(plan).contains("aggregates across people"));
    }
}
