//! Rule: the post-processing chain above the DP aggregate.
//!
//! Accepted above the aggregate: `Projection`, `Filter` (HAVING), `Sort`,
//! `Limit`, `SubqueryAlias`, and windows over the aggregate's output. They run
//! on the noisy result only, so they cost nothing and cannot leak (post-processing
//! of a DP release is DP). Refused: anything that would output rows that are not
//! the aggregate's (`DISTINCT`/`UNION` over private rows, a join above the
//! aggregate, a bare `SELECT` over private rows), and windows over private rows.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

use super::check_no_subquery_exprs;
use super::{Agg, refused};
use crate::engine::error::Result;

/// Walk from the root to the DP aggregate: (its depth, the aggregate).
pub(super) fn dp_aggregate_of(plan: &LogicalPlan) -> Result<(usize, &Aggregate)> {
    let mut depth = 0;
    let mut node = plan;
    loop {
        check_no_subquery_exprs(node, "the query")?;
        check_post_sizes(node)?;
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
                        "aggregate with GROUP BY; windows are fine on the noisy result (e.g. ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC) in the aggregate query)",
                    ));
                }
                &w.input
            }
            LogicalPlan::SubqueryAlias(s) => &s.input,
            LogicalPlan::Aggregate(a) => return Ok((depth, a)),
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
    }
}

/// User-facing names: an alias in the top projection wins over DataFusion's display.
pub(super) fn name_outputs(plan: &LogicalPlan, aggs: &mut [Agg]) {
    let LogicalPlan::Projection(p) = plan else { return };
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

/// Post-processing runs over the noisy values after the charge; a function
/// whose output size is one of its arguments (`repeat`, `lpad`, …) would let
/// the noisy value decide how much memory the process takes — a lever the
/// third attack used to read the noise before the answer was stored. Sizes
/// must be literals there too.
fn check_post_sizes(node: &LogicalPlan) -> Result<()> {
    if matches!(node, LogicalPlan::Aggregate(_)) {
        return Ok(());
    }
    for e in node.expressions() {
        let mut bad = None;
        let _ = e.apply(|x| {
            if let Expr::ScalarFunction(f) = x {
                let name = f.func.name().to_ascii_lowercase();
                let size_arg = match name.as_str() {
                    "repeat" | "lpad" | "rpad" => Some(1),
                    "overlay" | "array_repeat" | "generate_series" | "range" => Some(1),
                    _ => None,
                };
                if let Some(i) = size_arg
                    && f.args.get(i).is_some_and(|a| !super::expr::is_literal(a))
                {
                    bad = Some(name);
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if let Some(name) = bad {
            return Err(refused(
                format!("`{name}` with a computed size in the query's output"),
                "the output's size would depend on a noisy value, and the time and memory of the process could reveal it",
                format!("give {name}(…) a literal size"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::functions_window::expr_fn::row_number;
    use datafusion::logical_expr::{ExprFunctionExt, col, lit};

    #[test]
    fn having_order_limit_and_windows_on_the_result_are_post_processing() {
        let plan = scan("messages")
            .aggregate(vec![col("chat_kind")], vec![count(lit(1)).alias("n")])
            .unwrap()
            .filter(col("n").gt(lit(10)))
            .unwrap()
            .window(vec![row_number().order_by(vec![col("n").sort(false, true)]).build().unwrap().alias("rank")])
            .unwrap()
            .sort(vec![col("n").sort(false, true)])
            .unwrap()
            .limit(0, Some(1))
            .unwrap()
            .build()
            .unwrap();
        let q = dp(plan);
        assert_eq!(q.depth, 4);
        assert_eq!(q.aggs[0].display, "n");
    }

    #[test]
    fn rows_out_are_refused() {
        let plan = scan("messages").project(vec![col("emoji")]).unwrap().build().unwrap();
        assert!(refusal(plan).contains("non-aggregate SELECT"));
        let plan = scan("messages").project(vec![col("emoji")]).unwrap().distinct().unwrap().build().unwrap();
        assert!(refusal(plan).contains("SELECT DISTINCT"));
        let w = scan("messages")
            .window(vec![row_number().alias("r")])
            .unwrap()
            .aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap();
        assert!(refusal(w).contains("window function over private rows"));
    }
}
