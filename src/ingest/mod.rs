//! `dpq ingest TABLE FILE…`: CSV, JSON Lines or Parquet into `tables/TABLE`.
//!
//! * The table must be declared in dpq.toml.
//! * The schema is inferred on the first ingest, recorded in the table's manifest,
//!   and enforced afterwards.
//! * Rows that fail (wrong type, unparseable timestamp, missing privacy unit,
//!   NaN/inf in a bounded column) go to `quarantine/TABLE/…` with their line number
//!   and reason; good rows are kept.
//! * A file whose content was already ingested is refused unless `--force`.
//! * Parts are written under a temporary name and renamed; the manifest rename is
//!   the commit point, so a crash leaves no partial part visible.
//! * Files are streamed: memory does not grow with the input size.

pub use crate::storage::{manifest, schema};

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Float64Array};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::storage::FileFormat;
use manifest::{ColumnSpec, Manifest, ManifestError, Part, SourceInfo, TableLock, table_dir};
use schema::{BatchBuilder, ColumnType, Value};

const BATCH_ROWS: usize = 65_536;
const SAMPLE_ROWS: usize = 1000;
const MAX_LINE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "table `{table}` is not declared in {config}\n  fix: add it, e.g.\n\n    [tables.{table}]\n    privacy_unit = \"user_id\"    # the column naming the person\n\n  or `public = true` if it holds no personal data"
    )]
    Undeclared { table: String, config: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(
        "{path} was already ingested into `{table}` ({part}, {when}; content hash {hash})\n  hint: ingesting it again would count its rows twice; pass --force if you really mean to"
    )]
    Duplicate { path: String, table: String, part: String, when: String, hash: String },
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("{path}: does not match the schema recorded for `{table}`: {message}")]
    SchemaMismatch { path: String, table: String, message: String },
    #[error("{path}: cannot tell the format from the extension\n  hint: use .csv, .jsonl/.ndjson or .parquet, or pass --format")]
    UnknownFormat { path: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("Parquet error while writing `{table}`: {message}")]
    Parquet { table: String, message: String },
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub table: String,
    /// The dataset's id (from its ledger), recorded in the manifest.
    pub dataset: Option<String>,
    pub files: Vec<PathBuf>,
    pub force: bool,
    pub format: Option<FileFormat>,
    pub progress: std::sync::Arc<dyn crate::progress::Progress>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileReport {
    pub file: String,
    pub kept: u64,
    pub rejected: u64,
    pub reasons: BTreeMap<String, u64>,
    pub part: Option<String>,
    pub quarantine: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestSummary {
    pub table: String,
    pub files: Vec<FileReport>,
    pub kept: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub table_rows: u64,
}

impl IngestSummary {
    pub fn rows_per_second(&self) -> f64 {
        (self.kept + self.rejected) as f64 / self.seconds.max(1e-9)
    }
}

/// Ingest `opts.files` into `opts.table` of the dataset at `data`.
pub fn ingest(data: &Path, config: &Config, opts: &IngestOptions) -> Result<IngestSummary, IngestError> {
    let t0 = Instant::now();
    let tconf = config.table(&opts.table).ok_or_else(|| IngestError::Undeclared { table: opts.table.clone(), config: config.file.display().to_string() })?;
    let _lock =
        TableLock::acquire(data, &opts.table).map_err(|source| IngestError::Write { path: table_dir(data, &opts.table).display().to_string(), source })?;
    let mut manifest = Manifest::load(data, &opts.table)?.unwrap_or_else(|| Manifest { table: opts.table.clone(), next_part: 1, ..Default::default() });
    if opts.dataset.is_some() {
        manifest.dataset = opts.dataset.clone();
    }
    clean_stale(data, &manifest);

    // hash every file first: a duplicate refuses the whole command before any work
    let mut hashes = Vec::new();
    for f in &opts.files {
        let h = hash_file(f)?;
        if !opts.force
            && let Some(p) = manifest.parts.iter().find(|p| p.source.sha256 == h)
        {
            return Err(IngestError::Duplicate {
                path: f.display().to_string(),
                table: opts.table.clone(),
                part: p.file.clone(),
                when: p.ingested_at.clone(),
                hash: h[..12].to_string(),
            });
        }
        if hashes.contains(&h) && !opts.force {
            return Err(IngestError::BadFile { path: f.display().to_string(), message: "the same content is given twice on this command line".into() });
        }
        hashes.push(h);
    }

    let mut summary = IngestSummary { table: opts.table.clone(), ..Default::default() };
    for (f, hash) in opts.files.iter().zip(hashes) {
        let format = match opts.format {
            Some(fmt) => fmt,
            None => detect_format(f)?,
        };
        let ctx = FileCtx {
            data,
            table: &opts.table,
            path: f,
            unit: tconf.privacy_unit.clone(),
            bounded: tconf.columns.iter().filter(|(_, c)| c.bounds.is_some()).map(|(n, _)| n.clone()).collect(),
            progress: opts.progress.clone(),
            declared: tconf.declared_schema(),
            one_row: tconf.one_row_per_unit,
        };
        let report = ingest_file(&ctx, &mut manifest, format, &hash)?;
        summary.kept += report.kept;
        summary.rejected += report.rejected;
        summary.files.push(report);
    }
    summary.table_rows = manifest.rows();
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

fn detect_format(path: &Path) -> Result<FileFormat, IngestError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
    if name.ends_with(".csv") {
        Ok(FileFormat::Csv)
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        Ok(FileFormat::Jsonl)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Ok(FileFormat::Parquet)
    } else {
        Err(IngestError::UnknownFormat { path: path.display().to_string() })
    }
}

/// Remove leftovers of an interrupted ingest: temporary files and parts the
/// manifest does not list.
fn clean_stale(data: &Path, manifest: &Manifest) {
    let dir = table_dir(data, &manifest.table);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let stale_tmp = name.starts_with(".part-") && name.ends_with(".tmp");
            let unlisted = name.starts_with("part-") && !manifest.parts.iter().any(|p| p.file == name);
            if stale_tmp || unlisted {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let qdir = data.join("quarantine").join(&manifest.table);
    if let Ok(entries) = fs::read_dir(&qdir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

pub fn hash_file(path: &Path) -> Result<String, IngestError> {
    let rerr = |source| IngestError::Read { path: path.display().to_string(), source };
    let mut f = File::open(path).map_err(rerr)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(rerr)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

struct FileCtx<'a> {
    data: &'a Path,
    table: &'a str,
    path: &'a Path,
    unit: Option<String>,
    bounded: Vec<String>,
    progress: std::sync::Arc<dyn crate::progress::Progress>,
    /// The schema dpq.toml declares for the table, if it does.
    declared: Option<Vec<ColumnSpec>>,
    /// The table holds one row per person.
    one_row: bool,
}

/// Per-column validation rules.
struct Rules {
    types: Vec<ColumnType>,
    names: Vec<String>,
    unit: Option<usize>,
    bounded_float: Vec<bool>,
    /// A one-row-per-person table: the privacy units already present (earlier
    /// parts and earlier rows); a second row for a person is quarantined.
    seen: Option<std::cell::RefCell<std::collections::HashSet<String>>>,
}

impl Rules {
    fn new(schema: &[ColumnSpec], ctx: &FileCtx<'_>) -> Rules {
        Rules {
            types: schema.iter().map(|c| c.ty).collect(),
            names: schema.iter().map(|c| c.name.clone()).collect(),
            unit: ctx.unit.as_ref().and_then(|u| schema.iter().position(|c| &c.name == u)),
            bounded_float: schema.iter().map(|c| c.ty == ColumnType::Float64 && ctx.bounded.contains(&c.name)).collect(),
            seen: None,
        }
    }
    /// Record a person's row in a one-row-per-person table; false for a duplicate.
    fn admit_unit(&self, key: String) -> bool {
        match &self.seen {
            Some(s) => s.borrow_mut().insert(key),
            None => true,
        }
    }
    /// Row-level checks after parsing.
    fn check(&self, row: &[Value]) -> Result<(), String> {
        if let Some(u) = self.unit
            && row[u] == Value::Null
        {
            return Err("missing privacy unit".into());
        }
        for (i, v) in row.iter().enumerate() {
            if let Value::Float(x) = v
                && self.bounded_float[i]
                && !x.is_finite()
            {
                return Err(format!("non-finite value in bounded column `{}`", self.names[i]));
            }
        }
        if let Some(u) = self.unit
            && !self.admit_unit(unit_key(&row[u]))
        {
            return Err(DUPLICATE_UNIT.into());
        }
        Ok(())
    }
}

const DUPLICATE_UNIT: &str = "a second row for this person in a one-row-per-person table (one_row_per_unit = true)";

/// A privacy unit's identity as text (for duplicate detection).
fn unit_key(v: &Value) -> String {
    match v {
        Value::Int(i) => format!("i{i}"),
        Value::Str(s) => format!("s{s}"),
        Value::Float(f) => format!("f{f}"),
        Value::Bool(b) => format!("b{b}"),
        Value::Ts(t) => format!("t{t}"),
        Value::Date(d) => format!("d{d}"),
        Value::Null => "null".into(),
    }
}

/// The privacy units already stored in a table (for one-row-per-person tables).
fn existing_units(data: &Path, manifest: &Manifest, unit: &str) -> Result<std::collections::HashSet<String>, IngestError> {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = std::collections::HashSet::new();
    let Some(ci) = manifest.schema.iter().position(|c| c.name == unit) else { return Ok(out) };
    for p in &manifest.parts {
        let path = table_dir(data, &manifest.table).join(&p.file);
        let bad = |e: String| IngestError::BadFile { path: path.display().to_string(), message: e };
        let f = File::open(&path).map_err(|e| bad(e.to_string()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| bad(e.to_string()))?;
        let mask = ProjectionMask::roots(b.parquet_schema(), [ci]);
        for batch in b.with_projection(mask).build().map_err(|e| bad(e.to_string()))? {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let col = batch.column(0);
            if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
                out.extend(a.iter().flatten().map(|v| format!("i{v}")));
            } else if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                out.extend(a.iter().flatten().map(|v| format!("s{v}")));
            } else if let Some(a) = col.as_string_view_opt() {
                out.extend(a.iter().flatten().map(|v| format!("s{v}")));
            }
        }
    }
    Ok(out)
}

/// Collects rejected rows into `quarantine/TABLE/ingest-N-<file>.jsonl`.
struct Quarantine {
    tmp: PathBuf,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    rejected: u64,
    reasons: BTreeMap<String, u64>,
    /// Count only (fuzzing, dry runs): write nothing.
    discard: bool,
}

impl Quarantine {
    fn new(data: &Path, table: &str, part_no: u64, source: &Path) -> Quarantine {
        // the source's name without its extension: broken.jsonl → ingest-…-broken.jsonl, not broken.jsonl.jsonl
        let stem = source.file_stem().and_then(|n| n.to_str()).unwrap_or("input").replace(['/', ' '], "_");
        let dir = data.join("quarantine").join(table);
        Quarantine {
            tmp: dir.join(format!("ingest-{part_no:06}-{stem}.jsonl.tmp")),
            path: dir.join(format!("ingest-{part_no:06}-{stem}.jsonl")),
            out: None,
            rejected: 0,
            reasons: BTreeMap::new(),
            discard: false,
        }
    }
    fn reject(&mut self, line: u64, reason: &str, raw: serde_json::Value) -> Result<(), IngestError> {
        self.rejected += 1;
        let key = reason.split(':').next().unwrap_or(reason).to_string();
        *self.reasons.entry(key).or_default() += 1;
        if self.discard {
            return Ok(());
        }
        if self.out.is_none() {
            let werr = |source| IngestError::Write { path: self.tmp.display().to_string(), source };
            fs::create_dir_all(self.tmp.parent().unwrap()).map_err(werr)?;
            self.out = Some(BufWriter::new(File::create(&self.tmp).map_err(werr)?));
        }
        let rec = serde_json::json!({ "line": line, "reason": reason, "row": raw });
        let out = self.out.as_mut().unwrap();
        writeln!(out, "{rec}").map_err(|source| IngestError::Write { path: self.tmp.display().to_string(), source })
    }
    /// Make the quarantine file durable under its final name (before the commit).
    fn finish(&mut self) -> Result<Option<PathBuf>, IngestError> {
        let Some(mut out) = self.out.take() else { return Ok(None) };
        let werr = |source| IngestError::Write { path: self.path.display().to_string(), source };
        out.flush().map_err(werr)?;
        out.get_ref().sync_all().map_err(werr)?;
        drop(out);
        fs::rename(&self.tmp, &self.path).map_err(werr)?;
        Ok(Some(self.path.clone()))
    }
}

/// A writer that hashes what it writes.
struct HashingFile {
    file: File,
    hash: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct PartWritten {
    rows: u64,
    bytes: u64,
    sha256: String,
}

/// Spawned writer: receives batches, writes the temporary Parquet part.
fn part_writer(tmp: PathBuf, schema: datafusion::arrow::datatypes::SchemaRef, rx: Receiver<RecordBatch>, table: String) -> Result<PartWritten, IngestError> {
    let werr = |source| IngestError::Write { path: tmp.display().to_string(), source };
    let file = File::create(&tmp).map_err(werr)?;
    let props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap())).set_max_row_group_row_count(Some(1 << 20)).build();
    let perr = |e: datafusion::parquet::errors::ParquetError| IngestError::Parquet { table: table.clone(), message: e.to_string() };
    let mut w = ArrowWriter::try_new(HashingFile { file, hash: Sha256::new(), bytes: 0 }, schema, Some(props)).map_err(perr)?;
    let mut rows = 0u64;
    for batch in rx {
        rows += batch.num_rows() as u64;
        w.write(&batch).map_err(perr)?;
    }
    let inner = w.into_inner().map_err(perr)?;
    inner.file.sync_all().map_err(werr)?;
    Ok(PartWritten { rows, bytes: inner.bytes, sha256: hex::encode(inner.hash.finalize()) })
}

fn ingest_file(ctx: &FileCtx<'_>, manifest: &mut Manifest, format: FileFormat, hash: &str) -> Result<FileReport, IngestError> {
    let path_s = ctx.path.display().to_string();
    let part_no = manifest.next_part.max(1);
    let dir = table_dir(ctx.data, ctx.table);
    fs::create_dir_all(&dir).map_err(|source| IngestError::Write { path: dir.display().to_string(), source })?;
    let part_name = format!("part-{part_no:06}.parquet");
    let tmp = dir.join(format!(".part-{part_no:06}.parquet.tmp"));
    let mut quarantine = Quarantine::new(ctx.data, ctx.table, part_no, ctx.path);
    let size = fs::metadata(ctx.path).map(|m| m.len()).unwrap_or(0);
    let bar = ctx.progress.start(size, true, &format!("ingesting {}", file_label(ctx.path)));

    // Work out the schema: declared in dpq.toml (enforced, never widened), else
    // recorded by the first ingest, else inferred from this file.
    if let (Some(d), false) = (&ctx.declared, manifest.schema.is_empty()) {
        let mut want = d.clone();
        let mut have = manifest.schema.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        have.sort_by(|a, b| a.name.cmp(&b.name));
        if want != have {
            return Err(IngestError::SchemaMismatch {
                path: path_s,
                table: ctx.table.into(),
                message: format!(
                    "the table's stored columns ({}) differ from the types dpq.toml declares ({})\n  hint: the data was ingested before the declaration; declare the stored types, or ingest into a new dataset",
                    have.iter().map(|c| format!("{} {}", c.name, c.ty.name())).collect::<Vec<_>>().join(", "),
                    want.iter().map(|c| format!("{} {}", c.name, c.ty.name())).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let schema_cols: Vec<ColumnSpec> = if let (Some(d), true) = (&ctx.declared, manifest.schema.is_empty()) {
        d.clone()
    } else if manifest.schema.is_empty() {
        let inferred = match format {
            FileFormat::Csv => infer_csv(ctx.path)?,
            FileFormat::Jsonl => infer_jsonl(ctx.path)?,
            FileFormat::Parquet => infer_parquet(ctx.path)?,
        };
        if let Some(u) = &ctx.unit
            && !inferred.iter().any(|c| &c.name == u)
        {
            return Err(IngestError::SchemaMismatch {
                path: path_s,
                table: ctx.table.into(),
                message: format!("it has no column `{u}`, the table's privacy unit"),
            });
        }
        inferred
    } else {
        manifest.schema.clone()
    };
    // JSON Lines has no header: its first objects stand for it. A file whose
    // fields are not the table's columns (messages.jsonl into users) is
    // refused before anything is written, not quarantined line by line.
    if format == FileFormat::Jsonl {
        let fields = infer_jsonl(ctx.path)?;
        let known = |n: &str| schema_cols.iter().any(|c| c.name == n);
        let odd: Vec<&str> = fields.iter().map(|c| c.name.as_str()).filter(|n| !known(n)).collect();
        let lacks_unit = ctx.unit.as_ref().filter(|u| !fields.iter().any(|c| &c.name == *u));
        let what = if !odd.is_empty() {
            Some(format!(
                "its objects have field{} {} that the table has no column for",
                if odd.len() == 1 { "" } else { "s" },
                odd.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ))
        } else {
            lacks_unit.map(|u| format!("its objects have no field `{u}`, the table's privacy unit"))
        };
        if let Some(what) = what {
            return Err(IngestError::SchemaMismatch {
                path: path_s,
                table: ctx.table.into(),
                message: format!(
                    "{what} (the table's columns: {}; the file's fields: {})\n  hint: is this the right file for `{}`? Nothing was written",
                    schema_cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                    fields.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                    ctx.table
                ),
            });
        }
    }
    let mut rules = Rules::new(&schema_cols, ctx);
    if ctx.one_row
        && let Some(u) = &ctx.unit
    {
        rules.seen = Some(std::cell::RefCell::new(existing_units(ctx.data, manifest, u)?));
    }
    let arrow_schema = schema::arrow_schema(&schema_cols);

    let (tx, rx) = sync_channel::<RecordBatch>(4);
    let written = std::thread::scope(|s| -> Result<PartWritten, IngestError> {
        let writer = {
            let tmp = tmp.clone();
            let schema = arrow_schema.clone();
            let table = ctx.table.to_string();
            s.spawn(move || part_writer(tmp, schema, rx, table))
        };
        let read = match format {
            FileFormat::Csv => read_csv(ctx, &rules, &arrow_schema, tx, &mut quarantine, &*bar),
            FileFormat::Jsonl => read_jsonl(ctx, &rules, &arrow_schema, tx, &mut quarantine, &*bar),
            FileFormat::Parquet => read_parquet(ctx, &rules, &arrow_schema, tx, &mut quarantine, &*bar),
        };
        let w = writer.join().expect("writer thread");
        read?;
        w
    });
    bar.finish();
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let qpath = quarantine.finish()?;
    let werr = |source| IngestError::Write { path: dir.display().to_string(), source };
    let mut report = FileReport {
        file: path_s,
        kept: written.rows,
        rejected: quarantine.rejected,
        reasons: quarantine.reasons.clone(),
        part: None,
        quarantine: qpath.as_ref().map(|p| p.display().to_string()),
    };
    if written.rows > 0 || manifest.schema.is_empty() {
        fs::rename(&tmp, dir.join(&part_name)).map_err(werr)?;
        manifest::sync_dir(&dir).map_err(werr)?;
        manifest.schema = schema_cols;
        manifest.parts.push(Part {
            file: part_name.clone(),
            rows: written.rows,
            bytes: written.bytes,
            sha256: written.sha256,
            rejected: quarantine.rejected,
            quarantine: qpath.map(|p| p.strip_prefix(ctx.data).unwrap_or(&p).display().to_string()),
            source: SourceInfo { name: file_label(ctx.path), sha256: hash.to_string(), format: format.extension().to_string() },
            ingested_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        manifest.next_part = part_no + 1;
        manifest.save(ctx.data)?; // commit point
        report.part = Some(part_name);
    } else {
        let _ = fs::remove_file(&tmp);
    }
    Ok(report)
}

fn file_label(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("input").to_string()
}

fn open_buffered(path: &Path) -> Result<BufReader<File>, IngestError> {
    let f = File::open(path).map_err(|source| IngestError::Read { path: path.display().to_string(), source })?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

fn csv_reader(path: &Path) -> Result<csv::Reader<BufReader<File>>, IngestError> {
    Ok(csv_builder().from_reader(open_buffered(path)?))
}

fn csv_builder() -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(true).flexible(true);
    b
}

fn csv_header<R: Read>(path: &Path, rdr: &mut csv::Reader<R>) -> Result<Vec<String>, IngestError> {
    let bad = |message: String| IngestError::BadFile { path: path.display().to_string(), message };
    let h = rdr.byte_headers().map_err(|e| bad(format!("cannot read the header: {e}")))?.clone();
    if h.is_empty() {
        return Err(bad("the file is empty (no header line)\n  hint: a CSV file starts with a header naming its columns".into()));
    }
    let mut names = Vec::new();
    for (i, f) in h.iter().enumerate() {
        let mut s = std::str::from_utf8(f).map_err(|_| bad("the header is not valid UTF-8\n  hint: convert the file to UTF-8 (e.g. iconv -t UTF-8)".into()))?;
        if i == 0 {
            s = s.trim_start_matches('\u{feff}');
        }
        let s = s.trim().to_string();
        if s.is_empty() {
            return Err(bad(format!("header column {} has no name", i + 1)));
        }
        if names.contains(&s) {
            return Err(bad(format!("the header names column `{s}` twice")));
        }
        names.push(s);
    }
    Ok(names)
}

fn infer_csv(path: &Path) -> Result<Vec<ColumnSpec>, IngestError> {
    let mut rdr = csv_reader(path)?;
    let names = csv_header(path, &mut rdr)?;
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while n < SAMPLE_ROWS && rdr.read_byte_record(&mut rec).unwrap_or(false) {
        if rec.len() != names.len() {
            continue;
        }
        for (i, f) in rec.iter().enumerate() {
            if let Ok(s) = std::str::from_utf8(f) {
                samples[i].push(s.to_string());
            }
        }
        n += 1;
    }
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(name, s)| {
            let refs: Vec<&str> = s.iter().map(|x| x.as_str()).collect();
            ColumnSpec { name, ty: schema::infer_text(&refs) }
        })
        .collect())
}

/// Map the file's column names onto the schema: position of each schema column in the file.
fn column_map(path: &Path, table: &str, names: &[String], schema: &[String]) -> Result<Vec<usize>, IngestError> {
    let mismatch = |message: String| IngestError::SchemaMismatch { path: path.display().to_string(), table: table.into(), message };
    if let Some(extra) = names.iter().find(|n| !schema.contains(n)) {
        return Err(mismatch(format!(
            "unexpected column `{extra}` (recorded columns: {})\n  hint: drop the column, or ingest into a new table",
            schema.join(", ")
        )));
    }
    schema.iter().map(|c| names.iter().position(|n| n == c).ok_or_else(|| mismatch(format!("missing column `{c}`")))).collect()
}

fn read_csv(
    ctx: &FileCtx<'_>,
    rules: &Rules,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    tx: SyncSender<RecordBatch>,
    q: &mut Quarantine,
    bar: &dyn crate::progress::Bar,
) -> Result<(), IngestError> {
    read_csv_from(csv_reader(ctx.path)?, ctx, rules, schema, tx, q, bar)
}

fn read_csv_from<R: Read>(
    mut rdr: csv::Reader<R>,
    ctx: &FileCtx<'_>,
    rules: &Rules,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    tx: SyncSender<RecordBatch>,
    q: &mut Quarantine,
    bar: &dyn crate::progress::Bar,
) -> Result<(), IngestError> {
    let names = csv_header(ctx.path, &mut rdr)?;
    let map = column_map(ctx.path, ctx.table, &names, &rules.names)?;
    let mut builder = BatchBuilder::new(schema.clone(), &rules.types, BATCH_ROWS);
    let mut rec = csv::ByteRecord::new();
    let mut row: Vec<Value> = Vec::with_capacity(map.len());
    let mut last_pos = 0u64;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                q.reject(line, "malformed CSV", serde_json::Value::Null)?;
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(IngestError::Read { path: ctx.path.display().to_string(), source: std::io::Error::other(e.to_string()) });
                }
                continue;
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let raw = || serde_json::Value::Array(rec.iter().map(|f| serde_json::Value::String(String::from_utf8_lossy(f).into_owned())).collect());
        if rec.len() != names.len() {
            q.reject(line, &format!("wrong number of fields: {} (expected {})", rec.len(), names.len()), raw())?;
            continue;
        }
        row.clear();
        let mut err: Option<String> = None;
        for (ci, &fi) in map.iter().enumerate() {
            let field = &rec[fi];
            let Ok(s) = std::str::from_utf8(field) else {
                err = Some(format!("invalid UTF-8 in column `{}`", rules.names[ci]));
                break;
            };
            match schema::parse_text(s, rules.types[ci]) {
                Ok(v) => row.push(v),
                Err(why) if why == schema::TOO_LONG => {
                    err = Some(format!("value over 64 KiB in column `{}` ({why})", rules.names[ci]));
                    break;
                }
                Err(why) => {
                    err = Some(format!("wrong type in column `{}`: {why}", rules.names[ci]));
                    break;
                }
            }
        }
        if err.is_none()
            && let Err(e) = rules.check(&row)
        {
            err = Some(e);
        }
        if let Some(e) = err {
            q.reject(line, &e, raw())?;
            continue;
        }
        builder.push(&row);
        if builder.rows >= BATCH_ROWS {
            if tx.send(builder.finish()).is_err() {
                return Ok(()); // writer failed; its error is reported
            }
            let pos = rdr.position().byte();
            bar.inc(pos - last_pos);
            last_pos = pos;
        }
    }
    if builder.rows > 0 {
        let _ = tx.send(builder.finish());
    }
    Ok(())
}

/// Read one line of at most `MAX_LINE_BYTES`; returns `Some(too_long)` or `None` at EOF.
fn read_line_capped<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(if any { Some(too_long) } else { None });
        }
        any = true;
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(avail.len());
        r.consume(consumed);
        if done.is_some() {
            return Ok(Some(too_long));
        }
    }
}

fn infer_jsonl(path: &Path) -> Result<Vec<ColumnSpec>, IngestError> {
    let mut r = open_buffered(path)?;
    let rerr = |source| IngestError::Read { path: path.display().to_string(), source };
    let mut names: Vec<String> = Vec::new();
    let mut samples: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0;
    while n < SAMPLE_ROWS {
        let Some(too_long) = read_line_capped(&mut r, &mut buf).map_err(rerr)? else { break };
        if too_long || buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(&buf) else { continue };
        for (k, v) in obj {
            let i = match names.iter().position(|x| x == &k) {
                Some(i) => i,
                None => {
                    names.push(k);
                    samples.push(Vec::new());
                    names.len() - 1
                }
            };
            samples[i].push(v);
        }
        n += 1;
    }
    if names.is_empty() {
        return Err(IngestError::BadFile {
            path: path.display().to_string(),
            message: "no JSON objects found\n  hint: JSON Lines has one object per line, e.g. {\"user_id\": 1, \"ts\": \"2025-01-01T00:00:00Z\"}".into(),
        });
    }
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(name, s)| {
            let refs: Vec<&serde_json::Value> = s.iter().collect();
            ColumnSpec { name, ty: schema::infer_json(&refs) }
        })
        .collect())
}

fn read_jsonl(
    ctx: &FileCtx<'_>,
    rules: &Rules,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    tx: SyncSender<RecordBatch>,
    q: &mut Quarantine,
    bar: &dyn crate::progress::Bar,
) -> Result<(), IngestError> {
    read_jsonl_from(open_buffered(ctx.path)?, ctx, rules, schema, tx, q, bar)
}

fn read_jsonl_from<R: BufRead>(
    mut r: R,
    ctx: &FileCtx<'_>,
    rules: &Rules,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    tx: SyncSender<RecordBatch>,
    q: &mut Quarantine,
    bar: &dyn crate::progress::Bar,
) -> Result<(), IngestError> {
    let rerr = |source| IngestError::Read { path: ctx.path.display().to_string(), source };
    let mut builder = BatchBuilder::new(schema.clone(), &rules.types, BATCH_ROWS);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut bytes = 0u64;
    let mut row: Vec<Value> = Vec::with_capacity(rules.types.len());
    while let Some(too_long) = read_line_capped(&mut r, &mut buf).map_err(rerr)? {
        line += 1;
        bytes += buf.len() as u64 + 1;
        if too_long {
            q.reject(line, "line too long", serde_json::Value::Null)?;
            continue;
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(_) => {
                q.reject(line, "invalid UTF-8", serde_json::Value::Null)?;
                continue;
            }
        };
        let obj = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => {
                q.reject(line, "not a JSON object", serde_json::Value::String(text.to_string()))?;
                continue;
            }
        };
        let mut err = obj.keys().find(|k| !rules.names.contains(k)).map(|k| format!("unexpected field `{k}`"));
        row.clear();
        if err.is_none() {
            for (ci, name) in rules.names.iter().enumerate() {
                let v = obj.get(name).unwrap_or(&serde_json::Value::Null);
                match schema::parse_json(v, rules.types[ci]) {
                    Ok(v) => row.push(v),
                    Err(why) => {
                        err = Some(if why == schema::TOO_LONG {
                            format!("value over 64 KiB in column `{name}` ({why})")
                        } else {
                            format!("wrong type in column `{name}`: {why}")
                        });
                        break;
                    }
                }
            }
        }
        if err.is_none()
            && let Err(e) = rules.check(&row)
        {
            err = Some(e);
        }
        if let Some(e) = err {
            q.reject(line, &e, serde_json::Value::Object(obj))?;
            continue;
        }
        builder.push(&row);
        if builder.rows >= BATCH_ROWS {
            if tx.send(builder.finish()).is_err() {
                return Ok(());
            }
            bar.inc(bytes);
            bytes = 0;
        }
    }
    if builder.rows > 0 {
        let _ = tx.send(builder.finish());
    }
    Ok(())
}

fn parquet_reader(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, IngestError> {
    let f = File::open(path).map_err(|source| IngestError::Read { path: path.display().to_string(), source })?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: format!("not a readable Parquet file ({e})") })
}

fn infer_parquet(path: &Path) -> Result<Vec<ColumnSpec>, IngestError> {
    let b = parquet_reader(path)?;
    b.schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = ColumnType::from_arrow(f.data_type()).ok_or_else(|| IngestError::BadFile {
                path: path.display().to_string(),
                message: format!(
                    "column `{}` has type {} which dpq does not store\n  hint: convert it to an integer, float, string, boolean, date or timestamp",
                    f.name(),
                    f.data_type()
                ),
            })?;
            Ok(ColumnSpec { name: f.name().clone(), ty })
        })
        .collect()
}

fn read_parquet(
    ctx: &FileCtx<'_>,
    rules: &Rules,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    tx: SyncSender<RecordBatch>,
    q: &mut Quarantine,
    bar: &dyn crate::progress::Bar,
) -> Result<(), IngestError> {
    let b = parquet_reader(ctx.path)?;
    let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
    let map = column_map(ctx.path, ctx.table, &names, &rules.names)?;
    let total = b.metadata().file_metadata().num_rows().max(1) as u64;
    let size = fs::metadata(ctx.path).map(|m| m.len()).unwrap_or(0);
    let reader = b.with_batch_size(BATCH_ROWS).build().map_err(|e| IngestError::BadFile { path: ctx.path.display().to_string(), message: e.to_string() })?;
    let opts = CastOptions { safe: true, ..Default::default() };
    let fmt = FormatOptions::default();
    let mut row_base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| IngestError::BadFile { path: ctx.path.display().to_string(), message: e.to_string() })?;
        let n = batch.num_rows();
        let mut keep = vec![true; n];
        let mut reason: Vec<Option<String>> = vec![None; n];
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(map.len());
        for (ci, &fi) in map.iter().enumerate() {
            let src = batch.column(fi);
            let target = rules.types[ci].arrow();
            let src = if matches!(src.data_type(), DataType::Timestamp(..)) && rules.types[ci] == ColumnType::Timestamp {
                // normalise any timestamp unit/zone to microseconds UTC
                cast_with_options(src, &target, &opts)
            } else {
                cast_with_options(src, &target, &opts)
            }
            .map_err(|e| IngestError::SchemaMismatch {
                path: ctx.path.display().to_string(),
                table: ctx.table.into(),
                message: format!("column `{}` cannot be read as {}: {e}", rules.names[ci], rules.types[ci].name()),
            })?;
            let orig = batch.column(fi);
            for i in 0..n {
                if keep[i] && src.is_null(i) && !orig.is_null(i) {
                    keep[i] = false;
                    reason[i] = Some(format!("wrong type in column `{}`", rules.names[ci]));
                }
            }
            if Some(ci) == rules.unit {
                for i in 0..n {
                    if keep[i] && src.is_null(i) {
                        keep[i] = false;
                        reason[i] = Some("missing privacy unit".into());
                    }
                }
                if rules.seen.is_some() {
                    let fmt = ArrayFormatter::try_new(src.as_ref(), &FormatOptions::default()).expect("formatter");
                    let prefix = if rules.types[ci] == ColumnType::Int64 { "i" } else { "s" };
                    for i in 0..n {
                        if keep[i] && !rules.admit_unit(format!("{prefix}{}", fmt.value(i))) {
                            keep[i] = false;
                            reason[i] = Some(DUPLICATE_UNIT.into());
                        }
                    }
                }
            }
            if rules.types[ci] == ColumnType::Utf8 {
                let sa = src.as_any().downcast_ref::<datafusion::arrow::array::StringArray>();
                for i in 0..n {
                    if keep[i] && sa.is_some_and(|a| a.is_valid(i) && a.value(i).len() > schema::MAX_TEXT_BYTES) {
                        keep[i] = false;
                        reason[i] = Some(format!("value over 64 KiB in column `{}` ({})", rules.names[ci], schema::TOO_LONG));
                    }
                }
            }
            if rules.bounded_float[ci] {
                let fa = src.as_any().downcast_ref::<Float64Array>().expect("float column");
                for i in 0..n {
                    if keep[i] && fa.is_valid(i) && !fa.value(i).is_finite() {
                        keep[i] = false;
                        reason[i] = Some(format!("non-finite value in bounded column `{}`", rules.names[ci]));
                    }
                }
            }
            cols.push(src);
        }
        if keep.iter().any(|k| !k) {
            let formatters: Vec<ArrayFormatter> = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &fmt).expect("formatter")).collect();
            for i in 0..n {
                if !keep[i] {
                    let raw = serde_json::Value::Object(
                        names.iter().zip(&formatters).map(|(nm, f)| (nm.clone(), serde_json::Value::String(f.value(i).to_string()))).collect(),
                    );
                    q.reject(row_base + i as u64 + 1, reason[i].as_deref().unwrap_or("rejected"), raw)?;
                }
            }
        }
        let out = RecordBatch::try_new(schema.clone(), cols).map_err(|e| IngestError::SchemaMismatch {
            path: ctx.path.display().to_string(),
            table: ctx.table.into(),
            message: e.to_string(),
        })?;
        let out = if keep.iter().all(|k| *k) { out } else { filter_record_batch(&out, &BooleanArray::from(keep)).expect("filter") };
        row_base += n as u64;
        bar.set_position(size * row_base / total);
        if out.num_rows() > 0 && tx.send(out).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Parse and validate in-memory CSV or JSON Lines bytes against a schema, as
/// `ingest` would, writing nothing: returns (kept, rejected). For fuzzing and
/// dry runs. `unit` names the privacy-unit column, `bounded` the bounded columns.
pub fn check_bytes(bytes: &[u8], format: FileFormat, schema: &[ColumnSpec], unit: Option<&str>, bounded: &[String]) -> Result<(u64, u64), IngestError> {
    let path = Path::new("<memory>");
    let ctx = FileCtx {
        data: path,
        table: "fuzz",
        path,
        unit: unit.map(|u| u.to_string()),
        bounded: bounded.to_vec(),
        progress: crate::progress::silent(),
        declared: None,
        one_row: false,
    };
    let rules = Rules::new(schema, &ctx);
    let arrow = schema::arrow_schema(schema);
    let mut q = Quarantine::new(path, "fuzz", 0, path);
    q.discard = true;
    let (tx, rx) = sync_channel::<RecordBatch>(1 << 16);
    let bar = crate::progress::Silent;
    let res = match format {
        FileFormat::Csv => read_csv_from(csv_builder().from_reader(bytes), &ctx, &rules, &arrow, tx, &mut q, &bar),
        FileFormat::Jsonl => read_jsonl_from(bytes, &ctx, &rules, &arrow, tx, &mut q, &bar),
        FileFormat::Parquet => return Err(IngestError::BadFile { path: "<memory>".into(), message: "parquet is not supported here".into() }),
    };
    res?;
    let kept: u64 = rx.iter().map(|b| b.num_rows() as u64).sum();
    Ok((kept, q.rejected))
}

/// How many people the stored parts of `table` hold more than one row for
/// (for a table declared `one_row_per_unit` after data was ingested): the
/// data owner's check before the declaration is accepted. Reads the unit
/// column of every part.
pub fn people_with_several_rows(data: &Path, config: &Config, table: &str) -> Result<u64, IngestError> {
    use datafusion::arrow::row::{RowConverter, SortField};
    let Some(tc) = config.table(table) else { return Err(IngestError::Undeclared { table: table.into(), config: config.file.display().to_string() }) };
    let Some(unit) = tc.privacy_unit.clone() else { return Ok(0) };
    let Some(manifest) = Manifest::load(data, table)? else { return Ok(0) };
    let mut seen: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
    for path in manifest.part_paths(data)? {
        let read = |e: std::io::Error| IngestError::Read { path: path.display().to_string(), source: e };
        let file = File::open(&path).map_err(read)?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
        let idx = builder.schema().index_of(&unit).map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
        let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder.with_projection(mask).build().map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
        for batch in reader {
            let batch = batch.map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
            let col = batch.column(0).clone();
            let conv = RowConverter::new(vec![SortField::new(col.data_type().clone())])
                .map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
            let rows = conv.convert_columns(&[col]).map_err(|e| IngestError::BadFile { path: path.display().to_string(), message: e.to_string() })?;
            for r in rows.iter() {
                *seen.entry(r.as_ref().to_vec()).or_default() += 1;
            }
        }
    }
    Ok(seen.values().filter(|&&n| n > 1).count() as u64)
}
