//! Row-level expressions over private rows: which are allowed (fail closed),
//! how they are made total (no error can depend on a private value), and what
//! can be inferred about them without reading data (bounds, key domains).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Case, Cast, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, lit, when};

use super::super::error::{EngineError, Result, refused};

/// What is known about one column of a relation.
#[derive(Debug, Clone, Default)]
pub struct ColInfo {
    /// Holds the privacy unit.
    pub unit: bool,
    /// Derived from private rows.
    pub private: bool,
    /// Value range known from configuration or the expression (never from data).
    pub bounds: Option<(f64, f64)>,
    /// Finite set of possible values known from configuration or the expression.
    pub domain: Option<Arc<Domain>>,
    /// Determined by the unit (a per-person attribute).
    pub unit_attr: bool,
    /// Where the column comes from, for messages.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub values: Vec<ScalarValue>,
    pub source: String,
}

/// Scalar functions that are total (cannot fail on any input value) and allowed
/// on private rows.
const TOTAL_FUNCTIONS: &[&str] = &[
    "date_part",
    "datepart",
    "extract",
    "date_trunc",
    "datetrunc",
    "date_bin",
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "substr",
    "substring",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "nvl",
    "ifnull",
    "nvl2",
    "abs",
    "floor",
    "ceil",
    "round",
    "trunc",
    "signum",
    "least",
    "greatest",
    "starts_with",
    "ends_with",
    "strpos",
    "instr",
    "left",
    "right",
    "replace",
    "reverse",
    "isnan",
    "iszero",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log2",
    "log10",
    "sin",
    "cos",
    "tan",
    "pi",
    "clamp",
    "now",
    "current_date",
    "current_time",
    "initcap",
    "ascii",
    "to_hex",
    "translate",
    "uuid_free_placeholder",
];

/// Functions refused with a specific reason.
fn refused_function_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "to_timestamp"
        | "to_timestamp_seconds"
        | "to_timestamp_millis"
        | "to_timestamp_micros"
        | "to_timestamp_nanos"
        | "to_date"
        | "make_date"
        | "to_char"
        | "arrow_cast"
        | "to_unixtime" => "it fails on unparseable input, and such a failure would reveal a private value",
        "random" | "uuid" => "a random function would make the answer non-reproducible and its bounding unverifiable",
        "power" | "pow" | "gcd" | "lcm" | "factorial" => "it can fail on overflow for some private values",
        _ => return None,
    })
}

/// Check that `e` only uses allowed, total constructs over private rows.
pub fn check_row_expr(e: &Expr, context: &str) -> Result<()> {
    let mut err: Option<EngineError> = None;
    e.apply(|node| {
        let bad = match node {
            Expr::Column(_) | Expr::Literal(..) | Expr::Alias(_) | Expr::Not(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => None,
            Expr::IsTrue(_) | Expr::IsFalse(_) | Expr::IsUnknown(_) | Expr::IsNotTrue(_) | Expr::IsNotFalse(_) | Expr::IsNotUnknown(_) => None,
            Expr::Negative(_) | Expr::Between(_) | Expr::Case(_) | Expr::Cast(_) | Expr::TryCast(_) => None,
            Expr::Like(l) | Expr::SimilarTo(l) => {
                if matches!(*l.pattern, Expr::Literal(..)) {
                    None
                } else {
                    Some(refused(
                        format!("LIKE with a non-literal pattern in {context}"),
                        "a pattern built from private values can fail to compile",
                        "use a literal pattern",
                    ))
                }
            }
            Expr::InList(il) => {
                if il.list.iter().all(|x| matches!(x, Expr::Literal(..))) {
                    None
                } else {
                    Some(refused(format!("IN list with non-literal values in {context}"), "only literal lists are understood", "list literal values"))
                }
            }
            Expr::BinaryExpr(b) => match b.op {
                Operator::Plus
                | Operator::Minus
                | Operator::Multiply
                | Operator::Divide
                | Operator::Modulo
                | Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
                | Operator::And
                | Operator::Or
                | Operator::IsDistinctFrom
                | Operator::IsNotDistinctFrom
                | Operator::StringConcat
                | Operator::BitwiseAnd
                | Operator::BitwiseOr
                | Operator::BitwiseXor => None,
                op => Some(refused(
                    format!("operator `{op}` in {context}"),
                    "dpq does not know it to be total on every input",
                    "rewrite the expression with arithmetic, comparisons or CASE",
                )),
            },
            Expr::ScalarFunction(f) => {
                let name = f.func.name().to_ascii_lowercase();
                if TOTAL_FUNCTIONS.contains(&name.as_str()) {
                    None
                } else if let Some(why) = refused_function_reason(&name) {
                    Some(refused(
                        format!("function `{name}` over private rows"),
                        why,
                        "transform the data at ingest, or use total functions (CASE, date_part, date_trunc, arithmetic)",
                    ))
                } else {
                    Some(refused(
                        format!("function `{name}` over private rows"),
                        "it is not on dpq's list of functions known to be total",
                        "use date_part/EXTRACT, date_trunc, CASE, arithmetic, lower/upper/substr, coalesce",
                    ))
                }
            }
            Expr::AggregateFunction(_) => Some(refused(
                format!("aggregate function inside a row expression in {context}"),
                "nested aggregates are not understood",
                "compute per-person values in a sub-query grouped by the privacy unit",
            )),
            Expr::WindowFunction(_) => Some(refused(
                "window function over private rows",
                "a window lets one person's rows change what is computed for others",
                "aggregate with GROUP BY instead; windows are fine on the noisy result (wrap the DP query in a sub-query)",
            )),
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) | Expr::SetComparison(_) => Some(refused(
                format!("sub-query expression in {context}"),
                "sub-queries inside expressions over private rows are not understood",
                "join the tables instead",
            )),
            Expr::Placeholder(_) => Some(refused("placeholder", "parameters are not supported", "inline the value")),
            other => Some(refused(
                format!("expression `{other}` in {context}"),
                "dpq does not understand it, and unknown shapes fail closed",
                "simplify the expression",
            )),
        };
        if let Some(b) = bad {
            err = Some(b);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(super::super::error::sql)?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// `clamp(x, lo, hi)` with built-in functions only (so that plans serialise for
/// Ballista): NULL stays NULL, NaN stays NaN (callers drop it), others are clamped.
/// (`least`/`greatest` alone would turn NULL into a bound.)
pub fn clamp_expr(x: Expr, lo: Expr, hi: Expr) -> Expr {
    let xf = datafusion::logical_expr::cast(x, DataType::Float64);
    when(xf.clone().is_null(), lit(ScalarValue::Float64(None)))
        .when(datafusion::functions::math::expr_fn::isnan(xf.clone()), xf.clone())
        .otherwise(datafusion::functions::expr_fn::least(vec![
            datafusion::functions::expr_fn::greatest(vec![xf, datafusion::logical_expr::cast(lo, DataType::Float64)]),
            datafusion::logical_expr::cast(hi, DataType::Float64),
        ]))
        .expect("CASE builds")
}

/// Make an allowed expression total: casts become TRY_CAST (NULL on failure),
/// divisions and modulo by zero (and the i64::MIN / −1 overflow) become NULL;
/// `clamp` becomes built-in functions.
pub fn make_total(e: Expr, schema: &DFSchema) -> Result<Expr> {
    let out = e
        .transform_up(|node| {
            Ok(match node {
                Expr::ScalarFunction(f) if f.func.name() == "clamp" && f.args.len() == 3 => {
                    let mut a = f.args.into_iter();
                    let (x, lo, hi) = (a.next().unwrap(), a.next().unwrap(), a.next().unwrap());
                    Transformed::yes(clamp_expr(x, lo, hi))
                }
                Expr::Cast(Cast { expr, field }) => Transformed::yes(Expr::TryCast(TryCast { expr, field })),
                Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Divide | Operator::Modulo), right }) => {
                    let ty = left.get_type(schema).unwrap_or(DataType::Null);
                    let rty = right.get_type(schema).unwrap_or(DataType::Null);
                    let base = Expr::BinaryExpr(BinaryExpr { left: left.clone(), op, right: right.clone() });
                    let safe_literal = matches!(lit_f64(&right), Some(d) if d != 0.0 && d != -1.0);
                    let guarded = if safe_literal {
                        base
                    } else if is_integer(&ty) && is_integer(&rty) {
                        let neg_one = if op == Operator::Divide { Expr::Negative(left.clone()) } else { lit(0i64) };
                        when((*right.clone()).eq(lit(0i64)), lit(ScalarValue::Null))
                            .when((*right.clone()).eq(lit(-1i64)), neg_one)
                            .otherwise(base)
                            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?
                    } else {
                        when((*right.clone()).eq(lit(0i64)), lit(ScalarValue::Null)).otherwise(base)?
                    };
                    Transformed::yes(guarded)
                }
                Expr::Negative(inner) => {
                    // −(i64::MIN) overflows in checked negation: compute 0 − x (wrapping)
                    let ty = inner.get_type(schema).unwrap_or(DataType::Null);
                    if is_integer(&ty) {
                        Transformed::yes(Expr::BinaryExpr(BinaryExpr { left: Box::new(lit(ScalarValue::new_zero(&ty)?)), op: Operator::Minus, right: inner }))
                    } else {
                        Transformed::no(Expr::Negative(inner))
                    }
                }
                other => Transformed::no(other),
            })
        })
        .map_err(super::super::error::sql)?;
    Ok(out.data)
}

fn lit_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(x)) => Some(*x as f64),
            ScalarValue::Int16(Some(x)) => Some(*x as f64),
            ScalarValue::Int32(Some(x)) => Some(*x as f64),
            ScalarValue::Int64(Some(x)) => Some(*x as f64),
            ScalarValue::UInt8(Some(x)) => Some(*x as f64),
            ScalarValue::UInt16(Some(x)) => Some(*x as f64),
            ScalarValue::UInt32(Some(x)) => Some(*x as f64),
            ScalarValue::UInt64(Some(x)) => Some(*x as f64),
            ScalarValue::Float32(Some(x)) => Some(*x as f64),
            ScalarValue::Float64(Some(x)) => Some(*x),
            ScalarValue::Decimal128(Some(x), _, s) => Some(*x as f64 / 10f64.powi(*s as i32)),
            _ => None,
        },
        Expr::Cast(c) => lit_f64(&c.expr),
        Expr::TryCast(c) => lit_f64(&c.expr),
        Expr::Negative(x) => lit_f64(x).map(|v| -v),
        _ => None,
    }
}

fn lit_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => Some(s.to_ascii_lowercase()),
        _ => None,
    }
}

/// Range of a date_part field, if bounded.
fn date_part_range(field: &str) -> Option<(f64, f64)> {
    Some(match field {
        "hour" | "hours" | "h" => (0.0, 23.0),
        "minute" | "minutes" | "m" => (0.0, 59.0),
        "second" | "seconds" | "s" => (0.0, 60.0),
        "dow" => (0.0, 6.0),
        "isodow" => (0.0, 6.0),
        "doy" => (1.0, 366.0),
        "day" | "days" | "d" => (1.0, 31.0),
        "week" | "weeks" | "w" => (1.0, 53.0),
        "month" | "months" | "mon" => (1.0, 12.0),
        "quarter" | "quarters" | "q" => (1.0, 4.0),
        _ => return None,
    })
}

type Range = (f64, f64);
const UNKNOWN: Range = (f64::NEG_INFINITY, f64::INFINITY);

fn hull(a: Range, b: Range) -> Range {
    (a.0.min(b.0), a.1.max(b.1))
}

fn fix(r: Range) -> Range {
    (if r.0.is_nan() { f64::NEG_INFINITY } else { r.0 }, if r.1.is_nan() { f64::INFINITY } else { r.1 })
}

/// True when both ends are finite.
pub fn finite(r: Range) -> Option<Range> {
    (r.0.is_finite() && r.1.is_finite() && r.0 <= r.1).then_some(r)
}

/// Range of `e` (possibly half-open, ±∞ when unknown) given the ranges of the
/// columns it reads (`col` returns their info). Never looks at data.
pub fn infer_bounds(e: &Expr, col: &dyn Fn(&datafusion::common::Column) -> Option<ColInfo>) -> Range {
    let rec = |x: &Expr| infer_bounds(x, col);
    let int_round = |r: Range, to_int: bool| if to_int { (r.0.floor(), r.1.ceil()) } else { r };
    fix(match e {
        Expr::Column(c) => col(c).and_then(|i| i.bounds).unwrap_or(UNKNOWN),
        Expr::Literal(..) => lit_f64(e).map(|v| (v, v)).unwrap_or(UNKNOWN),
        Expr::Alias(a) => rec(&a.expr),
        Expr::Cast(c) => int_round(rec(&c.expr), c.field.data_type().is_integer()),
        Expr::TryCast(c) => int_round(rec(&c.expr), c.field.data_type().is_integer()),
        Expr::Negative(x) => {
            let (lo, hi) = rec(x);
            (-hi, -lo)
        }
        Expr::Case(Case { when_then_expr, else_expr, .. }) => {
            let mut acc: Option<Range> = None;
            for (_, t) in when_then_expr {
                let b = rec(t);
                acc = Some(acc.map_or(b, |a| hull(a, b)));
            }
            if let Some(x) = else_expr {
                if !matches!(**x, Expr::Literal(ScalarValue::Null, _)) {
                    let b = rec(x);
                    acc = Some(acc.map_or(b, |a| hull(a, b)));
                }
            }
            acc.unwrap_or(UNKNOWN)
        }
        Expr::BinaryExpr(b) => {
            let l = rec(&b.left);
            let r = rec(&b.right);
            match b.op {
                Operator::Plus => (l.0 + r.0, l.1 + r.1),
                Operator::Minus => (l.0 - r.1, l.1 - r.0),
                Operator::Multiply => {
                    let c = [l.0 * r.0, l.0 * r.1, l.1 * r.0, l.1 * r.1];
                    if c.iter().any(|x| x.is_nan()) {
                        UNKNOWN
                    } else {
                        (c.iter().cloned().fold(f64::INFINITY, f64::min), c.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
                    }
                }
                Operator::Divide => match lit_f64(&b.right) {
                    Some(d) if d != 0.0 => ((l.0 / d).min(l.1 / d), (l.0 / d).max(l.1 / d)),
                    _ => UNKNOWN,
                },
                Operator::Modulo => match lit_f64(&b.right).map(f64::abs) {
                    Some(m) if m > 0.0 => {
                        if l.0 >= 0.0 {
                            (0.0, m)
                        } else {
                            (-m, m)
                        }
                    }
                    _ => UNKNOWN,
                },
                _ => UNKNOWN,
            }
        }
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            let a = &f.args;
            match name.as_str() {
                "clamp" if a.len() == 3 => match (lit_f64(&a[1]), lit_f64(&a[2])) {
                    (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    _ => UNKNOWN,
                },
                "date_part" | "datepart" | "extract" if !a.is_empty() => lit_str(&a[0]).and_then(|f| date_part_range(&f)).unwrap_or(UNKNOWN),
                "abs" => {
                    let (lo, hi) = rec(&a[0]);
                    if lo >= 0.0 {
                        (lo, hi)
                    } else if hi <= 0.0 {
                        (-hi, -lo)
                    } else {
                        (0.0, lo.abs().max(hi))
                    }
                }
                "floor" | "ceil" | "round" | "trunc" => {
                    let (lo, hi) = rec(&a[0]);
                    (lo.floor() - 1.0, hi.ceil() + 1.0)
                }
                "least" => {
                    let bs: Vec<Range> = a.iter().map(rec).collect();
                    (bs.iter().map(|b| b.0).fold(f64::INFINITY, f64::min), bs.iter().map(|b| b.1).fold(f64::INFINITY, f64::min))
                }
                "greatest" => {
                    let bs: Vec<Range> = a.iter().map(rec).collect();
                    (bs.iter().map(|b| b.0).fold(f64::NEG_INFINITY, f64::max), bs.iter().map(|b| b.1).fold(f64::NEG_INFINITY, f64::max))
                }
                "coalesce" | "nvl" | "ifnull" => a.iter().map(rec).reduce(hull).unwrap_or(UNKNOWN),
                "nullif" => rec(&a[0]),
                "signum" | "sin" | "cos" => (-1.0, 1.0),
                "length" | "char_length" | "character_length" | "octet_length" | "bit_length" | "strpos" | "instr" | "ascii" => (0.0, f64::INFINITY),
                _ => UNKNOWN,
            }
        }
        _ => UNKNOWN,
    })
}

/// A finite key domain of `e`, if known without reading private data.
pub fn infer_domain(e: &Expr, schema: &DFSchema, col: &dyn Fn(&datafusion::common::Column) -> Option<ColInfo>) -> Option<Domain> {
    let ty = e.get_type(schema).ok()?;
    match e {
        Expr::Column(c) => col(c).and_then(|i| i.domain.map(|d| (*d).clone())),
        Expr::Alias(a) => infer_domain(&a.expr, schema, col),
        _ if ty == DataType::Boolean => {
            Some(Domain { values: vec![ScalarValue::Boolean(Some(false)), ScalarValue::Boolean(Some(true))], source: "boolean".into() })
        }
        Expr::Case(Case { when_then_expr, else_expr, .. }) => {
            let mut vals = Vec::new();
            for (_, t) in when_then_expr {
                match &**t {
                    Expr::Literal(v, _) if !v.is_null() => vals.push(v.cast_to(&ty).ok()?),
                    _ => return None,
                }
            }
            if let Some(x) = else_expr {
                match &**x {
                    Expr::Literal(v, _) if v.is_null() => {}
                    Expr::Literal(v, _) => vals.push(v.cast_to(&ty).ok()?),
                    _ => return None,
                }
            }
            dedup(&mut vals);
            Some(Domain { values: vals, source: "CASE literals".into() })
        }
        Expr::ScalarFunction(f) if matches!(f.func.name(), "date_part" | "datepart" | "extract") && !f.args.is_empty() => {
            let field = lit_str(&f.args[0])?;
            if field.starts_with("sec") {
                return None; // may be fractional
            }
            let (lo, hi) = date_part_range(&field)?;
            let vals = (lo as i64..=hi as i64).map(|v| ScalarValue::Int64(Some(v)).cast_to(&ty)).collect::<Result<Vec<_>, _>>().ok()?;
            Some(Domain { values: vals, source: format!("date_part('{field}') range") })
        }
        Expr::ScalarFunction(f) if f.func.name() == "clamp" => None,
        _ => {
            // casts of a column with a domain: cast the values
            if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = e {
                let inner = infer_domain(expr, schema, col)?;
                let mut vals = inner.values.iter().map(|v| v.cast_to(&ty)).collect::<Result<Vec<_>, _>>().ok()?;
                dedup(&mut vals);
                return Some(Domain { values: vals, source: inner.source });
            }
            None
        }
    }
}

fn dedup(vals: &mut Vec<ScalarValue>) {
    let mut out: Vec<ScalarValue> = Vec::with_capacity(vals.len());
    for v in vals.drain(..) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    *vals = out;
}

/// True when `e` takes whole-number values: an integer type, or an integer
/// expression behind the analyzer's casts to floating point.
pub fn integer_valued(e: &Expr, schema: &DFSchema) -> bool {
    match e {
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => {
            e.get_type(schema).map(|t| t.is_integer()).unwrap_or(false) || integer_valued(expr, schema)
        }
        Expr::Alias(a) => integer_valued(&a.expr, schema),
        Expr::ScalarFunction(f) if f.func.name() == "clamp" && f.args.len() == 3 => {
            integer_valued(&f.args[0], schema) && [&f.args[1], &f.args[2]].iter().all(|a| lit_f64(a).is_some_and(|v| v.fract() == 0.0))
        }
        _ => e.get_type(schema).map(|t| t.is_integer()).unwrap_or(false),
    }
}
