//! The CSV ingest reader never panics and accounts for every row it sees.
#![no_main]
use dpq::storage::manifest::ColumnSpec;
use dpq::storage::schema::ColumnType;
use libfuzzer_sys::fuzz_target;

fn schema() -> Vec<ColumnSpec> {
    [("user_id", ColumnType::Int64), ("ts", ColumnType::Timestamp), ("chat_kind", ColumnType::Utf8), ("emoji", ColumnType::Utf8), ("length", ColumnType::Float64)]
        .iter()
        .map(|(n, t)| ColumnSpec { name: n.to_string(), ty: *t })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = b"user_id,ts,chat_kind,emoji,length\n".to_vec();
    input.extend_from_slice(data);
    let _ = dpq::ingest::check_bytes(&input, dpq::storage::FileFormat::Csv, &schema(), Some("user_id"), &["length".to_string()]);
});
