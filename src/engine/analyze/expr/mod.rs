//! Row-level expressions over private rows, one rule per file:
//!
//! * [`allowed`] — which expressions may run over private rows at all: the
//!   contract table of functions and the accepted operators (fail closed).
//! * [`total`] — how an allowed expression is made total: every operation that
//!   can fail is evaluated under a wrapper of [`crate::engine::total`], so that
//!   it yields a value or NULL for every row, never an error.
//! * [`bounds`] — value ranges known without reading data (for SUM/AVG/…).
//! * [`domain`] — finite key domains known without reading data (GROUP BY keys).

pub mod allowed;
pub mod bounds;
pub mod domain;
#[cfg(test)]
mod harness;
pub mod total;

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

pub use allowed::check_row_expr;
pub use bounds::{finite, infer_bounds, integer_valued};
pub use domain::infer_domain;
pub use total::{clamp_expr, make_total, make_total_aggregate};

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
    /// Why its declared domain is unavailable (a domain table without data).
    pub missing_domain: Option<String>,
}

/// A public, finite set of key values and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub values: Vec<ScalarValue>,
    pub source: String,
}

/// The value of a numeric literal (through casts and negation).
pub fn lit_f64(e: &Expr) -> Option<f64> {
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
        // the value after the cast (CAST(2.99 AS BIGINT) is 2, not 2.99)
        Expr::Cast(datafusion::logical_expr::expr::Cast { expr, field }) | Expr::TryCast(datafusion::logical_expr::expr::TryCast { expr, field }) => {
            match &**expr {
                Expr::Literal(v, m) => lit_f64(&Expr::Literal(v.cast_to(field.data_type()).ok()?, m.clone())),
                _ => None,
            }
        }
        Expr::Negative(x) => lit_f64(x).map(|v| -v),
        _ => None,
    }
}

/// The value of a string literal, lower-cased.
pub fn lit_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => Some(s.to_ascii_lowercase()),
        Expr::Cast(c) => lit_str(&c.expr),
        Expr::TryCast(c) => lit_str(&c.expr),
        _ => None,
    }
}

/// Is `e` a literal (possibly behind casts or a negation)?
pub fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Literal(..) => true,
        Expr::Cast(c) => is_literal(&c.expr),
        Expr::TryCast(c) => is_literal(&c.expr),
        Expr::Negative(x) => is_literal(x),
        Expr::Alias(a) => is_literal(&a.expr),
        _ => false,
    }
}
