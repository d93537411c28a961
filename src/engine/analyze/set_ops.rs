//! Rule: set operations, windows and anything else below the aggregate.
//!
//! `DISTINCT` over private rows is accepted only when the unit is among the
//! columns (per-person de-duplication); `UNION`s and windows touching private
//! rows are refused (rows from several sources, or values computed across
//! people). Any other plan node over private rows is refused: unknown shapes
//! fail closed. The same nodes over public rows only are left as they are.

use datafusion::logical_expr::{Distinct, LogicalPlan};

use super::expr::ColInfo;
use super::{Analyzer, Rel, is_private_scan, node_name, refused};
use crate::engine::error::Result;

impl Analyzer<'_> {
    pub(super) fn other_node(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
        match plan {
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let (new_input, rel) = self.rel(input)?;
                if rel.private && !rel.cols.iter().any(|c| c.unit) {
                    return Err(refused(
                        "DISTINCT over private rows without the privacy unit",
                        "de-duplicating across people lets one person's row hide another's",
                        "include the privacy unit in the DISTINCT columns (per-person de-duplication)",
                    ));
                }
                let new_plan = plan.with_new_exprs(vec![], vec![new_input]).map_err(crate::engine::error::sql)?;
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
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn distinct_needs_the_unit_and_unions_are_refused() {
        let per_person = scan("messages").project(vec![col("user_id"), col("chat_kind")]).unwrap().distinct().unwrap();
        let ok = per_person.aggregate(vec![col("chat_kind")], vec![count(lit(1))]).unwrap().build().unwrap();
        dp(ok);
        let across = scan("messages").project(vec![col("chat_kind")]).unwrap().distinct().unwrap();
        let bad = across.aggregate(vec![col("chat_kind")], vec![count(lit(1))]).unwrap().build().unwrap();
        assert!(refusal(bad).contains("without the privacy unit"));
        let u =
            scan("messages").union(scan("messages").build().unwrap()).unwrap().aggregate(vec![col("chat_kind")], vec![count(lit(1))]).unwrap().build().unwrap();
        assert!(refusal(u).contains("UNION"));
    }
}
