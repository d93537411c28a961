//! The JSON Lines ingest reader never panics.
#![no_main]
use dpq::storage::manifest::ColumnSpec;
use dpq::storage::schema::ColumnType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let schema: Vec<ColumnSpec> = [("user_id", ColumnType::Int64), ("ts", ColumnType::Timestamp), ("kind", ColumnType::Utf8), ("duration_s", ColumnType::Float64), ("ok", ColumnType::Boolean), ("d", ColumnType::Date)]
        .iter()
        .map(|(n, t)| ColumnSpec { name: n.to_string(), ty: *t })
        .collect();
    let _ = dpq::ingest::check_bytes(data, dpq::storage::FileFormat::Jsonl, &schema, Some("user_id"), &["duration_s".to_string()]);
});
