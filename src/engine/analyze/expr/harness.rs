//! The totality harness: every function of the contract table and every
//! accepted operator, cast and predicate, in every argument position, evaluated
//! over adversarial values — NULL, NaN, ±∞, 0, −1, MIN/MAX of every integer
//! width, empty and very long strings, timestamps at both ends of the range,
//! extreme intervals, a list where a scalar is expected.
//!
//! For each case the expression is planned and type-coerced as a query would be,
//! then either refused before any row is read (a data-independent outcome), or
//! made total and evaluated. The total form must never fail, and on every row
//! where the plain DataFusion expression succeeds it must give the same value
//! (NULL where the plain one fails). `raw_failures` records what the plain
//! expressions — what dpq evaluated before this rule — did on the same rows.
//!
//! [`through_the_bounded_executor`] runs one case per function and operator as DP
//! queries over a Parquet table of adversarial rows, in WHERE, GROUP BY and
//! aggregate arguments, and in a per-person sub-query.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Date64Array, Decimal128Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray, LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, IntervalDayTime, IntervalMonthDayNano, IntervalUnit, Schema, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, col, lit};
use datafusion::prelude::SessionContext;

use super::allowed::{CONTRACTS, H, OPERATORS, check_row_expr};
use super::make_total;

const LONG: usize = 10_000;

fn utc() -> Option<Arc<str>> {
    Some("UTC".into())
}

/// Adversarial values of a type.
fn values(ty: &DataType) -> ArrayRef {
    macro_rules! ints {
        ($arr:ident, $t:ty) => {
            Arc::new($arr::from(vec![
                None,
                Some(0 as $t),
                Some(1 as $t),
                Some(<$t>::MAX),
                Some(<$t>::MIN),
                Some(<$t>::MAX - 1),
                Some(<$t>::MIN.wrapping_add(1)),
                Some((0 as $t).wrapping_sub(1)),
            ]))
        };
    }
    let strings: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("a".into()),
        Some("é🙂中".into()),
        Some("-1".into()),
        Some("2025-01-05".into()),
        Some("2025-01-05T03:04:05Z".into()),
        Some("not-a-date".into()),
        Some("1e400".into()),
        Some("\0".into()),
        Some("99999999999999999999".into()),
        Some("x".repeat(LONG)),
    ];
    let floats = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, -1.0, 1.0, 0.5, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 1e-300];
    let ts = |unit: TimeUnit| -> Vec<Option<i64>> {
        let day = match unit {
            TimeUnit::Second => 86_400,
            TimeUnit::Millisecond => 86_400_000,
            TimeUnit::Microsecond => 86_400_000_000,
            TimeUnit::Nanosecond => 86_400_000_000_000,
        };
        vec![None, Some(i64::MIN), Some(i64::MAX), Some(0), Some(-1), Some(20_000 * day), Some(i64::MIN + 1)]
    };
    match ty {
        DataType::Int8 => ints!(Int8Array, i8),
        DataType::Int16 => ints!(Int16Array, i16),
        DataType::Int32 => ints!(Int32Array, i32),
        DataType::Int64 => ints!(Int64Array, i64),
        DataType::UInt8 => ints!(UInt8Array, u8),
        DataType::UInt16 => ints!(UInt16Array, u16),
        DataType::UInt32 => ints!(UInt32Array, u32),
        DataType::UInt64 => ints!(UInt64Array, u64),
        DataType::Float32 => Arc::new(Float32Array::from(std::iter::once(None).chain(floats.iter().map(|&f| Some(f as f32))).collect::<Vec<_>>())),
        DataType::Float64 => Arc::new(Float64Array::from(std::iter::once(None).chain(floats.iter().map(|&f| Some(f))).collect::<Vec<_>>())),
        DataType::Decimal128(p, s) => {
            let max = 10i128.pow(*p as u32) - 1;
            Arc::new(
                Decimal128Array::from(vec![None, Some(0), Some(1), Some(-1), Some(max), Some(-max), Some(10i128.pow(*s as u32))])
                    .with_precision_and_scale(*p, *s)
                    .unwrap(),
            )
        }
        DataType::Utf8 => Arc::new(StringArray::from(strings)),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(strings)),
        DataType::Utf8View => Arc::new(StringViewArray::from(strings)),
        DataType::Boolean => Arc::new(BooleanArray::from(vec![None, Some(true), Some(false)])),
        DataType::Timestamp(TimeUnit::Second, tz) => Arc::new(TimestampSecondArray::from(ts(TimeUnit::Second)).with_timezone_opt(tz.clone())),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => Arc::new(TimestampMillisecondArray::from(ts(TimeUnit::Millisecond)).with_timezone_opt(tz.clone())),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(TimestampMicrosecondArray::from(ts(TimeUnit::Microsecond)).with_timezone_opt(tz.clone())),
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => Arc::new(TimestampNanosecondArray::from(ts(TimeUnit::Nanosecond)).with_timezone_opt(tz.clone())),
        DataType::Date32 => Arc::new(Date32Array::from(vec![None, Some(i32::MIN), Some(i32::MAX), Some(0), Some(-1), Some(20_000)])),
        DataType::Date64 => Arc::new(Date64Array::from(vec![None, Some(i64::MIN), Some(i64::MAX), Some(0), Some(1_735_516_800_000)])),
        DataType::Interval(IntervalUnit::MonthDayNano) => Arc::new(IntervalMonthDayNanoArray::from(vec![
            None,
            Some(IntervalMonthDayNano::new(0, 0, 0)),
            Some(IntervalMonthDayNano::new(i32::MAX, i32::MAX, i64::MAX)),
            Some(IntervalMonthDayNano::new(i32::MIN, i32::MIN, i64::MIN)),
            Some(IntervalMonthDayNano::new(1, 1, 3_600_000_000_000)),
        ])),
        DataType::Interval(IntervalUnit::YearMonth) => Arc::new(IntervalYearMonthArray::from(vec![None, Some(0), Some(i32::MAX), Some(i32::MIN), Some(13)])),
        DataType::Interval(IntervalUnit::DayTime) => Arc::new(IntervalDayTimeArray::from(vec![
            None,
            Some(IntervalDayTime::new(0, 0)),
            Some(IntervalDayTime::new(i32::MAX, i32::MAX)),
            Some(IntervalDayTime::new(i32::MIN, i32::MIN)),
        ])),
        DataType::List(_) => Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![None, Some(vec![]), Some(vec![Some(1), None])])),
        other => panic!("no adversarial values for {other}"),
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

const INTS: [DataType; 8] =
    [DataType::Int8, DataType::Int16, DataType::Int32, DataType::Int64, DataType::UInt8, DataType::UInt16, DataType::UInt32, DataType::UInt64];

fn family(h: &H) -> Vec<DataType> {
    let dec = DataType::Decimal128(38, 10);
    match h {
        H::Str => vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View],
        H::Int => INTS.to_vec(),
        H::Float => vec![DataType::Float32, DataType::Float64],
        H::Num => INTS.iter().cloned().chain([DataType::Float32, DataType::Float64, dec]).collect(),
        H::Time => vec![
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Date32,
        ],
        H::Date => vec![DataType::Date32, DataType::Date64],
        H::Interval => {
            vec![DataType::Interval(IntervalUnit::MonthDayNano), DataType::Interval(IntervalUnit::YearMonth), DataType::Interval(IntervalUnit::DayTime)]
        }
        H::Bool => vec![DataType::Boolean],
        H::Any => vec![DataType::Utf8, DataType::Int64, DataType::Float64, DataType::Timestamp(TimeUnit::Microsecond, utc()), DataType::Boolean],
        H::LitStr(_) | H::LitInt(_) | H::LitInterval(_) => vec![],
    }
}

/// An argument of a harness case: a column of adversarial values, or a literal.
#[derive(Debug, Clone)]
enum Arg {
    Col(DataType),
    Lit(Expr),
}

fn expansions(h: &H) -> Vec<Arg> {
    match h {
        H::LitStr(v) => v.iter().map(|s| Arg::Lit(lit(*s))).collect(),
        H::LitInt(v) => v.iter().map(|i| Arg::Lit(lit(*i))).collect(),
        H::LitInterval(v) => v.iter().map(|s| Arg::Lit(lit(interval(s)))).collect(),
        other => family(other).into_iter().chain([list_type()]).map(Arg::Col).collect(),
    }
}

/// `INTERVAL 'n unit'` as a literal (the harness's few interval literals).
fn interval(text: &str) -> ScalarValue {
    let inner = text.trim_start_matches("INTERVAL '").trim_end_matches('\'');
    let (n, unit) = inner.split_once(' ').unwrap();
    let n: i64 = n.parse().unwrap();
    let v = match unit {
        "hour" | "hours" => IntervalMonthDayNano::new(0, 0, n * 3_600_000_000_000),
        "minute" | "minutes" => IntervalMonthDayNano::new(0, 0, n * 60_000_000_000),
        "second" | "seconds" => IntervalMonthDayNano::new(0, 0, n * 1_000_000_000),
        "day" | "days" => IntervalMonthDayNano::new(0, n as i32, 0),
        "month" | "months" => IntervalMonthDayNano::new(n as i32, 0, 0),
        other => panic!("unit {other}"),
    };
    ScalarValue::IntervalMonthDayNano(Some(v))
}

/// One case: an expression over columns a0, a1, … and their types.
struct Case {
    label: String,
    expr: Expr,
    cols: Vec<DataType>,
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    refused_at_planning: usize,
    evaluated: usize,
    rows: usize,
    /// cases whose plain DataFusion expression fails on some adversarial row
    raw_failing: BTreeMap<String, usize>,
}

fn args_of(args: &[Arg]) -> (Vec<Expr>, Vec<DataType>) {
    let mut cols = Vec::new();
    let exprs = args
        .iter()
        .map(|a| match a {
            Arg::Col(t) => {
                cols.push(t.clone());
                col(format!("a{}", cols.len() - 1))
            }
            Arg::Lit(e) => e.clone(),
        })
        .collect();
    (exprs, cols)
}

/// Every case: each function signature varied one argument position at a time.
fn function_cases(ctx: &SessionContext) -> Vec<(String, Case)> {
    let mut out = Vec::new();
    for c in CONTRACTS {
        let udf = ctx.udf(c.name).unwrap();
        for sig in c.harness {
            let base: Vec<Arg> = sig.iter().map(|h| expansions(h)[0].clone()).collect();
            let mut variants = vec![base.clone()];
            for (i, h) in sig.iter().enumerate() {
                for e in expansions(h).into_iter().skip(1) {
                    let mut v = base.clone();
                    v[i] = e;
                    variants.push(v);
                }
            }
            for v in variants {
                let (exprs, cols) = args_of(&v);
                let label = format!(
                    "{}({})",
                    c.name,
                    v.iter()
                        .map(|a| match a {
                            Arg::Col(t) => t.to_string(),
                            Arg::Lit(e) => e.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                out.push((c.name.to_string(), Case { label, expr: udf.call(exprs), cols }));
            }
        }
    }
    out
}

fn all_types() -> Vec<DataType> {
    let mut t: Vec<DataType> = INTS.to_vec();
    t.extend([
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal128(38, 10),
        DataType::Decimal128(5, 2),
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Boolean,
        DataType::Timestamp(TimeUnit::Second, None),
        DataType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Timestamp(TimeUnit::Microsecond, utc()),
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        DataType::Date32,
        DataType::Date64,
        DataType::Interval(IntervalUnit::MonthDayNano),
        DataType::Interval(IntervalUnit::YearMonth),
        DataType::Interval(IntervalUnit::DayTime),
    ]);
    t
}

/// Operators over pairs of types, unary minus, casts, and the predicates.
fn operator_cases() -> Vec<(String, Case)> {
    let mut out = Vec::new();
    let num: Vec<DataType> =
        INTS.iter().cloned().chain([DataType::Float32, DataType::Float64, DataType::Decimal128(38, 10), DataType::Decimal128(5, 2)]).collect();
    let mut pairs: Vec<(DataType, DataType)> = num.iter().map(|t| (t.clone(), t.clone())).collect();
    pairs.extend([
        (DataType::Int8, DataType::Int64),
        (DataType::Int64, DataType::Float64),
        (DataType::UInt64, DataType::Int64),
        (DataType::Decimal128(38, 10), DataType::Int64),
        (DataType::Decimal128(5, 2), DataType::Float64),
        (DataType::Utf8, DataType::Utf8),
        (DataType::Utf8, DataType::Int64),
        (DataType::Utf8View, DataType::LargeUtf8),
        (DataType::Boolean, DataType::Boolean),
        (list_type(), DataType::Int64),
    ]);
    for t in family(&H::Time) {
        for i in family(&H::Interval) {
            pairs.push((t.clone(), i.clone()));
        }
        pairs.push((t.clone(), t.clone()));
    }
    for i in family(&H::Interval) {
        pairs.push((i.clone(), i.clone()));
        pairs.push((i.clone(), DataType::Int64));
    }
    for op in OPERATORS {
        for (l, r) in &pairs {
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(col("a0")), *op, Box::new(col("a1"))));
            out.push((format!("op {op}"), Case { label: format!("{l} {op} {r}"), expr: e, cols: vec![l.clone(), r.clone()] }));
        }
        // literal right-hand sides: the ÷0 guard's fast path and its skip
        for v in [lit(0i64), lit(-1i64), lit(7i64)] {
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(col("a0")), *op, Box::new(v.clone())));
            out.push((format!("op {op}"), Case { label: format!("Int64 {op} {v}"), expr: e, cols: vec![DataType::Int64] }));
        }
    }
    for t in num.iter().chain(&family(&H::Interval)).chain([&DataType::Utf8]) {
        out.push(("unary -".into(), Case { label: format!("-{t}"), expr: Expr::Negative(Box::new(col("a0"))), cols: vec![t.clone()] }));
    }
    let targets = all_types();
    for from in all_types().into_iter().chain([list_type()]) {
        for to in &targets {
            let e = datafusion::logical_expr::cast(col("a0"), to.clone());
            out.push(("CAST".into(), Case { label: format!("CAST({from} AS {to})"), expr: e, cols: vec![from.clone()] }));
        }
    }
    for t in family(&H::Str) {
        for p in ["a%", "%", "_", "\\", "[", "(", "", "%é%"] {
            out.push(("LIKE".into(), Case { label: format!("{t} LIKE {p:?}"), expr: col("a0").like(lit(p)), cols: vec![t.clone()] }));
            out.push(("ILIKE".into(), Case { label: format!("{t} ILIKE {p:?}"), expr: col("a0").ilike(lit(p)), cols: vec![t.clone()] }));
            let sim = Expr::SimilarTo(datafusion::logical_expr::expr::Like::new(false, Box::new(col("a0")), Box::new(lit(p)), None, false));
            out.push(("SIMILAR TO".into(), Case { label: format!("{t} SIMILAR TO {p:?}"), expr: sim, cols: vec![t.clone()] }));
        }
    }
    for t in all_types() {
        out.push((
            "BETWEEN".into(),
            Case { label: format!("{t} BETWEEN"), expr: col("a0").between(col("a1"), col("a2")), cols: vec![t.clone(), t.clone(), t.clone()] },
        ));
        out.push((
            "IN".into(),
            Case {
                label: format!("{t} IN (0, NULL)"),
                expr: col("a0").in_list(vec![lit(ScalarValue::Int64(Some(0))), lit(ScalarValue::Null)], false),
                cols: vec![t.clone()],
            },
        ));
        out.push((
            "CASE".into(),
            Case {
                label: format!("CASE over {t}"),
                expr: datafusion::logical_expr::when(col("a0").is_null(), col("a1")).otherwise(col("a0")).unwrap(),
                cols: vec![t.clone(), t.clone()],
            },
        ));
        out.push((
            "IS DISTINCT FROM".into(),
            Case {
                label: format!("{t} IS DISTINCT FROM"),
                expr: Expr::BinaryExpr(BinaryExpr::new(Box::new(col("a0")), Operator::IsDistinctFrom, Box::new(col("a1")))),
                cols: vec![t.clone(), t.clone()],
            },
        ));
    }
    out
}

/// The rows of a case: the cartesian product of its columns' adversarial
/// values (a column's list is cut short when the product would exceed 600 rows).
fn batch(cols: &[DataType]) -> RecordBatch {
    let lists: Vec<ArrayRef> = cols.iter().map(values).collect();
    let mut lens: Vec<usize> = lists.iter().map(|a| a.len()).collect();
    while lens.iter().product::<usize>() > 600 {
        let i = (0..lens.len()).max_by_key(|&i| lens[i]).unwrap();
        lens[i] -= 1;
    }
    let n: usize = lens.iter().product::<usize>().max(1);
    let mut arrays = Vec::new();
    let mut stride = 1;
    for (a, &len) in lists.iter().zip(&lens) {
        let idx: Vec<u32> = (0..n).map(|r| ((r / stride) % len) as u32).collect();
        arrays.push(datafusion::arrow::compute::take(a.as_ref(), &datafusion::arrow::array::UInt32Array::from(idx), None).unwrap());
        stride *= len;
    }
    let fields: Vec<Field> = cols.iter().enumerate().map(|(i, t)| Field::new(format!("a{i}"), t.clone(), true)).collect();
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)))
        .unwrap()
}

enum Outcome {
    /// Refused (or not plannable) before any row is read.
    Planning,
    /// Evaluated totally; how many rows the plain expression failed on.
    Evaluated { rows: usize, raw_failures: usize },
}

fn physical(e: &Expr, schema: &DFSchema) -> datafusion::common::Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    datafusion::physical_expr::create_physical_expr(e, schema, &ExecutionProps::new(), &PhysicalPlanningContext::default())
}

fn same(a: &ArrayRef, i: usize, b: &ArrayRef, j: usize) -> bool {
    match (ScalarValue::try_from_array(a, i), ScalarValue::try_from_array(b, j)) {
        (Ok(ScalarValue::Float64(Some(x))), Ok(ScalarValue::Float64(Some(y)))) => x == y || (x.is_nan() && y.is_nan()),
        (Ok(ScalarValue::Float32(Some(x))), Ok(ScalarValue::Float32(Some(y)))) => x == y || (x.is_nan() && y.is_nan()),
        (Ok(x), Ok(y)) => x == y || (x.is_null() && y.is_null()),
        _ => false,
    }
}

/// Plan, coerce, check, make total, evaluate; panic on any totality violation.
fn run_case(ctx: &SessionContext, case: &Case) -> Outcome {
    let b = batch(&case.cols);
    let source = Arc::new(LogicalTableSource::new(b.schema()));
    let Ok(plan) = LogicalPlanBuilder::scan("t", source, None).and_then(|p| p.project(vec![case.expr.clone().alias("out")])).and_then(|p| p.build()) else {
        return Outcome::Planning;
    };
    let state = ctx.state();
    let Ok(plan) = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}) else { return Outcome::Planning };
    let LogicalPlan::Projection(p) = &plan else { panic!("{}: not a projection", case.label) };
    let coerced = match &p.expr[0] {
        Expr::Alias(a) => (*a.expr).clone(),
        e => e.clone(),
    };
    let schema = p.input.schema().clone();
    if check_row_expr(&coerced, "the harness").is_err() {
        return Outcome::Planning;
    }
    let Ok(total) = make_total(coerced.clone(), &schema, "the harness") else { return Outcome::Planning };
    {
        use datafusion::logical_expr::ExprSchemable;
        assert_eq!(total.get_type(&schema).ok(), coerced.get_type(&schema).ok(), "{}: the total form changes the type", case.label);
    }
    // the optimizer simplifies before execution (it folds now(), rewrites coalesce …)
    let now = chrono::Utc::now();
    let simplify = |e: Expr| {
        let info =
            datafusion::logical_expr::simplify::SimplifyContext::builder().with_schema(schema.clone()).with_query_execution_start_time(Some(now)).build();
        datafusion::optimizer::simplify_expressions::ExprSimplifier::new(info).simplify(e)
    };
    let Ok(total) = simplify(total) else { return Outcome::Planning };
    let coerced = simplify(coerced.clone()).unwrap_or(coerced);
    let Ok(tp) = physical(&total, &schema) else { return Outcome::Planning };
    let n = b.num_rows();
    let out = match crate::engine::total::quietly(|| tp.evaluate(&b)) {
        Ok(Ok(v)) => v.into_array(n).unwrap(),
        Ok(Err(e)) => panic!("NOT TOTAL: {} failed: {e}\n  total form: {total}", case.label),
        Err(_) => panic!("NOT TOTAL: {} panicked\n  total form: {total}", case.label),
    };
    assert_eq!(out.len(), n, "{}: wrong length", case.label);
    // against the plain expression, row by row where it fails on the batch
    let Ok(rp) = physical(&coerced, &schema) else {
        // DataFusion would have refused this at planning; the total form evaluates to NULL
        return Outcome::Evaluated { rows: n, raw_failures: 0 };
    };
    let mut raw_failures = 0;
    let plain = |rows: &RecordBatch| -> Option<ArrayRef> {
        match crate::engine::total::quietly(|| rp.evaluate(rows).and_then(|v| v.into_array(rows.num_rows()))) {
            Ok(Ok(a)) => Some(a),
            _ => None,
        }
    };
    match plain(&b) {
        Some(raw) => {
            for i in 0..n {
                assert!(same(&raw, i, &out, i), "{}: row {i} differs from DataFusion's value", case.label);
            }
        }
        None => {
            for i in 0..n {
                match plain(&b.slice(i, 1)) {
                    Some(raw) => assert!(same(&raw, 0, &out, i), "{}: row {i} differs from DataFusion's value", case.label),
                    None => raw_failures += 1,
                }
            }
        }
    }
    Outcome::Evaluated { rows: n, raw_failures }
}

fn run_all(cases: &[(String, Case)], ctx: &SessionContext) -> (Tally, BTreeMap<String, usize>) {
    let mut t = Tally::default();
    let mut evaluated_per_name: BTreeMap<String, usize> = BTreeMap::new();
    for (name, case) in cases {
        t.cases += 1;
        let quiet = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(ctx, case)));
        match quiet {
            Ok(Outcome::Planning) => t.refused_at_planning += 1,
            Ok(Outcome::Evaluated { rows, raw_failures }) => {
                t.evaluated += 1;
                t.rows += rows;
                *evaluated_per_name.entry(name.clone()).or_default() += 1;
                if raw_failures > 0 {
                    *t.raw_failing.entry(case.label.clone()).or_default() += raw_failures;
                }
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    (t, evaluated_per_name)
}

fn context() -> SessionContext {
    crate::engine::session::test_context()
}

#[test]
fn every_function_is_total() {
    crate::engine::total::install_quiet_hook_for_tests();
    let ctx = context();
    let cases = function_cases(&ctx);
    let (t, evaluated) = run_all(&cases, &ctx);
    for c in CONTRACTS {
        assert!(evaluated.get(c.name).copied().unwrap_or(0) > 0, "`{}`: no harness case evaluated (every signature was refused at planning)", c.name);
    }
    println!(
        "functions: {} cases, {} evaluated over {} rows, {} refused at planning; plain DataFusion failed in {} cases:",
        t.cases,
        t.evaluated,
        t.rows,
        t.refused_at_planning,
        t.raw_failing.len()
    );
    for (label, n) in &t.raw_failing {
        println!("  {label}: {n} rows");
    }
    // the examples are among what the plain expressions fail on
    for f in ["substr(", "abs(Int8", "date_trunc(", "date_bin("] {
        assert!(t.raw_failing.keys().any(|l| l.starts_with(f)), "the harness no longer sees `{f}` fail in plain DataFusion");
    }
}

#[test]
fn every_operator_cast_and_predicate_is_total() {
    crate::engine::total::install_quiet_hook_for_tests();
    let ctx = context();
    let cases = operator_cases();
    let (t, evaluated) = run_all(&cases, &ctx);
    for op in OPERATORS {
        assert!(evaluated.get(&format!("op {op}")).copied().unwrap_or(0) > 0, "operator {op}: no case evaluated");
    }
    for what in ["unary -", "CAST", "LIKE", "ILIKE", "SIMILAR TO", "BETWEEN", "IN", "CASE", "IS DISTINCT FROM"] {
        assert!(evaluated.get(what).copied().unwrap_or(0) > 0, "{what}: no case evaluated");
    }
    println!(
        "operators, casts, predicates: {} cases, {} evaluated over {} rows, {} refused at planning; plain DataFusion failed in {} cases:",
        t.cases,
        t.evaluated,
        t.rows,
        t.refused_at_planning,
        t.raw_failing.len()
    );
    for (label, n) in &t.raw_failing {
        println!("  {label}: {n} rows");
    }
}

// ---- through the bounded executor ----

/// SQL for one argument family, over the adversarial table's stored columns.
fn sql_arg(h: &H, narrow: bool) -> String {
    match h {
        H::Str | H::Any => "c_str".into(),
        H::Int if narrow => "CAST(c_int AS TINYINT)".into(),
        H::Int => "c_int".into(),
        H::Float => "c_float".into(),
        H::Num if narrow => "CAST(c_int AS SMALLINT)".into(),
        H::Num => "c_float".into(),
        H::Time => "c_ts".into(),
        H::Date => "c_date".into(),
        H::Interval => "INTERVAL '1 hour'".into(),
        H::Bool => "c_bool".into(),
        H::LitStr(v) => format!("'{}'", v[0].replace('\'', "''")),
        H::LitInt(v) => v[0].to_string(),
        H::LitInterval(v) => v[0].to_string(),
    }
}

/// One SQL expression per contract signature (stored types, and narrow integers).
fn sql_cases() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in CONTRACTS {
        for sig in c.harness {
            for narrow in [false, true] {
                let args: Vec<String> = sig.iter().map(|h| sql_arg(h, narrow)).collect();
                out.push((c.name.to_string(), format!("{}({})", c.name, args.join(", "))));
            }
        }
    }
    let ops = [
        "c_int + c_int",
        "c_int - c_int",
        "c_int * c_int",
        "c_int / (c_int - c_int)",
        "c_int % c_int",
        "c_int / -1",
        "CAST(c_int AS TINYINT) * CAST(c_int AS TINYINT)",
        "CAST(c_int AS TINYINT) / CAST(-1 AS TINYINT)",
        "c_int & c_int",
        "c_str || c_str",
        "c_str || c_int",
        "c_ts + INTERVAL '1 day'",
        "c_ts - INTERVAL '300 years'",
        "c_ts - c_ts",
        "c_date + INTERVAL '1 month'",
        "c_date - c_date",
        "-c_int",
        "-CAST(c_int AS TINYINT)",
        "CAST(c_str AS INT)",
        "CAST(c_str AS TIMESTAMP)",
        "CAST(c_ts AS VARCHAR)",
        "CAST(c_float AS BIGINT)",
        "CAST(c_int AS DECIMAL(5,2))",
        "CAST(c_ts AS DATE)",
        "c_str LIKE '%a%'",
        "c_str SIMILAR TO 'a|b'",
        "c_int BETWEEN c_int AND c_float",
        "c_str = c_int",
    ];
    out.extend(ops.iter().map(|o| ("operator".to_string(), o.to_string())));
    out
}

/// A dataset with one table `adv` of adversarial rows over 7 people: every
/// stored type's adversarial values, cycled.
fn adversarial_dataset() -> (tempfile::TempDir, crate::dataset::Dataset) {
    use crate::dataset::Dataset;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("adv");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("dpq.toml"),
        "[budget]\nepsilon = 1000000\ndelta = 1e-6\n[tables.adv]\nprivacy_unit = \"u\"\n[tables.adv.columns.c_int]\nbounds = [-100, 100]\n",
    )
    .unwrap();
    let types = [
        ("c_int", DataType::Int64),
        ("c_float", DataType::Float64),
        ("c_str", DataType::Utf8),
        ("c_ts", DataType::Timestamp(TimeUnit::Microsecond, utc())),
        ("c_date", DataType::Date32),
        ("c_bool", DataType::Boolean),
    ];
    let n = 84;
    let mut fields = vec![Field::new("u", DataType::Int64, true)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from((0..n as i64).map(|i| i % 7).collect::<Vec<_>>()))];
    for (name, t) in &types {
        let v = values(t);
        let idx: Vec<u32> = (0..n).map(|i| (i % v.len()) as u32).collect();
        cols.push(datafusion::arrow::compute::take(v.as_ref(), &datafusion::arrow::array::UInt32Array::from(idx), None).unwrap());
        fields.push(Field::new(*name, t.clone(), true));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let file = dir.path().join("adv.parquet");
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let ds = Dataset::open(&data).unwrap();
    let o =
        crate::ingest::IngestOptions { dataset: None, table: "adv".into(), files: vec![file], force: false, format: None, progress: crate::progress::silent() };
    let s = crate::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
    assert_eq!(s.table_rows, n as u64, "every adversarial row is stored");
    (dir, ds)
}

#[test]
fn through_the_bounded_executor() {
    use crate::engine::{Engine, Prepared, params_from};
    crate::engine::total::install_quiet_hook_for_tests();
    let (_dir, ds) = adversarial_dataset();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let engine = Engine::open(&ds, None).await.unwrap();
        let p = params_from(&ds.config, Some("1".parse().unwrap()), Some("1e-7".parse().unwrap()), None, None, None, None, None, Some(false));
        // the cases that plan (the others are refused before any row is read)
        let mut cases = Vec::new();
        let mut planned: BTreeMap<String, usize> = BTreeMap::new();
        for (name, e) in sql_cases() {
            if !cases.contains(&e) && engine.prepare(&format!("SELECT COUNT(*) FROM adv WHERE ({e}) IS NULL"), &p).await.is_ok() {
                *planned.entry(name.clone()).or_default() += 1;
                cases.push(e);
            }
        }
        for c in CONTRACTS {
            assert!(planned.contains_key(c.name), "`{}`: no SQL case plans through the analyser", c.name);
        }
        let any_null = cases.iter().map(|e| format!("({e}) IS NULL")).collect::<Vec<_>>().join(" OR ");
        let counts = cases.iter().enumerate().map(|(i, e)| format!("SUM(CASE WHEN ({e}) IS NULL THEN {i} ELSE 0 END) AS n{i}")).collect::<Vec<_>>().join(", ");
        let per_person = cases.iter().enumerate().map(|(i, e)| format!("MAX(CASE WHEN ({e}) IS NULL THEN {i} END) AS c{i}")).collect::<Vec<_>>().join(", ");
        let queries = [
            ("WHERE", format!("SELECT COUNT(*) FROM adv WHERE {any_null}")),
            ("aggregate arguments", format!("SELECT {counts} FROM adv")),
            ("GROUP BY", format!("SELECT k, COUNT(*) FROM (SELECT u, CASE WHEN {any_null} THEN 'some null' ELSE 'all values' END AS k FROM adv) t GROUP BY k")),
            ("per-person sub-query", format!("SELECT COUNT(*) FROM (SELECT u, {per_person} FROM adv GROUP BY u) t")),
            ("join condition", format!("SELECT COUNT(*) FROM adv a JOIN adv b ON a.u = b.u AND ({})", any_null.replace("c_", "a.c_"))),
        ];
        println!("through the bounded executor: {} SQL cases in 5 contexts", cases.len());
        for (context, sql) in &queries {
            let prepared = engine.prepare(sql, &p).await.unwrap_or_else(|e| panic!("{context}: refused: {e}"));
            let Prepared::Dp { query, cal, .. } = &prepared else { panic!("{context}: not a DP query") };
            let r = engine.compute(query, cal, [7u8; 32]).await;
            if let Err(e) = r {
                panic!("{context}: the bounded executor failed: {e}");
            }
        }
    });
}

/// Every aggregate a per-person sub-query admits, over every adversarial
/// argument (and DISTINCT / ORDER BY / WITHIN GROUP forms), run through the
/// bounded executor: no group's accumulator failure fails the query.
#[test]
fn every_per_person_aggregate_is_total() {
    use crate::engine::{Engine, Prepared, params_from};
    crate::engine::total::install_quiet_hook_for_tests();
    let (_dir, ds) = adversarial_dataset();
    let args = [
        "c_int",
        "c_float",
        "c_str",
        "c_ts",
        "c_date",
        "c_bool",
        "c_int * 9223372036854775807",
        "CAST(c_int AS DECIMAL(38,0)) * CAST(99999999999999999999999999999999999999 AS DECIMAL(38,0))",
        "CAST(c_int AS DECIMAL(38,0)) * CAST(-85070591730234615865843651857942052864 AS DECIMAL(38,0))",
        "CAST(c_float AS DECIMAL(12,2))",
        "-c_int",
    ];
    let forms = [
        "count({a})",
        "count(DISTINCT {a})",
        "sum({a})",
        "sum(DISTINCT {a})",
        "avg({a})",
        "min({a})",
        "max({a})",
        "median({a})",
        "approx_median({a})",
        "approx_percentile_cont({a}, 0.5)",
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY {a})",
        "var({a})",
        "var_pop({a})",
        "stddev({a})",
        "stddev_pop({a})",
        "first_value({a} ORDER BY {a})",
        "last_value({a} ORDER BY c_str)",
        "bool_and({a})",
        "bool_or({a})",
        "approx_distinct({a})",
    ];
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let engine = Engine::open(&ds, None).await.unwrap();
        let p = params_from(&ds.config, Some("1".parse().unwrap()), Some("1e-7".parse().unwrap()), None, None, None, None, None, Some(false));
        let sql = |agg: &str| format!("SELECT COUNT(*) FROM (SELECT u, {agg} AS a FROM adv GROUP BY u) t WHERE a IS NULL");
        let mut planned: Vec<String> = Vec::new();
        for f in forms {
            let mut any = false;
            for a in args {
                let agg = f.replace("{a}", a);
                if engine.prepare(&sql(&agg), &p).await.is_ok() {
                    planned.push(agg);
                    any = true;
                }
            }
            assert!(any, "`{f}`: no argument plans through the analyser");
        }
        println!("per-person aggregates: {} cases", planned.len());
        let mut failed = Vec::new();
        for agg in &planned {
            let prepared = engine.prepare(&sql(agg), &p).await.unwrap();
            let Prepared::Dp { query, cal, .. } = &prepared else { panic!("{agg}: not a DP query") };
            if let Err(e) = engine.compute(query, cal, [7u8; 32]).await {
                failed.push(format!("{agg}: {e}"));
            }
        }
        assert!(failed.is_empty(), "per-person aggregates that fail the query:\n{}", failed.join("\n"));
    });
}
