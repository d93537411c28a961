//! Rule: value ranges of expressions, known without reading data.
//!
//! SUM, AVG, VARIANCE and quantiles need each value inside a public range: the
//! range of a column comes from dpq.toml (`bounds = [lo, hi]`), and the range of
//! an expression is derived from its columns' ranges and its literals (interval
//! arithmetic, `clamp`, `CASE`, `date_part` fields …). Never from data: a range
//! inferred here is either proven by the expression or unknown (±∞).

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Case, Cast, TryCast};
use datafusion::logical_expr::{Expr, ExprSchemable, Operator};

use super::{ColInfo, lit_f64, lit_str};

/// Range of a date_part field, if bounded.
pub fn date_part_range(field: &str) -> Option<(f64, f64)> {
    Some(match field {
        "hour" | "hours" | "h" => (0.0, 23.0),
        "minute" | "minutes" | "m" => (0.0, 59.0),
        "second" | "seconds" | "s" => (0.0, 60.0),
        "dow" => (0.0, 6.0),
        "isodow" => (1.0, 7.0), // Monday = 1 … Sunday = 7
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
            if let Some(x) = else_expr
                && !matches!(**x, Expr::Literal(ScalarValue::Null, _))
            {
                let b = rec(x);
                acc = Some(acc.map_or(b, |a| hull(a, b)));
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
                // with a digits argument, only a literal ≥ 0 keeps the value within 1 of x
                // (round(x, -4) moves it by up to 5000: found by the second attack)
                "floor" | "ceil" | "round" | "trunc" if a.len() == 1 || lit_f64(&a[1]).is_some_and(|d| d >= 0.0) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::Column;
    use datafusion::logical_expr::{col, lit};

    fn info(c: &Column) -> Option<ColInfo> {
        match c.name.as_str() {
            "len" => Some(ColInfo { bounds: Some((0.0, 2000.0)), ..Default::default() }),
            "amount" => Some(ColInfo { bounds: Some((-50.0, 100.0)), ..Default::default() }),
            _ => None,
        }
    }

    #[test]
    fn ranges_follow_the_expression_and_never_invent_bounds() {
        assert_eq!(infer_bounds(&col("len"), &info), (0.0, 2000.0));
        assert_eq!(infer_bounds(&(col("len") + lit(1)), &info), (1.0, 2001.0));
        assert_eq!(infer_bounds(&(col("amount") * lit(-2)), &info), (-200.0, 100.0));
        assert_eq!(infer_bounds(&(col("len") % lit(7)), &info), (0.0, 7.0));
        assert_eq!(finite(infer_bounds(&col("other"), &info)), None);
        assert_eq!(finite(infer_bounds(&(col("len") / col("amount")), &info)), None, "division by a column has no range");
        let case = datafusion::logical_expr::when(col("len").gt(lit(3)), lit(1)).otherwise(lit(0)).unwrap();
        assert_eq!(infer_bounds(&case, &info), (0.0, 1.0));
    }
}
