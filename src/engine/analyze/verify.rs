//! Rule: the totality verifier — an independent check of the analysed query.
//!
//! The rules of this module rewrite each expression they accept (see
//! [`super::expr::total`]); this verifier then walks what they produced — the
//! source plan that will run over private rows, the group keys and the
//! aggregates' arguments — and accepts only constructs that cannot fail as
//! evaluated:
//!
//! * columns, literals, aliases, boolean logic, `IS …`, `BETWEEN`, `CASE`,
//!   `IN (…)`, `LIKE` with a (compiled) literal pattern, and the comparison
//!   and boolean operators of [`TOTAL_OPERATORS`];
//! * calls of the totality wrappers ([`crate::engine::total`]) and argument-less
//!   constants;
//! * per-person aggregates under [`TotalAgg`](crate::engine::total::TotalAgg);
//! * plan nodes the analyser understands, with public parts evaluated
//!   beforehand (constant rows).
//!
//! Anything else — an unwrapped cast, operator, unary minus, function or
//! aggregate, whichever rule let it through — is an internal error: the query
//! is refused before anything is charged. A rule that forgets to make an
//! expression total therefore cannot leak; it breaks a query loudly instead.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, Operator};

use super::expr::allowed::{Totality, contract};
use super::{DpQuery, is_private_scan};
use crate::config::Config;
use crate::engine::error::{Result, internal};
use crate::engine::total::{is_total, is_total_agg};

/// Binary operators that cannot fail on operands of matching (coerced) types.
pub const TOTAL_OPERATORS: &[Operator] = &[
    Operator::Eq,
    Operator::NotEq,
    Operator::Lt,
    Operator::LtEq,
    Operator::Gt,
    Operator::GtEq,
    Operator::And,
    Operator::Or,
    Operator::IsDistinctFrom,
    Operator::IsNotDistinctFrom,
];

/// Verify everything of `q` that runs over private rows. `evaluated`: public
/// sub-plans must have been replaced by their rows.
pub fn verify_query(config: &Config, q: &DpQuery, evaluated: bool) -> Result<()> {
    verify_plan(config, &q.source, evaluated)?;
    for k in &q.keys {
        verify_expr(&k.expr)?;
    }
    for a in &q.aggs {
        if let Some(arg) = &a.arg {
            verify_expr(arg)?;
        }
    }
    Ok(())
}

/// Verify the nodes the bounded executor adds above a verified source: its
/// projection of encoded values and keys, the key filter, the per-person
/// partials (`count`, `sum` of grid-encoded values — |v| < 2⁶³, so a Decimal128
/// sum of up to 2⁶⁴ rows cannot overflow — or wrapped products), and above
/// them the operator's own nodes: the per-person shapes (`sum`, `count`, `max`
/// of row counts, `dpq_log2_bin`), the bounding (`dpq_bound`, which checks
/// every contribution and fails closed only on a dpq bug), the unnest of its
/// output and its fields, and the per-group totals (`dpq_total`, checked sums).
pub fn verify_bounded(plan: &LogicalPlan) -> Result<()> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Sort(s) => {
                node.expressions().iter().try_for_each(verify_dpq_expr)?;
                node = &s.input;
            }
            LogicalPlan::Aggregate(a) => {
                a.group_expr.iter().try_for_each(verify_dpq_expr)?;
                for e in &a.aggr_expr {
                    let inner = match e {
                        Expr::Alias(al) => &*al.expr,
                        other => other,
                    };
                    match inner {
                        Expr::AggregateFunction(AggregateFunction { func, params })
                            if matches!(func.name(), "count" | "sum" | "max" | "dpq_bound" | "dpq_total")
                                && params.filter.is_none()
                                && params.order_by.is_empty() =>
                        {
                            params.args.iter().try_for_each(verify_dpq_expr)?;
                        }
                        other => return Err(unverified(format!("the bounded plan's aggregate `{other}`"))),
                    }
                }
                node = &a.input;
            }
            LogicalPlan::Unnest(u) => node = &u.input,
            LogicalPlan::Filter(f) => {
                verify_dpq_expr(&f.predicate)?;
                node = &f.input;
            }
            LogicalPlan::Projection(p) => {
                p.expr.iter().try_for_each(verify_dpq_expr)?;
                // the projection of encoded values sits right on the verified source
                if !matches!(&*p.input, LogicalPlan::Aggregate(_) | LogicalPlan::Unnest(_)) {
                    return Ok(());
                }
                node = &p.input;
            }
            other => return Err(unverified(format!("the bounded plan's node `{}`", first_line(other)))),
        }
    }
}

/// [`verify_expr`], also admitting dpq's own total functions of the bounded
/// plan: `dpq_log2_bin` (of an integer) and `get_field` (of the operator's struct).
fn verify_dpq_expr(e: &Expr) -> Result<()> {
    let mut bad = None;
    e.apply(|node| {
        let own = matches!(node, Expr::ScalarFunction(f) if matches!(f.func.name(), "dpq_log2_bin" | "get_field"));
        if !own && let Some(what) = not_total(node) {
            bad = Some(what);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(crate::engine::error::sql)?;
    match bad {
        Some(what) => Err(unverified(what)),
        None => Ok(()),
    }
}

/// Verify every node of a source plan.
pub fn verify_plan(config: &Config, plan: &LogicalPlan, evaluated: bool) -> Result<()> {
    let mut err = None;
    plan.apply(|node| {
        let private = is_private_scan(config, node);
        if !private {
            let constant = matches!(node, LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_));
            if evaluated && !constant {
                err = Some(unverified(format!("a public sub-plan that was not evaluated beforehand ({})", first_line(node))));
                return Ok(TreeNodeRecursion::Stop);
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Err(e) = verify_node(node) {
            err = Some(e);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(crate::engine::error::sql)?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn first_line(p: &LogicalPlan) -> String {
    p.display().to_string().lines().next().unwrap_or("").to_string()
}

fn unverified(what: String) -> crate::engine::error::EngineError {
    internal(format!("the totality verifier found {what} in a plan over private rows; the query is refused before anything is charged"))
}

fn verify_node(node: &LogicalPlan) -> Result<()> {
    match node {
        LogicalPlan::TableScan(ts) => {
            if !ts.filters.is_empty() || ts.fetch.is_some() {
                return Err(unverified("a pre-filtered table scan".into()));
            }
            Ok(())
        }
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Distinct(Distinct::All(_))
        | LogicalPlan::Values(_)
        | LogicalPlan::EmptyRelation(_) => node.expressions().iter().try_for_each(verify_expr),
        LogicalPlan::Sort(s) if s.fetch.is_none() => node.expressions().iter().try_for_each(verify_expr),
        LogicalPlan::Aggregate(a) => {
            a.group_expr.iter().try_for_each(verify_expr)?;
            a.aggr_expr.iter().try_for_each(verify_aggregate)
        }
        other => Err(unverified(format!("the plan node `{}`", first_line(other)))),
    }
}

fn verify_aggregate(e: &Expr) -> Result<()> {
    let inner = match e {
        Expr::Alias(a) => &*a.expr,
        other => other,
    };
    match inner {
        Expr::AggregateFunction(AggregateFunction { func, params }) if is_total_agg(func) && params.filter.is_none() => {
            params.args.iter().try_for_each(verify_expr)?;
            params.order_by.iter().try_for_each(|s| verify_expr(&s.expr))
        }
        other => Err(unverified(format!("the aggregate `{other}` not under the totality wrapper"))),
    }
}

/// Verify that every node of `e` is total as evaluated.
pub fn verify_expr(e: &Expr) -> Result<()> {
    let mut bad = None;
    e.apply(|node| {
        if let Some(what) = not_total(node) {
            bad = Some(what);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(crate::engine::error::sql)?;
    match bad {
        Some(what) => Err(unverified(what)),
        None => Ok(()),
    }
}

/// What is not total about this node (its children are visited separately).
fn not_total(node: &Expr) -> Option<String> {
    match node {
        Expr::Column(_) | Expr::Literal(..) | Expr::Alias(_) | Expr::Not(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => None,
        Expr::IsTrue(_) | Expr::IsFalse(_) | Expr::IsUnknown(_) | Expr::IsNotTrue(_) | Expr::IsNotFalse(_) | Expr::IsNotUnknown(_) => None,
        Expr::Between(_) | Expr::Case(_) | Expr::InList(_) => None,
        Expr::Like(l) | Expr::SimilarTo(l) => {
            (!super::expr::is_literal(&l.pattern) && !is_total_literal(&l.pattern)).then(|| format!("a pattern that is not a literal (`{node}`)"))
        }
        Expr::BinaryExpr(b) if TOTAL_OPERATORS.contains(&b.op) => None,
        Expr::ScalarFunction(f) if is_total(&f.func) => None,
        Expr::ScalarFunction(f) if contract(&f.func.name().to_ascii_lowercase()).is_some_and(|c| c.totality == Totality::Constant) && f.args.is_empty() => None,
        other => Some(format!("`{other}` evaluated without the totality wrapper")),
    }
}

/// A literal behind the cast wrapper (`total_cast(literal, NULL::T)`).
fn is_total_literal(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if is_total(&f.func) && f.args.first().is_some_and(super::expr::is_literal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::total::{total_cast, total_op};
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{cast, col, lit};

    #[test]
    fn only_wrapped_or_total_constructs_pass() {
        assert!(verify_expr(&col("a").gt(lit(1)).and(col("b").is_null())).is_ok());
        assert!(verify_expr(&total_op(Operator::Divide).call(vec![col("a"), col("b")])).is_ok());
        assert!(verify_expr(&total_cast().call(vec![col("a"), lit(ScalarValue::Int32(None))])).is_ok());
        for bad in [
            col("a") / col("b"),
            cast(col("a"), datafusion::arrow::datatypes::DataType::Int8),
            Expr::Negative(Box::new(col("a"))),
            datafusion::functions::string::expr_fn::lower(col("s")),
            Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(Box::new(col("s")), Operator::RegexMatch, Box::new(col("p")))),
        ] {
            let e = verify_expr(&bad.clone().gt(lit(0))).unwrap_err().to_string();
            assert!(e.contains("totality verifier"), "{bad}: {e}");
        }
    }

    #[test]
    fn unwrapped_aggregates_and_unevaluated_public_parts_fail() {
        use super::super::test_util::*;
        use datafusion::functions_aggregate::expr_fn::avg;
        let cfg = config();
        let plan = scan("messages").aggregate(vec![col("user_id")], vec![avg(col("length"))]).unwrap().build().unwrap();
        let e = verify_plan(&cfg, &plan, false).unwrap_err().to_string();
        assert!(e.contains("not under the totality wrapper"), "{e}");
        let public = scan("emoji_catalog").build().unwrap();
        let joined = scan("messages").join(public, datafusion::logical_expr::JoinType::Inner, (vec!["emoji"], vec!["emoji"]), None).unwrap().build().unwrap();
        assert!(verify_plan(&cfg, &joined, false).is_ok(), "unevaluated public parts pass only in the analyser's unit tests");
        let e = verify_plan(&cfg, &joined, true).unwrap_err().to_string();
        assert!(e.contains("not evaluated beforehand"), "{e}");
    }
}
