//! The storage format of a dataset, shared by ingest (which writes it) and the
//! engine (which reads it): each table's manifest (its parts, schema and
//! dataset id) and the column types; the file formats dpq reads and writes.

pub mod manifest;
pub mod schema;

use chrono::NaiveDate;

/// A file format dpq ingests and `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    #[default]
    Csv,
    Jsonl,
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The format of a file, from its extension.
    pub fn from_extension(ext: &str) -> Option<FileFormat> {
        match ext.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::Jsonl),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

impl std::str::FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<FileFormat, String> {
        FileFormat::from_extension(s).ok_or_else(|| format!("`{s}` is not a file format dpq reads (csv, jsonl, parquet)"))
    }
}

/// Days since 1970-01-01 (Arrow's Date32).
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}
