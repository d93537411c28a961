//! Rule: every expression evaluated over private rows is total.
//!
//! [`make_total`] rewrites an expression accepted by [`super::allowed`] so that,
//! for every row, it yields a value or NULL — never an error. By construction,
//! not by a list of known failures:
//!
//! | node | made total by |
//! |---|---|
//! | column, literal, alias, `NOT`, `IS …`, comparisons, `AND`/`OR`, `BETWEEN`, `IN (literals)`, `CASE` | total as they are: no kernel of these fails on operands of matching (coerced) types |
//! | `+ − × ÷ %`, `& \| ^`, `\|\|` | evaluated under [`TotalOp`](crate::engine::total::TotalOp): DataFusion's kernel, a failing row becomes NULL (÷ and % by zero also get a `CASE` guard so that the common case stays on the fast path) |
//! | unary `−` | `0 − x` under `TotalOp` (−MIN overflows) |
//! | `CAST`, `TRY_CAST` | `total_cast`: NULL when the value does not fit, never an error (arrow's `TRY_CAST` still fails on some values) |
//! | a function of the contract table | under [`TotalFn`](crate::engine::total::TotalFn), or rewritten into `CASE` (`coalesce`, `nvl`, `nvl2`) or built-ins (`clamp`) |
//! | `LIKE`/`SIMILAR TO` | its literal pattern is compiled once at analysis; a pattern that does not compile is refused before any row is read |
//!
//! The totality harness (`harness.rs`) checks the table above against
//! adversarial values for every function and operator.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, Case, Cast, Like, ScalarFunction, Sort as SortExpr, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, lit, when};

use super::super::super::error::{Result, internal, refused};
use super::allowed::{Totality, contract};
use crate::engine::total::{WRAPPED_OPERATORS, is_total, total_agg, total_cast, total_fn, total_op};

/// `clamp(x, lo, hi)` with built-in functions only: NULL stays NULL, NaN stays
/// NaN (callers drop it), others are clamped. (`least`/`greatest` alone would
/// turn NULL into a bound.)
pub fn clamp_expr(x: Expr, lo: Expr, hi: Expr) -> Expr {
    let f64 = |e: Expr| total_cast().call(vec![e, lit(ScalarValue::Float64(None))]);
    let xf = f64(x);
    let isnan = total_fn(datafusion::functions::math::isnan()).call(vec![xf.clone()]);
    let greatest = total_fn(datafusion::functions::core::greatest()).call(vec![xf.clone(), f64(lo)]);
    let least = total_fn(datafusion::functions::core::least()).call(vec![greatest, f64(hi)]);
    when(xf.clone().is_null(), lit(ScalarValue::Float64(None))).when(isnan, xf).otherwise(least).expect("CASE builds")
}

/// Check that `e` is accepted over private rows ([`super::allowed`]) and make
/// it total (see the module table). The check and the rewrite are one call, so
/// that no expression can be made total without being checked; `context`
/// names the clause in refusals.
pub fn make_total(e: Expr, schema: &DFSchema, context: &str) -> Result<Expr> {
    super::allowed::check_row_expr(&e, context)?;
    let out = e.transform_up(|node| total_node(node, schema)).map_err(super::super::super::error::sql)?;
    Ok(out.data)
}

/// A per-person aggregate made total: every argument and `ORDER BY`
/// expression checked and made total, and the function evaluated under
/// [`TotalAgg`](crate::engine::total::TotalAgg) (a group whose accumulator
/// fails yields NULL). The output keeps its name.
pub fn make_total_aggregate(e: Expr, schema: &DFSchema) -> Result<Expr> {
    let name = e.schema_name().to_string();
    let inner = match e {
        Expr::Alias(a) => *a.expr,
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return Err(internal("a per-person aggregate that is not an aggregate function reached the totality rewrite"));
    };
    if params.filter.is_some() {
        return Err(refused("FILTER in a per-person sub-query", "not supported", "use CASE WHEN inside the aggregate"));
    }
    let args = params.args.into_iter().map(|a| make_total(a, schema, "a per-person aggregate")).collect::<Result<Vec<_>>>()?;
    let order_by = params
        .order_by
        .into_iter()
        .map(|s| Ok(SortExpr { expr: make_total(s.expr, schema, "the ORDER BY of a per-person aggregate")?, ..s }))
        .collect::<Result<Vec<_>>>()?;
    let out = Expr::AggregateFunction(AggregateFunction {
        func: total_agg(func),
        params: AggregateFunctionParams { args, distinct: params.distinct, filter: None, order_by, null_treatment: params.null_treatment },
    });
    out.alias_if_changed(name).map_err(super::super::super::error::sql)
}

fn total_node(node: Expr, schema: &DFSchema) -> datafusion::common::Result<Transformed<Expr>> {
    Ok(match node {
        Expr::ScalarFunction(f) if is_total(&f.func) => Transformed::no(Expr::ScalarFunction(f)),
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            let Some(c) = contract(&name) else {
                // check_row_expr runs first; reaching this is a dpq bug, and failing closed is right
                return Err(datafusion::error::DataFusionError::Plan(format!("internal: `{name}` reached the totality rewrite unchecked")));
            };
            match c.totality {
                Totality::Constant => Transformed::no(Expr::ScalarFunction(f)),
                Totality::Builtin => {
                    let mut a = f.args.into_iter();
                    match (a.next(), a.next(), a.next(), a.next()) {
                        (Some(x), Some(lo), Some(hi), None) => Transformed::yes(clamp_expr(x, lo, hi)),
                        _ => return Err(datafusion::error::DataFusionError::Plan("clamp(x, lo, hi) takes three arguments".into())),
                    }
                }
                Totality::Case => Transformed::yes(as_case(&name, f.args)?),
                Totality::Wrapped => Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(total_fn(f.func.clone()), f.args))),
            }
        }
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            let from = expr.get_type(schema)?;
            if !datafusion::arrow::compute::can_cast_types(&from, field.data_type()) {
                return Err(datafusion::error::DataFusionError::Plan(format!("cannot cast {from} to {}", field.data_type())));
            }
            Transformed::yes(total_cast().call(vec![*expr, lit(ScalarValue::try_from(field.data_type())?)]))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if WRAPPED_OPERATORS.contains(&op) => {
            let rty = right.get_type(schema).unwrap_or(DataType::Null);
            let call = total_op(op).call(vec![(*left).clone(), (*right).clone()]);
            let zero_guard =
                matches!(op, Operator::Divide | Operator::Modulo) && (rty.is_integer() || matches!(rty, DataType::Decimal128(..) | DataType::Decimal256(..)));
            if zero_guard && !super::lit_f64(&right).is_some_and(|d| d != 0.0) {
                // ÷0 fails a whole batch; the guard keeps such rows off the wrapper's slow path
                Transformed::yes(when((*right).eq(lit(ScalarValue::new_zero(&rty)?)), lit(ScalarValue::try_from(&call.get_type(schema)?)?)).otherwise(call)?)
            } else {
                Transformed::yes(call)
            }
        }
        Expr::Negative(inner) => {
            // every type: −MIN overflows integers, and a decimal computed by a
            // wrapped operator can hold a value beyond its declared precision
            // (found by the attack on the first version: −(i128::MIN))
            let ty = inner.get_type(schema)?;
            match ScalarValue::new_zero(&ty) {
                Ok(zero) => {
                    let minus = total_op(Operator::Minus).call(vec![lit(zero), *inner]);
                    // 0 − x widens a decimal's precision by one: keep the type
                    if minus.get_type(schema)? == ty {
                        Transformed::yes(minus)
                    } else {
                        Transformed::yes(total_cast().call(vec![minus, lit(ScalarValue::try_from(&ty)?)]))
                    }
                }
                Err(_) if ty == DataType::Null => Transformed::yes(lit(ScalarValue::Null)),
                Err(_) => return Err(datafusion::error::DataFusionError::Plan(format!("unary minus of type {ty} over private rows is not understood"))),
            }
        }
        Expr::BinaryExpr(b) if super::super::verify::TOTAL_OPERATORS.contains(&b.op) => Transformed::no(Expr::BinaryExpr(b)),
        Expr::BinaryExpr(b) => {
            return Err(datafusion::error::DataFusionError::Plan(format!("internal: operator `{}` reached the totality rewrite unchecked", b.op)));
        }
        // the rest is total as it is (see the module table); the verifier
        // (`verify.rs`) checks the result independently
        other => Transformed::no(other),
    })
}

/// `coalesce`/`nvl` and `nvl2` as `CASE` (DataFusion simplifies them so before
/// execution; here their arguments are made total first).
fn as_case(name: &str, args: Vec<Expr>) -> datafusion::common::Result<Expr> {
    let plan_err = |m: &str| datafusion::error::DataFusionError::Plan(m.to_string());
    match name {
        "coalesce" | "nvl" => {
            let mut args = args;
            let last = args.pop().ok_or_else(|| plan_err("coalesce needs arguments"))?;
            if args.is_empty() {
                return Ok(last);
            }
            let when_then = args.into_iter().map(|a| (Box::new(a.clone().is_not_null()), Box::new(a))).collect();
            Ok(Expr::Case(Case { expr: None, when_then_expr: when_then, else_expr: Some(Box::new(last)) }))
        }
        "nvl2" => match <[Expr; 3]>::try_from(args) {
            Ok([a, b, c]) => Ok(Expr::Case(Case { expr: None, when_then_expr: vec![(Box::new(a.is_not_null()), Box::new(b))], else_expr: Some(Box::new(c)) })),
            Err(_) => Err(plan_err("nvl2 takes three arguments")),
        },
        _ => Err(plan_err("internal: no CASE form")),
    }
}

/// Compile the literal pattern of a `LIKE`/`SIMILAR TO` once, on an empty
/// string: a pattern that fails would fail on every row that reaches it, so
/// whether the query fails would depend on which rows reach it.
pub fn check_pattern(l: &Like, similar: bool) -> std::result::Result<(), String> {
    let raw = |e: &Expr| -> Option<ScalarValue> {
        let mut e = e;
        loop {
            match e {
                Expr::Literal(v, _) => return v.cast_to(&DataType::Utf8).ok(),
                Expr::Cast(c) => e = &c.expr,
                Expr::TryCast(c) => e = &c.expr,
                Expr::Alias(a) => e = &a.expr,
                _ => return None,
            }
        }
    };
    let Some(pattern) = raw(&l.pattern) else { return Err("the pattern is not a string literal".into()) };
    if pattern.is_null() {
        return Ok(());
    }
    let like = Like {
        negated: l.negated,
        expr: Box::new(lit(ScalarValue::Utf8(Some(String::new())))),
        pattern: Box::new(lit(pattern)),
        escape_char: l.escape_char,
        case_insensitive: l.case_insensitive,
    };
    let probe = if similar { Expr::SimilarTo(like) } else { Expr::Like(like) };
    let schema = DFSchema::empty();
    let props = datafusion::execution::context::ExecutionProps::new();
    let bad = |_| "it does not compile as a pattern (check escapes, brackets and parentheses)".to_string();
    let e = datafusion::physical_expr::create_physical_expr(
        &probe,
        &schema,
        &props,
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )
    .map_err(bad)?;
    let batch = datafusion::arrow::array::RecordBatch::try_new_with_options(
        Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| e.to_string())?;
    e.evaluate(&batch).map(|_| ()).map_err(bad)
}
