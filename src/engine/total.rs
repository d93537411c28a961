//! Totality by construction: the evaluation wrappers under which no expression
//! over private rows can fail.
//!
//! Whether a query errors must never depend on one person's rows (DESIGN §1): a
//! query that fails only when some row makes `substr` or `abs` or a timestamp
//! addition fail reveals one bit about that row, whatever the error text says.
//! dpq does not try to prove each DataFusion kernel total. Instead the analyser
//! ([`super::analyze::expr::total`]) rewrites every operation that *can* fail
//! into a call of one of the wrappers below, and the wrappers make failure
//! impossible:
//!
//! * [`TotalFn`] wraps a scalar function, [`TotalOp`] a binary operator (the
//!   arithmetic, bitwise and string operators, with DataFusion's own kernels).
//! * Both first evaluate the whole batch as DataFusion would. If that returns an
//!   error **or panics**, they evaluate the batch again in halves, recursively,
//!   down to single rows; a row whose evaluation still fails becomes NULL. The
//!   result is the value DataFusion would have computed for every row on which
//!   it succeeds, and NULL elsewhere — for every input, never an error.
//! * A panic is caught (`catch_unwind`) and its message is not printed while a
//!   wrapper is running (see [`install_panic_hook`]): a message could hold a
//!   private value.
//!
//! The cost on the normal path is one extra function call per batch; the
//! halving path costs O(k·log n) evaluations for k failing rows in a batch of n.
//! What can still differ between neighbouring datasets is *time* (how many rows
//! took the slow path); timing is outside dpq's threat model (docs/privacy.md,
//! "Side channels").
//!
//! The wrappers are ordinary named UDFs (`total_<function>`, `total_op_<op>`), so
//! that plans containing them can be serialised to Ballista executors that
//! register [`registry`].

use std::cell::Cell;
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::expr::AggregateFunctionParams;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, Operator, ReturnFieldArgs, ReversedUDAF, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

thread_local! {
    /// > 0 while a wrapper evaluates: panics are caught and must stay silent.
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Install (once) a panic hook that prints nothing while a totality wrapper is
/// evaluating, and otherwise only where the panic happened — never its message,
/// which could contain a value from a private row. The binary installs it first
/// thing; embedders should too (the library's `Session` does).
pub fn install_panic_hook() {
    install(true)
}

/// For tests: silence panics inside the wrappers, keep every other panic's
/// message (assertion failures must stay readable).
#[cfg(test)]
pub fn install_quiet_hook_for_tests() {
    install(false)
}

fn install(withhold: bool) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) > 0 {
                return;
            }
            if !withhold {
                return default(info);
            }
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            eprintln!(
                "dpq: internal error: a panic{at}; its message is withheld because it may contain private values\n  this is a bug in dpq or a library it uses: please report it with the command you ran"
            );
        }));
    });
}

/// Run `f`, catching a panic without printing it.
pub fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    QUIET.with(|q| q.set(q.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    r
}

/// Evaluate `f` over `args` (`n` rows) so that it cannot fail: an error or a
/// panic on a batch is retried on its halves, down to single rows, and a row
/// that still fails yields NULL.
fn total_eval(n: usize, args: &[ColumnarValue], ret: &DataType, f: &dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue>) -> Result<ColumnarValue> {
    if let Some(v) = attempt(n, args, f) {
        return Ok(v);
    }
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        // a failure on constants: the same for every row
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from(ret)?));
    }
    Ok(ColumnarValue::Array(halves(0, n, args, ret, f)?))
}

/// One guarded evaluation: `None` when it errs, panics, or returns the wrong length.
fn attempt(n: usize, args: &[ColumnarValue], f: &dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue>) -> Option<ColumnarValue> {
    match quietly(|| f(args, n)) {
        Ok(Ok(ColumnarValue::Array(a))) if a.len() == n => Some(ColumnarValue::Array(a)),
        Ok(Ok(ColumnarValue::Scalar(s))) => Some(ColumnarValue::Scalar(s)),
        _ => None,
    }
}

fn slice(args: &[ColumnarValue], offset: usize, len: usize) -> Vec<ColumnarValue> {
    args.iter()
        .map(|a| match a {
            ColumnarValue::Array(arr) => ColumnarValue::Array(arr.slice(offset, len)),
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.clone()),
        })
        .collect()
}

/// Rows [offset, offset + len) evaluated with failing rows as NULL.
fn halves(offset: usize, len: usize, args: &[ColumnarValue], ret: &DataType, f: &dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue>) -> Result<ArrayRef> {
    if len == 0 {
        return Ok(new_null_array(ret, 0));
    }
    let part = slice(args, offset, len);
    if let Some(v) = attempt(len, &part, f) {
        let a = v.into_array(len)?;
        if a.data_type() == ret {
            return Ok(a);
        }
    }
    if len == 1 {
        return Ok(new_null_array(ret, 1));
    }
    let mid = len / 2;
    let a = halves(offset, mid, args, ret, f)?;
    let b = halves(offset + mid, len - mid, args, ret, f)?;
    Ok(concat(&[a.as_ref(), b.as_ref()])?)
}

/// The largest string or binary value a wrapped function or `||` may produce.
/// Whether a row's output could be larger is decided from its inputs' sizes
/// *before* evaluating (no allocation happens), and such a row yields NULL.
///
/// Without it, one person's value could decide whether memory runs out:
/// `replace(s, 'x', 'xxxxxxxxxx')` nested six deep multiplies a 100-byte value
/// a million-fold, or `x || x` nested thirty deep doubles it thirty times
/// (found by the attack on the first version). With it, every value a wrapper
/// produces is at most 64 KiB, whatever the query and the data.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Bytes a non-string argument can print as (numbers, times, booleans).
const PRINTED: usize = 128;

/// An upper bound on the output size of one row of `name` from its
/// arguments' byte lengths (`None`: the function's output is not larger than
/// its largest string input, or not a string).
fn output_bound(name: &str, lens: &[usize], scalars: &[Option<&ScalarValue>]) -> Option<usize> {
    let n = |i: usize| lens.get(i).copied().unwrap_or(0);
    let refs = |i: usize| match scalars.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(r)) | ScalarValue::LargeUtf8(Some(r)) | ScalarValue::Utf8View(Some(r))) => r.matches(['$', '\\']).count(),
        _ => n(i),
    };
    let sat = |a: usize, b: usize| a.saturating_mul(b);
    Some(match name {
        // case mapping can expand a character's bytes up to three times
        "lower" | "upper" | "initcap" => sat(n(0), 3),
        // every character may become a 4-byte one
        "translate" => sat(n(0), 4),
        "concat" => lens.iter().fold(0usize, |a, &b| a.saturating_add(b)),
        // the separator appears between every two arguments
        "concat_ws" => lens.iter().fold(0usize, |a, &b| a.saturating_add(b)).saturating_add(sat(n(0), lens.len().saturating_sub(2))),
        "replace" if n(1) == 0 => sat(n(0) + 1, n(2)).saturating_add(n(0)),
        "replace" => n(0).saturating_add(sat(n(0) / n(1) + 1, n(2))),
        // every match (with the 'g' flag, every position) replaced by the
        // replacement, whose $n references can copy the whole input
        "regexp_replace" => n(0).saturating_add(sat(n(0) + 1, n(2).saturating_add(sat(refs(2), n(0))))),
        _ => return None,
    })
}

/// Per-row byte lengths of an argument (strings and binaries), or `PRINTED`
/// for other types.
fn byte_lengths(v: &ColumnarValue, rows: usize) -> Vec<usize> {
    use datafusion::arrow::array::AsArray;
    let arr = match v {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => match s.to_array_of_size(1) {
            Ok(a) => a,
            Err(_) => return vec![PRINTED; rows],
        },
    };
    let one = |i: usize| if matches!(v, ColumnarValue::Scalar(_)) { 0 } else { i };
    let lens: Box<dyn Fn(usize) -> usize> = match arr.data_type() {
        DataType::Utf8 => Box::new(|i| arr.as_string::<i32>().value_length(one(i)) as usize),
        DataType::LargeUtf8 => Box::new(|i| arr.as_string::<i64>().value_length(one(i)) as usize),
        DataType::Utf8View => Box::new(|i| arr.as_string_view().value(one(i)).len()),
        DataType::Binary => Box::new(|i| arr.as_binary::<i32>().value_length(one(i)) as usize),
        DataType::LargeBinary => Box::new(|i| arr.as_binary::<i64>().value_length(one(i)) as usize),
        DataType::BinaryView => Box::new(|i| arr.as_binary_view().value(one(i)).len()),
        _ => return vec![PRINTED; rows],
    };
    (0..rows).map(|i| if arr.is_null(one(i)) { 0 } else { lens(i) }).collect()
}

/// The rows whose output could exceed [`MAX_VALUE_BYTES`], if any.
fn oversized(name: &str, args: &[ColumnarValue], rows: usize) -> Option<BooleanArray> {
    // cheap test first: functions that cannot grow need nothing
    output_bound(name, &vec![0; args.len()], &[])?;
    let scalars: Vec<Option<&ScalarValue>> = args.iter().map(|a| if let ColumnarValue::Scalar(s) = a { Some(s) } else { None }).collect();
    let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) { 1 } else { rows };
    let lens: Vec<Vec<usize>> = args.iter().map(|a| byte_lengths(a, rows)).collect();
    let mut any = false;
    let mask: BooleanArray = (0..rows)
        .map(|i| {
            let row: Vec<usize> = lens.iter().map(|l| l[i]).collect();
            let over = output_bound(name, &row, &scalars).is_some_and(|b| b > MAX_VALUE_BYTES);
            any |= over;
            Some(over)
        })
        .collect();
    any.then_some(mask)
}

/// Evaluate `f` with the rows of `mask` made NULL before (their string
/// arguments) and after (the output): no oversized value is ever built.
fn without_oversized(
    args: &[ColumnarValue],
    rows: usize,
    mask: &BooleanArray,
    ret: &DataType,
    f: impl FnOnce(&[ColumnarValue]) -> Result<ColumnarValue>,
) -> Result<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        // constants: the one row is oversized
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from(ret)?));
    }
    let nulled: Vec<ColumnarValue> = args
        .iter()
        .map(|a| match a {
            ColumnarValue::Array(arr)
                if matches!(
                    arr.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                ) =>
            {
                Ok(ColumnarValue::Array(datafusion::arrow::compute::nullif(arr, mask)?))
            }
            ColumnarValue::Scalar(s)
                if s.data_type().is_string() || matches!(s.data_type(), DataType::Binary | DataType::LargeBinary | DataType::BinaryView) =>
            {
                // a long constant: expand it and null the masked rows
                let arr = s.to_array_of_size(rows)?;
                Ok(ColumnarValue::Array(datafusion::arrow::compute::nullif(&arr, mask)?))
            }
            other => Ok(other.clone()),
        })
        .collect::<Result<_>>()?;
    let out = f(&nulled)?.into_array(rows)?;
    Ok(ColumnarValue::Array(datafusion::arrow::compute::nullif(&out, mask)?))
}

/// A scalar function evaluated under the totality wrapper.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalFn {
    inner: Arc<ScalarUDF>,
    name: String,
    signature: Signature,
}

impl TotalFn {
    pub fn new(inner: Arc<ScalarUDF>) -> TotalFn {
        TotalFn { name: format!("total_{}", inner.name()), signature: inner.signature().clone(), inner }
    }
}

/// `f` under the totality wrapper, as a UDF.
pub fn total_fn(f: Arc<ScalarUDF>) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TotalFn::new(f)))
}

/// Is `udf` one of the wrappers?
pub fn is_total(udf: &ScalarUDF) -> bool {
    udf.inner().is::<TotalFn>() || udf.inner().is::<TotalOp>() || udf.inner().is::<TotalCast>()
}

impl ScalarUDFImpl for TotalFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        #[allow(deprecated)]
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let f = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(Field::new(self.name(), f.data_type().clone(), true)))
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ScalarFunctionArgs { args: values, arg_fields, number_rows, return_field, config_options } = args;
        let ret = return_field.data_type().clone();
        let eval = |values: &[ColumnarValue]| {
            total_eval(number_rows, values, &ret, &|a, n| {
                self.inner.invoke_with_args(ScalarFunctionArgs {
                    args: a.to_vec(),
                    arg_fields: arg_fields.clone(),
                    number_rows: n,
                    return_field: return_field.clone(),
                    config_options: config_options.clone(),
                })
            })
        };
        match oversized(self.inner.name(), &values, number_rows) {
            None => eval(&values),
            Some(mask) => without_oversized(&values, number_rows, &mask, &ret, eval),
        }
    }
    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }
}

/// A binary operator evaluated with DataFusion's own kernel under the totality wrapper.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalOp {
    op: Operator,
    name: String,
    signature: Signature,
}

impl TotalOp {
    pub fn new(op: Operator) -> TotalOp {
        TotalOp { name: format!("total_op_{}", op_name(op)), signature: Signature::any(2, Volatility::Immutable), op }
    }
}

/// The operators dpq evaluates under [`TotalOp`].
pub const WRAPPED_OPERATORS: &[Operator] = &[
    Operator::Plus,
    Operator::Minus,
    Operator::Multiply,
    Operator::Divide,
    Operator::Modulo,
    Operator::BitwiseAnd,
    Operator::BitwiseOr,
    Operator::BitwiseXor,
    Operator::StringConcat,
];

fn op_name(op: Operator) -> &'static str {
    match op {
        Operator::Plus => "plus",
        Operator::Minus => "minus",
        Operator::Multiply => "multiply",
        Operator::Divide => "divide",
        Operator::Modulo => "modulo",
        Operator::BitwiseAnd => "bitand",
        Operator::BitwiseOr => "bitor",
        Operator::BitwiseXor => "bitxor",
        Operator::StringConcat => "concat",
        _ => "other",
    }
}

/// `op` under the totality wrapper, as a UDF.
pub fn total_op(op: Operator) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TotalOp::new(op)))
}

impl ScalarUDFImpl for TotalOp {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn schema_name(&self, args: &[datafusion::logical_expr::Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("total({} {} {})", l.schema_name(), self.op, r.schema_name())),
            _ => internal_err!("{} takes two arguments", self.name),
        }
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [l, r] => BinaryTypeCoercer::new(l, &self.op, r).get_result_type(),
            _ => internal_err!("{} takes two arguments", self.name),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ret = args.return_field.data_type().clone();
        let op = self.op;
        let eval = |values: &[ColumnarValue]| total_eval(args.number_rows, values, &ret, &|a, n| binary(op, a, n));
        let mask = if op == Operator::StringConcat { oversized("concat", &args.args, args.number_rows) } else { None };
        match mask {
            None => eval(&args.args),
            Some(mask) => without_oversized(&args.args, args.number_rows, &mask, &ret, eval),
        }
    }
}

/// `a[0] op a[1]` over `n` rows, exactly as DataFusion's `BinaryExpr` computes it.
fn binary(op: Operator, a: &[ColumnarValue], n: usize) -> Result<ColumnarValue> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut side = |v: &ColumnarValue, name: &str| -> Arc<dyn PhysicalExpr> {
        match v {
            ColumnarValue::Array(arr) => {
                fields.push(Field::new(name, arr.data_type().clone(), true));
                columns.push(arr.clone());
                Arc::new(Column::new(name, columns.len() - 1))
            }
            ColumnarValue::Scalar(s) => Arc::new(Literal::new(s.clone())),
        }
    };
    let (l, r) = match a {
        [l, r] => (side(l, "l"), side(r, "r")),
        _ => return internal_err!("a binary operator takes two arguments"),
    };
    let batch = RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &RecordBatchOptions::new().with_row_count(Some(n)))?;
    BinaryExpr::new(l, op, r).evaluate(&batch)
}

/// `CAST`/`TRY_CAST` under the totality wrapper: `total_cast(x, NULL::T)`
/// casts x to T (the type of the second argument) as `TRY_CAST` does — NULL
/// when a value does not fit — and, unlike `TRY_CAST`, never fails: arrow's
/// "safe" casts still fail on some values (a timestamp at the end of the range
/// cast to text), found by the totality harness.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalCast {
    signature: Signature,
}

impl Default for TotalCast {
    fn default() -> Self {
        TotalCast { signature: Signature::any(2, Volatility::Immutable) }
    }
}

/// The cast wrapper as a UDF.
pub fn total_cast() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TotalCast::default()))
}

impl ScalarUDFImpl for TotalCast {
    fn name(&self) -> &str {
        "total_cast"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn schema_name(&self, args: &[datafusion::logical_expr::Expr]) -> Result<String> {
        match args {
            [x, Expr::Literal(t, _)] => Ok(format!("TRY_CAST({} AS {})", x.schema_name(), t.data_type())),
            _ => internal_err!("total_cast(x, NULL::type)"),
        }
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [_, t] => Ok(t.clone()),
            _ => internal_err!("total_cast takes two arguments"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ret = args.return_field.data_type().clone();
        let opts = datafusion::arrow::compute::CastOptions { safe: true, format_options: Default::default() };
        total_eval(args.number_rows, &args.args[..1], &ret, &|a, _| match &a[0] {
            ColumnarValue::Array(arr) => Ok(ColumnarValue::Array(datafusion::arrow::compute::cast_with_options(arr, &ret, &opts)?)),
            ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(s.cast_to(&ret)?)),
        })
    }
}

/// An aggregate function evaluated under the totality wrapper, for the
/// per-person sub-queries (the DP aggregates themselves are dpq's own).
///
/// Every step of the wrapped accumulator (update, merge, state, evaluate) runs
/// guarded; an error or a panic *poisons* that group's accumulator, which then
/// yields NULL. Groups are evaluated one accumulator each
/// ([`groups_accumulator_supported`](AggregateUDFImpl::groups_accumulator_supported)
/// is false), so a failure stays within its group — one person's rows in a
/// per-person sub-query — and the poison travels with partial states (an
/// extra boolean state column) through repartitioning and merges. Found by the
/// attack on the first version: a per-person `AVG` of decimals overflowing.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalAgg {
    inner: Arc<AggregateUDF>,
    name: String,
}

impl TotalAgg {
    pub fn new(inner: Arc<AggregateUDF>) -> TotalAgg {
        TotalAgg { name: format!("total_agg_{}", inner.name()), inner }
    }
}

/// `f` under the totality wrapper, as a UDAF.
pub fn total_agg(f: Arc<AggregateUDF>) -> Arc<AggregateUDF> {
    if f.inner().is::<TotalAgg>() {
        return f;
    }
    Arc::new(AggregateUDF::new_from_impl(TotalAgg::new(f)))
}

/// Is `udaf` the aggregate wrapper?
pub fn is_total_agg(udaf: &AggregateUDF) -> bool {
    udaf.inner().is::<TotalAgg>()
}

impl AggregateUDFImpl for TotalAgg {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().schema_name(params)
    }
    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().display_name(params)
    }
    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().human_display(params)
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let f = self.inner.return_field(arg_fields)?;
        Ok(Arc::new(f.as_ref().clone().with_nullable(true)))
    }
    fn is_nullable(&self) -> bool {
        true
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let ret = acc_args.return_field.data_type().clone();
        // the inner state's types, for the NULL state of a poisoned group (from
        // the types alone: a poisoned accumulator is never asked)
        let ordering: Vec<FieldRef> = acc_args.order_bys.iter().map(|o| o.expr.return_field(acc_args.schema)).collect::<Result<_>>()?;
        // (planning asked for the same state fields, so this cannot fail here)
        let state_types = self
            .inner
            .state_fields(StateFieldsArgs {
                name: acc_args.name,
                input_fields: acc_args.expr_fields,
                return_field: acc_args.return_field.clone(),
                ordering_fields: &ordering,
                is_distinct: acc_args.is_distinct,
            })?
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        // accumulators are created when a group first appears, so a failure to
        // create one (a type the function does not support) would fail the query
        // only when some row exists: such a group is poisoned from the start
        match quietly(|| self.inner.accumulator(acc_args)) {
            Ok(Ok(inner)) => Ok(Box::new(TotalAccumulator { inner, poisoned: false, ret, state_types })),
            _ => Ok(Box::new(TotalAccumulator { inner: Box::new(Poisoned), poisoned: true, ret, state_types })),
        }
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        // nullable: a poisoned group's inner state is NULL
        let mut fields: Vec<FieldRef> = self.inner.state_fields(args)?.into_iter().map(|f| Arc::new(f.as_ref().clone().with_nullable(true))).collect();
        fields.push(Arc::new(Field::new("dpq_poisoned", DataType::Boolean, true)));
        Ok(fields)
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        false
    }
    fn with_beneficial_ordering(self: Arc<Self>, beneficial_ordering: bool) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let inner: Arc<dyn AggregateUDFImpl> = Arc::clone(self.inner.inner());
        Ok(inner
            .with_beneficial_ordering(beneficial_ordering)?
            .map(|udf| Arc::new(TotalAgg::new(Arc::new(AggregateUDF::new_from_shared_impl(udf)))) as Arc<dyn AggregateUDFImpl>))
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.reverse_udf() {
            ReversedUDAF::Reversed(f) => ReversedUDAF::Reversed(total_agg(f)),
            other => other,
        }
    }
    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }
    fn supports_null_handling_clause(&self) -> bool {
        self.inner.inner().supports_null_handling_clause()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.inner.inner().supports_within_group_clause()
    }
    // not forwarded on purpose: `simplify` and `simplify_expr_op_literal` would
    // replace the wrapper with unwrapped expressions, `value_from_stats` answers
    // from file statistics, and a sliding accumulator is for windows.
}

/// Stands in for an accumulator that could not be created (never called: its
/// group is poisoned).
#[derive(Debug)]
struct Poisoned;

impl Accumulator for Poisoned {
    fn update_batch(&mut self, _: &[ArrayRef]) -> Result<()> {
        internal_err!("a poisoned accumulator")
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        internal_err!("a poisoned accumulator")
    }
    fn size(&self) -> usize {
        0
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        internal_err!("a poisoned accumulator")
    }
    fn merge_batch(&mut self, _: &[ArrayRef]) -> Result<()> {
        internal_err!("a poisoned accumulator")
    }
}

/// One group's accumulator under the wrapper.
#[derive(Debug)]
struct TotalAccumulator {
    inner: Box<dyn Accumulator>,
    poisoned: bool,
    ret: DataType,
    /// The inner state's types (for the NULL state of a poisoned group).
    state_types: Vec<DataType>,
}

impl TotalAccumulator {
    fn guard<T>(&mut self, f: impl FnOnce(&mut dyn Accumulator) -> Result<T>) -> Option<T> {
        if self.poisoned {
            return None;
        }
        let inner = &mut self.inner;
        match quietly(|| f(inner.as_mut())) {
            Ok(Ok(v)) => Some(v),
            _ => {
                self.poisoned = true;
                None
            }
        }
    }
}

impl Accumulator for TotalAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.guard(|a| a.update_batch(values));
        Ok(())
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let ret = self.ret.clone();
        match self.guard(|a| a.evaluate()) {
            Some(v) if v.data_type() == ret => Ok(v),
            Some(v) if v.is_null() => Ok(ScalarValue::try_from(&ret)?),
            Some(v) => Ok(v.cast_to(&ret).or_else(|_| ScalarValue::try_from(&ret))?),
            None => ScalarValue::try_from(&ret),
        }
    }
    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<Self>()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        if let Some(mut s) = self.guard(|a| a.state()) {
            if s.len() == self.state_types.len() {
                s.push(ScalarValue::Boolean(Some(false)));
                return Ok(s);
            }
            self.poisoned = true;
        }
        // a poisoned group: NULL inner state, poisoned flag set
        let mut out = self.state_types.iter().map(ScalarValue::try_from).collect::<Result<Vec<_>>>()?;
        out.push(ScalarValue::Boolean(Some(true)));
        Ok(out)
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some((flag, inner)) = states.split_last() else { return internal_err!("a wrapped aggregate state without its flag") };
        let flag = flag.as_any().downcast_ref::<BooleanArray>().map(|b| b.true_count() > 0).unwrap_or(true);
        if flag {
            self.poisoned = true;
            return Ok(());
        }
        self.guard(|a| a.merge_batch(inner));
        Ok(())
    }
}

/// Every wrapper dpq's rewrite can produce, for registries that resolve UDFs by
/// name (Ballista executors): one [`TotalFn`] per function of `functions`, one
/// [`TotalOp`] per wrapped operator.
pub fn registry(functions: &[Arc<ScalarUDF>]) -> Vec<Arc<ScalarUDF>> {
    let mut out: Vec<Arc<ScalarUDF>> = functions.iter().map(|f| total_fn(f.clone())).collect();
    out.extend(WRAPPED_OPERATORS.iter().map(|&op| total_op(op)));
    out.push(total_cast());
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use datafusion::arrow::array::{Int8Array, Int64Array, StringArray};

    fn invoke(udf: &ScalarUDF, args: Vec<ColumnarValue>, n: usize) -> Result<ColumnarValue> {
        let fields: Vec<FieldRef> = args.iter().map(|a| Arc::new(Field::new("a", a.data_type(), true))).collect();
        let scalars: Vec<Option<ScalarValue>> = args.iter().map(|a| if let ColumnarValue::Scalar(s) = a { Some(s.clone()) } else { None }).collect();
        let refs: Vec<Option<&ScalarValue>> = scalars.iter().map(|s| s.as_ref()).collect();
        let ret = udf.return_field_from_args(ReturnFieldArgs { arg_fields: &fields, scalar_arguments: &refs })?;
        udf.invoke_with_args(ScalarFunctionArgs { args, arg_fields: fields, number_rows: n, return_field: ret, config_options: Arc::new(Default::default()) })
    }

    #[test]
    fn a_failing_row_becomes_null_and_the_others_keep_their_value() {
        let substr = datafusion::functions::unicode::substr();
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("hello"); 5]));
        let count: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), Some(-1), Some(3), None, Some(-5)]));
        let args = vec![ColumnarValue::Array(s), ColumnarValue::Scalar(ScalarValue::Int64(Some(1))), ColumnarValue::Array(count)];
        // the bare function fails on the whole batch because of rows 1 and 4
        assert!(invoke(&substr, args.clone(), 5).is_err());
        let out = invoke(&total_fn(substr), args, 5).unwrap().into_array(5).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(got, vec![Some("he"), None, Some("hel"), None, None]);
    }

    #[test]
    fn abs_of_the_minimum_is_null_not_an_error() {
        let abs = datafusion::functions::math::abs();
        let x: ArrayRef = Arc::new(Int8Array::from(vec![Some(-128), Some(-3), Some(0)]));
        assert!(invoke(&abs, vec![ColumnarValue::Array(x.clone())], 3).is_err());
        let out = invoke(&total_fn(abs), vec![ColumnarValue::Array(x)], 3).unwrap().into_array(3).unwrap();
        let out = out.as_any().downcast_ref::<Int8Array>().unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![None, Some(3), Some(0)]);
    }

    #[test]
    fn operators_compute_what_datafusion_computes_and_never_fail() {
        let div = total_op(Operator::Divide);
        let l: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(i64::MIN), Some(9), None]));
        let r: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), Some(-1), Some(0), Some(1)]));
        let out = invoke(&div, vec![ColumnarValue::Array(l), ColumnarValue::Array(r)], 4).unwrap().into_array(4).unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(3), None, None, None]);
        // scalar ⊕ array
        let plus = total_op(Operator::Plus);
        let r: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2)]));
        let out = invoke(&plus, vec![ColumnarValue::Scalar(ScalarValue::Int64(Some(40))), ColumnarValue::Array(r)], 2).unwrap().into_array(2).unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(41), Some(42)]);
    }

    #[test]
    fn a_failing_aggregate_group_is_null_and_the_others_keep_their_value() {
        use datafusion::arrow::array::Decimal128Array;
        use datafusion::datasource::MemTable;
        use datafusion::prelude::{SessionConfig, SessionContext};
        install_quiet_hook_for_tests();
        let schema = Arc::new(Schema::new(vec![Field::new("g", DataType::Int64, true), Field::new("x", DataType::Decimal128(38, 0), true)]));
        // group 1 overflows AVG's decimal sum; group 2 does not; several batches
        // and partitions, so that partial states are merged
        let batch = |g: Vec<i64>, x: Vec<i128>| {
            let x = Decimal128Array::from(x).with_precision_and_scale(38, 0).unwrap();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(g)), Arc::new(x)]).unwrap()
        };
        let big = 10i128.pow(37) * 9;
        let parts = vec![vec![batch(vec![1, 1, 2], vec![big, big, 1])], vec![batch(vec![1, 2, 1], vec![big, 3, big])], vec![batch(vec![2, 1], vec![2, big])]];
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts).unwrap())).unwrap();
        ctx.register_udaf(total_agg(datafusion::functions_aggregate::average::avg_udaf()).as_ref().clone());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let plain = ctx.sql("SELECT g, avg(x) FROM t GROUP BY g").await.unwrap().collect().await;
            assert!(plain.is_err(), "the bare aggregate fails on group 1");
            let out = ctx.sql("SELECT g, CAST(total_agg_avg(x) AS DOUBLE) AS a FROM t GROUP BY g ORDER BY g").await.unwrap().collect().await.unwrap();
            let b = datafusion::arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
            let a = b.column(1).as_any().downcast_ref::<datafusion::arrow::array::Float64Array>().unwrap();
            assert!(a.is_null(0), "the failing group is NULL");
            assert_eq!(a.value(1), 2.0, "the other group keeps its value");
        });
    }

    #[test]
    fn oversized_outputs_are_null_before_they_are_built() {
        let replace = total_fn(datafusion::functions::string::replace());
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("x".repeat(100)), Some("x".repeat(10_000)), None]));
        let lit = |v: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())));
        let out = invoke(&replace, vec![ColumnarValue::Array(s), lit("x"), lit("xxxxxxxxxx")], 3).unwrap().into_array(3).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(out.value(0).len(), 1000, "a small value is computed");
        assert!(out.is_null(1), "100 000 bytes would exceed the cap: NULL");
        assert!(out.is_null(2));
        // the operator too: doubling a value past the cap
        let concat = total_op(Operator::StringConcat);
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("y".repeat(MAX_VALUE_BYTES / 2 + 1)), Some("y".into())]));
        let out = invoke(&concat, vec![ColumnarValue::Array(s.clone()), ColumnarValue::Array(s)], 2).unwrap().into_array(2).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(out.is_null(0));
        assert_eq!(out.value(1), "yy");
        for (name, lens, bound) in [("replace", vec![10, 0, 3], 43), ("concat", vec![5, 6, 7], 18), ("concat_ws", vec![1, 5, 6, 7], 21), ("lower", vec![4], 12)]
        {
            assert_eq!(output_bound(name, &lens, &[]), Some(bound), "{name}");
        }
        assert_eq!(output_bound("substr", &[10, 1, 1], &[]), None, "substr cannot grow");
    }

    #[test]
    fn a_panicking_function_is_caught_and_silent() {
        install_quiet_hook_for_tests();
        let f = |_: &[ColumnarValue], n: usize| -> Result<ColumnarValue> {
            if n > 1 {
                panic!("secret value 4242 in a panic message");
            }
            Ok(ColumnarValue::Array(Arc::new(Int64Array::from(vec![Some(1)]))))
        };
        let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3)]));
        let out = total_eval(3, &[ColumnarValue::Array(x)], &DataType::Int64, &f).unwrap().into_array(3).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out.null_count(), 0);
    }
}
