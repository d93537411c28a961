//! The result of a query, as printed and as stored in the ledger (DESIGN §3 JSON).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// f64 fields that may be NaN or ±∞ (JSON has neither): written as `null`,
/// read back as NaN.
pub mod lenient {
    use super::*;
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_none() }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// Carries noise (value, stddev, interval).
    pub noisy: bool,
}

/// A noisy cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Noisy {
    pub value: serde_json::Value,
    #[serde(with = "lenient")]
    pub stddev: f64,
    #[serde(with = "lenient")]
    pub ci_low: f64,
    #[serde(with = "lenient")]
    pub ci_high: f64,
    pub confidence: f64,
}

/// What an answer cost and where it is recorded (exact decimals as strings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Privacy {
    /// ε and δ spent by this call (0 when replayed).
    pub epsilon: String,
    pub delta: String,
    /// ε and δ this answer was charged when first computed.
    pub charged_epsilon: String,
    pub charged_delta: String,
    /// What remains of the dataset's budget, under the governing rule.
    pub remaining_epsilon: String,
    pub remaining_delta: String,
    /// The rule that governs admission ("basic composition" or "zCDP filter").
    pub accountant: String,
    pub entry: Option<i64>,
    pub replayed: bool,
    pub mechanism: String,
    /// The contribution bounds actually applied.
    pub bounding: String,
    pub unit: String,
    /// Hash of the charge entry, and of the stored result (in its result entry).
    pub ledger_hash: Option<String>,
    #[serde(default)]
    pub result_hash: Option<String>,
    #[serde(default)]
    pub analyst: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<ColumnMeta>,
    /// The contribution bounds actually applied (after any `--auto-bounds` release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounding_used: Option<String>,
    /// One object per row keyed by column name; a noisy cell is a [`Noisy`] object.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub privacy: Option<Privacy>,
    pub notes: Vec<String>,
}

impl QueryResult {
    /// The value of a cell (noisy cells: their `value`).
    pub fn value(&self, row: usize, col: &str) -> Option<&serde_json::Value> {
        let v = self.rows.get(row)?.get(col)?;
        Some(match v {
            serde_json::Value::Object(o) if o.contains_key("ci_low") => &o["value"],
            other => other,
        })
    }
    pub fn cell(&self, row: usize, col: &str) -> Option<Noisy> {
        serde_json::from_value(self.rows.get(row)?.get(col)?.clone()).ok()
    }
}
