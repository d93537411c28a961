//! Rule: finite key domains of GROUP BY expressions, known without reading data.
//!
//! A key whose values are known in advance (dpq.toml `domain = …`, a public
//! table, `CASE … THEN literal`, a `date_part` field, a boolean, an integer
//! expression whose range dpq.toml's bounds make small) is released for every
//! value of its domain, zero-filled, so absent keys reveal nothing and no
//! δ is spent on partition selection. Anything else has no domain here.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Case, Cast, TryCast};
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::bounds::date_part_range;
use super::{ColInfo, Domain, lit_str};

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
        Expr::ScalarFunction(f) if matches!(f.func.name(), "date_part" | "datepart" | "extract") && f.args.len() == 2 && temporal(&f.args[1], schema) => {
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
            if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = e
                && let Some(inner) = infer_domain(expr, schema, col)
            {
                let mut vals = inner.values.iter().map(|v| v.cast_to(&ty)).collect::<Result<Vec<_>, _>>().ok()?;
                dedup(&mut vals);
                return Some(Domain { values: vals, source: inner.source });
            }
            integer_range(e, &ty, schema, col)
        }
    }
}

/// The most values an integer range may have to serve as a domain.
pub const MAX_RANGE_DOMAIN: i64 = 1000;

/// An integer-typed key whose range follows from dpq.toml's bounds (public)
/// through arithmetic — `(x / 3600) % 24`, `x % 7`, `length / 100` over
/// `length` bounded [0, 2000] — has every integer of that range as its
/// domain, when there are at most [`MAX_RANGE_DOMAIN`] of them. (A value
/// outside the declared bounds can give a key outside the range: it is
/// dropped, as any key outside a domain.)
fn integer_range(e: &Expr, ty: &DataType, schema: &DFSchema, col: &dyn Fn(&datafusion::common::Column) -> Option<ColInfo>) -> Option<Domain> {
    if !ty.is_integer() {
        return None;
    }
    // what the f64 range arithmetic cannot vouch for (found by the second
    // attack): a date_part of an interval (days since 2020 are not 1..31),
    // and literals beyond 2^53 (i64 arithmetic wraps or fails where f64 does not)
    let mut doubtful = false;
    let _ = datafusion::common::tree_node::TreeNode::apply(e, |x| {
        let bad = match x {
            Expr::ScalarFunction(f) if matches!(f.func.name(), "date_part" | "datepart" | "extract") => f.args.len() != 2 || !temporal(&f.args[1], schema),
            Expr::Literal(..) => super::lit_f64(x).is_some_and(|v| v.abs() > 9_007_199_254_740_992.0),
            _ => false,
        };
        if bad {
            doubtful = true;
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if doubtful {
        return None;
    }
    let (lo, hi) = super::bounds::finite(super::bounds::infer_bounds(e, col))?;
    // a modulo's range is [0, m] (or [-m, m]) in the bounds' arithmetic; an
    // integer remainder stays strictly inside: |x % m| ≤ m - 1
    let (lo, hi) = match e {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Modulo => {
            let m = super::lit_f64(&b.right)?.abs();
            (lo.max(1.0 - m), hi.min(m - 1.0))
        }
        _ => (lo, hi),
    };
    let (lo, hi) = (lo.ceil(), hi.floor());
    // counted in f64 first: the ends can be far outside i64
    if !(hi >= lo && hi - lo < MAX_RANGE_DOMAIN as f64) {
        return None;
    }
    let (lo, hi) = (lo as i64, hi as i64);
    let vals = (lo..=hi).map(|v| ScalarValue::Int64(Some(v)).cast_to(ty)).collect::<Result<Vec<_>, _>>().ok()?;
    Some(Domain { values: vals, source: format!("integer range [{lo}, {hi}] from the bounds in dpq.toml") })
}

/// A date or time value (the argument for which `date_part` fields have their ranges).
fn temporal(e: &Expr, schema: &DFSchema) -> bool {
    matches!(e.get_type(schema), Ok(DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Time32(_) | DataType::Time64(_)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::common::Column;
    use datafusion::logical_expr::{col, lit, when};

    #[test]
    fn domains_come_from_literals_fields_and_configuration() {
        let schema = DFSchema::try_from(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]))
        .unwrap();
        let info = |c: &Column| -> Option<ColInfo> {
            (c.name == "kind").then(|| ColInfo {
                domain: Some(std::sync::Arc::new(Domain { values: vec![ScalarValue::from("a"), ScalarValue::from("b")], source: "test".into() })),
                ..Default::default()
            })
        };
        let hour = datafusion::functions::datetime::expr_fn::date_part(lit("hour"), col("ts"));
        assert_eq!(infer_domain(&hour, &schema, &info).unwrap().values.len(), 24);
        assert_eq!(infer_domain(&col("kind"), &schema, &info).unwrap().values.len(), 2);
        let case = when(col("n").gt(lit(3)), lit("big")).when(col("n").gt(lit(1)), lit("mid")).otherwise(lit("big")).unwrap();
        assert_eq!(infer_domain(&case, &schema, &info).unwrap().values.len(), 2, "duplicates removed");
        assert!(infer_domain(&col("n"), &schema, &info).is_none());
        // integer arithmetic over bounded columns: the range is the domain
        let bounded = |c: &Column| -> Option<ColInfo> { (c.name == "n").then(|| ColInfo { bounds: Some((0.0, 2000.0)), ..Default::default() }) };
        let d = infer_domain(&(col("n") % lit(7i64)), &schema, &bounded).unwrap();
        assert_eq!(d.values.first(), Some(&ScalarValue::Int64(Some(0))));
        assert_eq!(d.values.len(), 7, "n % 7 takes 0..=6");
        let d = infer_domain(&((col("n") / lit(100i64)) % lit(10i64)), &schema, &bounded).unwrap();
        assert_eq!(d.values.len(), 10);
        assert_eq!(infer_domain(&(col("n") / lit(100i64)), &schema, &bounded).unwrap().values.len(), 21);
        assert!(infer_domain(&(col("n") * lit(10i64)), &schema, &bounded).is_none(), "20 001 values: too many");
        assert_eq!(infer_domain(&(col("n") % lit(7i64)), &schema, &info).unwrap().values.len(), 13, "any integer: x % 7 in -6..=6");
        assert!(infer_domain(&(col("n") / lit(7i64)), &schema, &info).is_none(), "no bounds, no range");
        // from the second attack: ranges the f64 arithmetic cannot vouch for give no domain
        let isodow = datafusion::functions::datetime::expr_fn::date_part(lit("isodow"), col("ts"));
        let d = infer_domain(&isodow, &schema, &info).unwrap();
        assert_eq!(
            (d.values.first().cloned(), d.values.len()),
            (Some(ScalarValue::Int32(Some(1)).cast_to(&isodow.get_type(&schema).unwrap()).unwrap()), 7),
            "isodow is 1..=7"
        );
        let round_neg = datafusion::functions::math::expr_fn::round(vec![col("n"), lit(-4i64)]);
        assert!(infer_domain(&datafusion::logical_expr::cast(round_neg, DataType::Int64), &schema, &bounded).is_none(), "round(x, -4) is not within 1 of x");
        let div_cast = col("n") / datafusion::logical_expr::cast(lit(2.99f64), DataType::Int64);
        assert_eq!(infer_domain(&(div_cast / lit(100i64)), &schema, &bounded).unwrap().values.len(), 11, "CAST(2.99 AS BIGINT) divides by 2");
        let huge = (col("n") % lit(2i64)) + lit(i64::MAX);
        assert!(infer_domain(&huge, &schema, &bounded).is_none(), "literals beyond 2^53");
        assert!(infer_domain(&col("n").gt(lit(3)), &schema, &info).unwrap().values.len() == 2, "booleans");
    }
}
