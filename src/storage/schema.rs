//! Column types dpq stores, their inference from text samples, and value parsing.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// The column types a dpq table can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    Date,
    Utf8,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
            ColumnType::Utf8 => "utf8",
        }
    }
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Utf8 => DataType::Utf8,
        }
    }
    /// The type named in dpq.toml (`type = "…"`).
    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "int64" | "int" | "integer" | "bigint" => ColumnType::Int64,
            "float64" | "float" | "double" => ColumnType::Float64,
            "boolean" | "bool" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "utf8" | "text" | "string" | "varchar" => ColumnType::Utf8,
            _ => return None,
        })
    }

    /// The dpq type an Arrow type is stored as, if supported.
    pub fn from_arrow(t: &DataType) -> Option<ColumnType> {
        Some(match t {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ColumnType::Int64,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => ColumnType::Int64,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Timestamp(..) => ColumnType::Timestamp,
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Utf8,
            _ => return None,
        })
    }
}

pub fn arrow_schema(cols: &[super::manifest::ColumnSpec]) -> SchemaRef {
    Arc::new(Schema::new(cols.iter().map(|c| Field::new(&c.name, c.ty.arrow(), true)).collect::<Vec<_>>()))
}

/// A parsed cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(i64),
    Date(i32),
    Str(String),
}

pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    None
}

pub fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(super::days_since_epoch(d))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" => Some(true),
        "false" | "f" | "no" => Some(false),
        _ => None,
    }
}

/// The longest text value a table holds: a longer one is quarantined at
/// ingest. No one value can then decide how much memory a query needs (the
/// same cap as values built by functions over private rows, see docs/privacy.md).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Why a too-long text value is quarantined.
pub const TOO_LONG: &str = "a text value longer than 64 KiB (dpq keeps every value small, so that no one value can decide how much memory a query needs)";

/// Parse a text cell as `ty`. Empty text is NULL.
pub fn parse_text(s: &str, ty: ColumnType) -> Result<Value, &'static str> {
    if s.is_empty() {
        return Ok(Value::Null);
    }
    match ty {
        ColumnType::Utf8 if s.len() > MAX_TEXT_BYTES => Err(TOO_LONG),
        ColumnType::Utf8 => Ok(Value::Str(s.to_string())),
        ColumnType::Int64 => s.trim().parse::<i64>().map(Value::Int).map_err(|_| "not a whole number"),
        ColumnType::Float64 => {
            let t = s.trim();
            t.parse::<f64>().map(Value::Float).map_err(|_| "not a number")
        }
        ColumnType::Boolean => parse_bool(s.trim()).map(Value::Bool).ok_or("not a boolean"),
        ColumnType::Timestamp => parse_timestamp_micros(s.trim()).map(Value::Ts).ok_or("unparseable timestamp (use RFC 3339, e.g. 2025-03-01T21:15:00Z)"),
        ColumnType::Date => parse_date(s.trim()).map(Value::Date).ok_or("unparseable date (use YYYY-MM-DD)"),
    }
}

/// Convert a JSON value to `ty`.
pub fn parse_json(v: &serde_json::Value, ty: ColumnType) -> Result<Value, &'static str> {
    use serde_json::Value as J;
    match (v, ty) {
        (J::Null, _) => Ok(Value::Null),
        (J::String(s), _) => parse_text(s, ty),
        (J::Number(n), ColumnType::Int64) => n.as_i64().map(Value::Int).ok_or("not a whole number"),
        (J::Number(n), ColumnType::Float64) => n.as_f64().map(Value::Float).ok_or("not a number"),
        (J::Number(n), ColumnType::Utf8) => Ok(Value::Str(n.to_string())),
        (J::Bool(b), ColumnType::Boolean) => Ok(Value::Bool(*b)),
        (J::Bool(b), ColumnType::Utf8) => Ok(Value::Str(b.to_string())),
        (J::Array(_) | J::Object(_), _) => Err("nested values are not supported"),
        _ => Err("wrong type"),
    }
}

/// The narrowest type that accepts every non-empty sample.
pub fn infer_text(samples: &[&str]) -> ColumnType {
    let non_empty: Vec<&str> = samples.iter().copied().filter(|s| !s.is_empty()).collect();
    if non_empty.is_empty() {
        return ColumnType::Utf8;
    }
    for ty in [ColumnType::Int64, ColumnType::Float64, ColumnType::Boolean, ColumnType::Timestamp, ColumnType::Date] {
        if mostly(non_empty.iter().filter(|s| parse_text(s, ty).is_err()).count(), non_empty.len()) {
            return ty;
        }
    }
    ColumnType::Utf8
}

/// Whether `failures` of `n` samples are few enough to keep a type (the failing
/// rows are then quarantined): at most 1 % (at least one), and under half. One
/// bad value no longer turns a timestamp column into text.
fn mostly(failures: usize, n: usize) -> bool {
    failures <= (n / 100).max(1) && failures * 2 < n || failures == 0
}

pub fn infer_json(samples: &[&serde_json::Value]) -> ColumnType {
    use serde_json::Value as J;
    let non_null: Vec<&&J> = samples.iter().filter(|v| !v.is_null()).collect();
    if non_null.is_empty() {
        return ColumnType::Utf8;
    }
    let n = non_null.len();
    if mostly(non_null.iter().filter(|v| !v.is_i64()).count(), n) {
        return ColumnType::Int64;
    }
    if mostly(non_null.iter().filter(|v| !v.is_number()).count(), n) {
        return ColumnType::Float64;
    }
    if mostly(non_null.iter().filter(|v| !v.is_boolean()).count(), n) {
        return ColumnType::Boolean;
    }
    if mostly(non_null.iter().filter(|v| !v.is_string()).count(), n) {
        let strs: Vec<&str> = non_null.iter().filter_map(|v| v.as_str()).collect();
        return match infer_text(&strs) {
            ColumnType::Timestamp => ColumnType::Timestamp,
            ColumnType::Date => ColumnType::Date,
            _ => ColumnType::Utf8,
        };
    }
    ColumnType::Utf8
}

/// Column builders for one output batch.
pub struct BatchBuilder {
    schema: SchemaRef,
    cols: Vec<Builder>,
    pub rows: usize,
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Str(StringBuilder),
}

impl BatchBuilder {
    pub fn new(schema: SchemaRef, types: &[ColumnType], capacity: usize) -> BatchBuilder {
        let cols = types
            .iter()
            .map(|t| match t {
                ColumnType::Int64 => Builder::Int(Int64Builder::with_capacity(capacity)),
                ColumnType::Float64 => Builder::Float(Float64Builder::with_capacity(capacity)),
                ColumnType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
                ColumnType::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")),
                ColumnType::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
                ColumnType::Utf8 => Builder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            })
            .collect();
        BatchBuilder { schema, cols, rows: 0 }
    }

    /// Append a fully validated row.
    pub fn push(&mut self, row: &[Value]) {
        for (v, b) in row.iter().zip(self.cols.iter_mut()) {
            match (v, b) {
                (Value::Null, Builder::Int(b)) => b.append_null(),
                (Value::Null, Builder::Float(b)) => b.append_null(),
                (Value::Null, Builder::Bool(b)) => b.append_null(),
                (Value::Null, Builder::Ts(b)) => b.append_null(),
                (Value::Null, Builder::Date(b)) => b.append_null(),
                (Value::Null, Builder::Str(b)) => b.append_null(),
                (Value::Int(x), Builder::Int(b)) => b.append_value(*x),
                (Value::Float(x), Builder::Float(b)) => b.append_value(*x),
                (Value::Bool(x), Builder::Bool(b)) => b.append_value(*x),
                (Value::Ts(x), Builder::Ts(b)) => b.append_value(*x),
                (Value::Date(x), Builder::Date(b)) => b.append_value(*x),
                (Value::Str(x), Builder::Str(b)) => b.append_value(x),
                _ => unreachable!("validated value matches its column"),
            }
        }
        self.rows += 1;
    }

    pub fn finish(&mut self) -> datafusion::arrow::record_batch::RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Ts(b) => Arc::new(b.finish()),
                    Builder::Date(b) => Arc::new(b.finish()),
                    Builder::Str(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        datafusion::arrow::record_batch::RecordBatch::try_new(self.schema.clone(), arrays).expect("builders match schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_types() {
        assert_eq!(infer_text(&["1", "2", ""]), ColumnType::Int64);
        assert_eq!(infer_text(&["1", "2.5"]), ColumnType::Float64);
        assert_eq!(infer_text(&["2025-01-01T10:00:00Z", "2025-01-02T11:00:00+02:00"]), ColumnType::Timestamp);
        assert_eq!(infer_text(&["2025-01-01"]), ColumnType::Date);
        assert_eq!(infer_text(&["😂", "x"]), ColumnType::Utf8);
        assert_eq!(infer_text(&["", ""]), ColumnType::Utf8);
    }

    #[test]
    fn parses_values() {
        assert_eq!(parse_text("42", ColumnType::Int64), Ok(Value::Int(42)));
        assert!(parse_text("4.2", ColumnType::Int64).is_err());
        assert_eq!(parse_text("", ColumnType::Int64), Ok(Value::Null));
        assert_eq!(parse_text("2025-01-01T00:00:00Z", ColumnType::Timestamp), Ok(Value::Ts(1_735_689_600_000_000)));
        assert!(parse_text("yesterday", ColumnType::Timestamp).is_err());
        assert!(matches!(parse_text("NaN", ColumnType::Float64), Ok(Value::Float(x)) if x.is_nan()));
    }
}
