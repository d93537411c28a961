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

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{ColumnarValue, Expr, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
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
    /// The wrapped function.
    pub fn inner(&self) -> &ScalarUDF {
        &self.inner
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
        total_eval(number_rows, &values, &ret, &|a, n| {
            self.inner.invoke_with_args(ScalarFunctionArgs {
                args: a.to_vec(),
                arg_fields: arg_fields.clone(),
                number_rows: n,
                return_field: return_field.clone(),
                config_options: config_options.clone(),
            })
        })
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
    pub fn op(&self) -> Operator {
        self.op
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
        total_eval(args.number_rows, &args.args, &ret, &|a, n| binary(op, a, n))
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
