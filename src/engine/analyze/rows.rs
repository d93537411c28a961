//! Rule: row operations over private rows (`WHERE`, `SELECT` expressions,
//! `ORDER BY`, aliases).
//!
//! Each keeps rows per person: a filter drops rows, a projection computes new
//! columns from one row at a time, so per-person bounding still applies below
//! the aggregate. Their expressions must be accepted row expressions and are
//! made total. `LIMIT` (and `ORDER BY … LIMIT`) below the aggregate is refused:
//! which rows survive would depend on other people's rows.

use datafusion::logical_expr::LogicalPlan;

use super::expr::make_total;
use super::{Analyzer, Rel, check_no_subquery_exprs, refused};
use crate::engine::error::{EngineError, Result};

impl Analyzer<'_> {
    pub(super) fn row_op(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
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
            let name = e.schema_name().to_string();
            let total = make_total(e, &schema, what)?;
            exprs.push(if matches!(plan, LogicalPlan::Projection(_)) { total.alias_if_changed(name).map_err(crate::engine::error::sql)? } else { total });
        }
        let new_plan = plan.with_new_exprs(exprs, vec![new_input]).map_err(crate::engine::error::sql)?;
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
}

pub(super) fn limit_refusal() -> EngineError {
    refused(
        "LIMIT (or ORDER BY … LIMIT) inside a sub-query over private rows",
        "which rows survive a LIMIT depends on other people's rows, so per-person bounding no longer holds",
        "remove the LIMIT from the sub-query; LIMIT on the final (noisy) result is fine",
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn filters_and_projections_are_made_total() {
        let plan = scan("messages")
            .filter((col("length") / col("user_id")).gt(lit(1)))
            .unwrap()
            .project(vec![col("user_id"), (col("length") * lit(2)).alias("twice")])
            .unwrap()
            .aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![sum(col("twice"))])
            .unwrap()
            .build()
            .unwrap();
        let q = dp(plan);
        let src = q.source.display_indent().to_string();
        assert!(src.contains("total_op_divide"), "{src}");
        assert!(src.contains("total_op_multiply"), "{src}");
        assert_eq!(q.aggs[0].bounds, Some((0.0, 4000.0)), "bounds follow the projection");
    }

    #[test]
    fn limit_below_the_aggregate_is_refused() {
        let plan =
            scan("messages").limit(0, Some(10)).unwrap().aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![count(lit(1))]).unwrap().build().unwrap();
        assert!(refusal(plan).contains("LIMIT"));
    }
}
