//! Bound parameters of prepared statements, as SQL literals.
//!
//! The analyser works on SQL text, so a prepared statement's `$n` become
//! literals before analysis: numbers are checked to be numbers, text is
//! quoted (`'` doubled; dpq's SQL dialect has no backslash escapes), dates
//! and times become `CAST('…' AS …)`. A parameter never becomes SQL syntax.
//! The type is the one the client declared, else the one DataFusion infers
//! from the statement over the declared (empty) tables, else text.

use datafusion::arrow::datatypes::DataType;
use pgwire::api::Type;

/// The PostgreSQL type a parameter of inferred Arrow type is described as.
pub fn pg_type(t: Option<&DataType>) -> Type {
    match t {
        Some(DataType::Int8 | DataType::Int16 | DataType::UInt8) => Type::INT2,
        Some(DataType::Int32 | DataType::UInt16) => Type::INT4,
        Some(DataType::Int64 | DataType::UInt32 | DataType::UInt64) => Type::INT8,
        Some(DataType::Float16 | DataType::Float32) => Type::FLOAT4,
        Some(DataType::Float64) => Type::FLOAT8,
        Some(DataType::Decimal128(..) | DataType::Decimal256(..)) => Type::NUMERIC,
        Some(DataType::Boolean) => Type::BOOL,
        Some(DataType::Date32 | DataType::Date64) => Type::DATE,
        Some(DataType::Timestamp(_, None)) => Type::TIMESTAMP,
        Some(DataType::Timestamp(_, Some(_))) => Type::TIMESTAMPTZ,
        _ => Type::TEXT,
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn numeric(s: &str) -> Result<String, String> {
    let t = s.trim();
    let ok =
        !t.is_empty() && t.parse::<f64>().is_ok_and(f64::is_finite) && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if ok {
        // a leading sign is kept in parentheses so `x-$1` with -1 stays `x-(-1)`
        Ok(if t.starts_with(['-', '+']) { format!("({t})") } else { t.to_string() })
    } else {
        Err(format!("{:?} is not a number", t.chars().take(40).collect::<String>()))
    }
}

fn boolean(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "1" | "yes" | "y" | "on" => Ok("TRUE".into()),
        "f" | "false" | "0" | "no" | "n" | "off" => Ok("FALSE".into()),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

/// The SQL literal of one parameter. `ty`: the declared or inferred type;
/// `binary`: the client sent it in binary format.
pub fn literal(value: Option<&[u8]>, ty: &Type, binary: bool) -> Result<String, String> {
    let Some(v) = value else { return Ok("NULL".into()) };
    if binary {
        let be = |n: usize| -> Result<[u8; 8], String> {
            if v.len() != n {
                return Err(format!("a binary {ty} parameter of {} bytes", v.len()));
            }
            let mut b = [0u8; 8];
            b[8 - n..].copy_from_slice(v);
            Ok(b)
        };
        return Ok(match *ty {
            Type::INT2 => numeric(&i16::from_be_bytes(v.try_into().map_err(|_| "a binary int2 parameter of the wrong size".to_string())?).to_string())?,
            Type::INT4 => numeric(&i32::from_be_bytes(v.try_into().map_err(|_| "a binary int4 parameter of the wrong size".to_string())?).to_string())?,
            Type::INT8 => numeric(&i64::from_be_bytes(be(8)?).to_string())?,
            Type::FLOAT4 => {
                let f = f32::from_be_bytes(v.try_into().map_err(|_| "a binary float4 parameter of the wrong size".to_string())?);
                numeric(&format!("{f:e}"))?
            }
            Type::FLOAT8 => numeric(&format!("{:e}", f64::from_be_bytes(be(8)?)))?,
            Type::BOOL => (if v.first() == Some(&1) { "TRUE" } else { "FALSE" }).into(),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                quote(std::str::from_utf8(v).map_err(|_| "a text parameter that is not UTF-8".to_string())?)
            }
            Type::DATE => {
                let days = i32::from_be_bytes(v.try_into().map_err(|_| "a binary date parameter of the wrong size".to_string())?);
                // PostgreSQL counts days from 2000-01-01
                let d = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|base| base.checked_add_signed(chrono::Duration::days(days as i64)))
                    .ok_or_else(|| format!("a binary date parameter out of range ({days} days from 2000-01-01)"))?;
                format!("CAST('{d}' AS DATE)")
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = i64::from_be_bytes(be(8)?);
                let base = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
                let t = base
                    .checked_add_signed(chrono::Duration::microseconds(micros))
                    .ok_or_else(|| format!("a binary timestamp parameter out of range ({micros} µs from 2000-01-01)"))?;
                format!("CAST('{}' AS TIMESTAMP)", t.format("%Y-%m-%d %H:%M:%S%.6f"))
            }
            _ => return Err(format!("binary parameters of type {ty} are not supported; send them in text format")),
        });
    }
    let s = std::str::from_utf8(v).map_err(|_| "a text parameter that is not UTF-8".to_string())?;
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC | Type::OID => numeric(s)?,
        Type::BOOL => boolean(s)?,
        Type::DATE => format!("CAST({} AS DATE)", quote(s)),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => format!("CAST({} AS TIMESTAMP)", quote(s)),
        _ => quote(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Out-of-range binary dates and timestamps are a parameter error, not a
    /// panic (found by the gateway attack: a DATE of 0x7fffffff days).
    #[test]
    fn binary_dates_out_of_range_are_errors() {
        assert!(literal(Some(&i32::MAX.to_be_bytes()), &Type::DATE, true).is_err());
        assert!(literal(Some(&i32::MIN.to_be_bytes()), &Type::DATE, true).is_err());
        assert!(literal(Some(&i64::MAX.to_be_bytes()), &Type::TIMESTAMP, true).is_err());
        assert!(literal(Some(&i64::MIN.to_be_bytes()), &Type::TIMESTAMPTZ, true).is_err());
        assert_eq!(literal(Some(&1i32.to_be_bytes()), &Type::DATE, true).unwrap(), "CAST('2000-01-02' AS DATE)");
    }

    #[test]
    fn parameters_never_become_syntax() {
        assert_eq!(literal(Some(b"it's"), &Type::TEXT, false).unwrap(), "'it''s'");
        assert_eq!(literal(Some(b"1); DROP TABLE x; --"), &Type::TEXT, false).unwrap(), "'1); DROP TABLE x; --'");
        assert!(literal(Some(b"1); DROP TABLE x; --"), &Type::INT8, false).is_err());
        assert!(literal(Some(b"1e5000"), &Type::FLOAT8, false).is_err(), "overflowing numbers are refused");
        assert!(literal(Some(b"0x10"), &Type::INT8, false).is_err());
        assert_eq!(literal(Some(b"-3"), &Type::INT8, false).unwrap(), "(-3)");
        assert_eq!(literal(Some(b" 42 "), &Type::INT4, false).unwrap(), "42");
        assert_eq!(literal(None, &Type::INT4, false).unwrap(), "NULL");
        assert_eq!(literal(Some(b"on"), &Type::BOOL, false).unwrap(), "TRUE");
        assert_eq!(literal(Some(b"2025-01-01"), &Type::DATE, false).unwrap(), "CAST('2025-01-01' AS DATE)");
        assert_eq!(literal(Some(b"a\\'b"), &Type::TEXT, false).unwrap(), "'a\\''b'");
    }

    #[test]
    fn binary_parameters_decode() {
        assert_eq!(literal(Some(&7i64.to_be_bytes()), &Type::INT8, true).unwrap(), "7");
        assert_eq!(literal(Some(&(-7i32).to_be_bytes()), &Type::INT4, true).unwrap(), "(-7)");
        assert_eq!(literal(Some(&2.5f64.to_be_bytes()), &Type::FLOAT8, true).unwrap(), "2.5e0");
        assert_eq!(literal(Some(&[1u8]), &Type::BOOL, true).unwrap(), "TRUE");
        assert_eq!(literal(Some(&0i32.to_be_bytes()), &Type::DATE, true).unwrap(), "CAST('2000-01-01' AS DATE)");
        assert!(literal(Some(&[1u8, 2]), &Type::INT8, true).is_err());
        assert!(literal(Some(&[1u8, 2]), &Type::JSONB, true).is_err());
    }
}
