//! Rule: joins.
//!
//! * private ⋈ private — only on the privacy unit (an equality of the two unit
//!   columns in `ON` or in the join filter): each output row then belongs to one
//!   person, so bounding per person still holds.
//! * private ⋈ public — any condition: public rows hold no personal data. Outer
//!   joins must preserve the private side: a public row that appears (or gets
//!   NULLs) depending on private rows would leak. `FULL OUTER` is refused.
//!
//! Join conditions over private columns are accepted row expressions, made total.

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};

use super::expr::{ColInfo, make_total};
use super::{Analyzer, Rel, check_no_subquery_exprs, refused};
use crate::engine::error::Result;

impl Analyzer<'_> {
    pub(super) fn join(&mut self, plan: &LogicalPlan, j: &Join) -> Result<(LogicalPlan, Rel)> {
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
                    if let Expr::BinaryExpr(be) = c
                        && be.op == datafusion::logical_expr::Operator::Eq
                        && pair(&be.left, &be.right)
                    {
                        on_unit = true;
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
        let exprs: Vec<Expr> = plan
            .expressions()
            .into_iter()
            .map(|e| if l.private || r.private { make_total(e, &plan.schema().clone(), "a join condition") } else { Ok(e) })
            .collect::<Result<_>>()?;
        // join conditions reference both sides: totals computed against the join schema
        let new_plan = plan.with_new_exprs(exprs, vec![l_plan, r_plan]).map_err(crate::engine::error::sql)?;
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
        // a join with public rows can repeat a person's row (a public table has no
        // declared unique key): the output is no longer one row per person
        // (found by the third attack: users CROSS JOIN emoji_catalog claimed it)
        let cols = if l.private != r.private { cols.into_iter().map(|c| ColInfo { unit_attr: false, ..c }).collect() } else { cols };
        Ok((new_plan, Rel { cols, private: l.private || r.private }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::common::JoinType;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{col, lit};

    fn joined(on_unit: bool, jt: JoinType) -> datafusion::logical_expr::LogicalPlan {
        let users = scan("users").alias("u").unwrap().build().unwrap();
        let (l, r) = if on_unit { ("m.user_id", "u.user_id") } else { ("m.length", "u.user_id") };
        scan("messages")
            .alias("m")
            .unwrap()
            .join(users, jt, (vec![l], vec![r]), None)
            .unwrap()
            .aggregate(vec![col("u.age_group")], vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn private_joins_only_on_the_unit() {
        let q = dp(joined(true, JoinType::Inner));
        assert!(q.tables.contains("users") && q.tables.contains("messages"));
        assert!(refusal(joined(false, JoinType::Inner)).contains("not on the privacy unit"));
        assert!(refusal(joined(true, JoinType::Full)).contains("FULL OUTER"));
    }

    #[test]
    fn public_rows_kept_by_private_ones_are_refused() {
        let msgs = scan("messages").build().unwrap();
        let plan = scan("emoji_catalog")
            .join(msgs, JoinType::Left, (vec!["emoji_catalog.emoji"], vec!["messages.emoji"]), None)
            .unwrap()
            .aggregate(vec![col("emoji_catalog.category")], vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap();
        assert!(refusal(plan).contains("keeps public rows depending on private ones"));
    }
}
