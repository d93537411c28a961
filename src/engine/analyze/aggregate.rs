//! Rule: the aggregate families dpq releases.
//!
//! | SQL | family | needs |
//! |---|---|---|
//! | `COUNT(*)`, `COUNT(unit)` | rows | — |
//! | `COUNT(x)` | non-null values | — |
//! | `COUNT(DISTINCT unit)` | people | — |
//! | `SUM(x)` | bounded sum | bounds of x |
//! | `AVG(x)` | bounded mean (centred sum / count) | bounds of x |
//! | `VARIANCE`, `VAR_POP`, `STDDEV`, `STDDEV_POP` | bounded variance | bounds of x |
//! | `MEDIAN`, `APPROX_PERCENTILE_CONT(x, p)`, `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x)` | DP quantile | bounds of x |
//!
//! Refused with the way out: `MIN`/`MAX` (one person's value; use a quantile),
//! `COUNT(DISTINCT x)` for x ≠ unit (no per-person sensitivity), `FILTER`
//! clauses, `DISTINCT` inside other aggregates, and any other aggregate.
//! Arguments must be accepted row expressions; they are made total.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::expr::{ColInfo, finite, infer_bounds, integer_valued, is_literal, lit_f64, make_total};
use super::{Agg, AggKind, Analyzer, Rel, refused};
use crate::engine::error::Result;

impl Analyzer<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dp_aggregate(
        &self,
        e: &Expr,
        name: &str,
        out_type: &DataType,
        schema: &DFSchemaRef,
        rel: &Rel,
        unit: &Column,
        lookup: &dyn Fn(&Column) -> Option<ColInfo>,
    ) -> Result<Agg> {
        let inner = match e {
            Expr::Alias(a) => &*a.expr,
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Err(refused(
                format!("aggregate expression `{e}`"),
                "not understood",
                "use COUNT, SUM, AVG, VARIANCE, STDDEV, MEDIAN or APPROX_PERCENTILE_CONT",
            ));
        };
        let fname = func.name().to_ascii_lowercase();
        let display = crate::sqltext::sql_notation(name);
        if params.filter.is_some() {
            return Err(refused(
                format!("{display} with a FILTER clause"),
                "filtered aggregates are not supported",
                "move the condition into WHERE, or use SUM(CASE WHEN … THEN 1 ELSE 0 END)",
            ));
        }
        let mut arg = params.args.first().cloned();
        let kind = match fname.as_str() {
            "count" => {
                let a = params.args.first();
                let is_star = a.is_none_or(|x| matches!(x, Expr::Literal(v, _) if !v.is_null()));
                let is_unit = matches!(a, Some(Expr::Column(c)) if lookup(c).is_some_and(|i| i.unit));
                if params.distinct {
                    if is_unit {
                        arg = None;
                        AggKind::CountUnits
                    } else {
                        return Err(refused(
                            display.to_string(),
                            "COUNT(DISTINCT x) for x other than the privacy unit has no per-person sensitivity dpq can bound",
                            format!("count people with COUNT(DISTINCT {}), or count distinct values per person in a sub-query", unit.name),
                        ));
                    }
                } else if is_star || is_unit {
                    arg = None;
                    AggKind::CountRows
                } else {
                    AggKind::CountValues
                }
            }
            "sum" => AggKind::Sum,
            "avg" | "mean" => AggKind::Avg,
            "var" | "var_samp" | "variance" | "var_sample" => AggKind::Variance { sample: true, stddev: false },
            "var_pop" | "variance_pop" => AggKind::Variance { sample: false, stddev: false },
            "stddev" | "stddev_samp" => AggKind::Variance { sample: true, stddev: true },
            "stddev_pop" => AggKind::Variance { sample: false, stddev: true },
            "median" | "approx_median" => AggKind::Quantile { q: 0.5 },
            "approx_percentile_cont" | "percentile_cont" | "quantile_cont" => {
                // APPROX_PERCENTILE_CONT(x, p) or PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY x):
                // the value is the ORDER BY expression when there is one, the level the literal argument
                let (value, level) = if !params.order_by.is_empty() {
                    (params.order_by[0].expr.clone(), params.args.iter().find(|a| is_literal(a)).cloned())
                } else {
                    (params.args.first().cloned().unwrap_or(Expr::Literal(ScalarValue::Null, None)), params.args.get(1).cloned())
                };
                arg = Some(value);
                let q = level.as_ref().and_then(lit_f64);
                match q {
                    Some(q) if q > 0.0 && q < 1.0 => AggKind::Quantile { q },
                    _ => {
                        return Err(refused(
                            display.to_string(),
                            "the percentile must be a literal strictly between 0 and 1",
                            "e.g. PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY x), or APPROX_PERCENTILE_CONT(x, 0.9)",
                        ));
                    }
                }
            }
            "min" | "max" => {
                return Err(refused(
                    format!("{}(…) of private values", fname.to_uppercase()),
                    "the minimum or maximum is one person's value, which no amount of noise protects",
                    "use a DP quantile instead, e.g. APPROX_PERCENTILE_CONT(x, 0.05) or (x, 0.95), or MEDIAN(x)",
                ));
            }
            other => {
                return Err(refused(
                    format!("aggregate function `{other}`"),
                    "dpq has no DP mechanism for it",
                    "use COUNT, COUNT(DISTINCT <unit>), SUM, AVG, VARIANCE, STDDEV, MEDIAN or APPROX_PERCENTILE_CONT",
                ));
            }
        };
        if !matches!(kind, AggKind::Quantile { .. }) && (params.args.len() > 1 || !params.order_by.is_empty()) {
            return Err(refused(
                display.to_string(),
                "dpq releases this aggregate of one argument, without ORDER BY",
                format!("write {}(x)", fname.to_uppercase()),
            ));
        }
        if params.distinct && kind != AggKind::CountUnits {
            return Err(refused(
                display.to_string(),
                "DISTINCT inside this aggregate is not supported",
                "remove DISTINCT, or de-duplicate per person in a sub-query",
            ));
        }
        let mut bounds = None;
        let mut integer = false;
        if let Some(a) = &arg {
            let info = self.expr_info(a, schema, rel)?;
            let ty = a.get_type(schema).map_err(crate::engine::error::sql)?;
            integer = integer_valued(a, schema);
            if kind.needs_bounds() {
                if !ty.is_numeric() {
                    return Err(refused(display.to_string(), format!("its argument has type {ty}, not a number"), "aggregate a numeric expression"));
                }
                bounds = finite(infer_bounds(a, lookup));
                if bounds.is_none() {
                    let what = if info.origin.is_empty() { a.to_string() } else { info.origin.clone() };
                    return Err(refused(
                        format!("{} over `{what}`, which has no bounds", kind.name()),
                        "without a declared range one person could move the result arbitrarily",
                        format!(
                            "declare bounds in dpq.toml ([tables.<table>.columns.<column>] bounds = [lo, hi]) or clamp in SQL: {}(clamp({a}, lo, hi))",
                            kind.name()
                        ),
                    ));
                }
            }
        }
        let arg = match arg {
            Some(a) => Some(make_total(a, schema, "an aggregate argument")?),
            None => None,
        };
        Ok(Agg { kind, arg, bounds, integer, name: name.to_string(), out_type: out_type.clone(), display })
    }
}

#[cfg(test)]
mod tests {
    use super::super::AggKind;
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, median, stddev, sum};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn every_family_is_recognised() {
        let plan = scan("messages")
            .aggregate(
                Vec::<datafusion::logical_expr::Expr>::new(),
                vec![
                    count(lit(1)),
                    count(col("emoji")),
                    count_distinct(col("user_id")),
                    sum(col("length")),
                    avg(col("length")),
                    stddev(col("length")),
                    median(col("length")),
                ],
            )
            .unwrap()
            .build()
            .unwrap();
        let q = dp(plan);
        let kinds: Vec<AggKind> = q.aggs.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![
                AggKind::CountRows,
                AggKind::CountValues,
                AggKind::CountUnits,
                AggKind::Sum,
                AggKind::Avg,
                AggKind::Variance { sample: true, stddev: true },
                AggKind::Quantile { q: 0.5 }
            ]
        );
        assert_eq!(q.aggs[3].bounds, Some((0.0, 2000.0)));
    }

    #[test]
    fn refusals_name_the_way_out() {
        let r = refusal(scan("messages").aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![max(col("length"))]).unwrap().build().unwrap());
        assert!(r.contains("MAX") && r.contains("APPROX_PERCENTILE_CONT"), "{r}");
        let r = refusal(scan("messages").aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![count_distinct(col("emoji"))]).unwrap().build().unwrap());
        assert!(r.contains("COUNT(DISTINCT user_id)"), "{r}");
        let r = refusal(scan("payments").aggregate(Vec::<datafusion::logical_expr::Expr>::new(), vec![sum(col("rate") * lit(2.0))]).unwrap().build().unwrap());
        assert!(r.contains("has no bounds"), "{r}");
    }
}
