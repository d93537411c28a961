//! `dpq generate`: synthetic event logs of a messaging app.
//!
//! One file per table, with realistic structure: five age cohorts with their own
//! daily rhythms and emoji tastes (Zipf), heavy-tailed activity (a few people use
//! the app 100× more than the median), weekly and holiday effects, a growing user
//! base and year-over-year growth. No message content is ever generated. Output is
//! deterministic for a given seed and set of options.

pub mod catalog;
pub mod model;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use datafusion::arrow::array::{ArrayRef, Date32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

use model::*;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot write Parquet file {path}: {message}")]
    Parquet { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub use crate::storage::FileFormat;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub users: u64,
    pub days: u32,
    pub out: PathBuf,
    pub seed: u64,
    pub format: FileFormat,
    pub start: NaiveDate,
    /// Median messages per person per active day (the mean is ~2.2× larger
    /// because of the heavy tail).
    pub messages_per_day: f64,
    pub progress: std::sync::Arc<dyn crate::progress::Progress>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            users: 1000,
            days: 365,
            out: PathBuf::from("logs"),
            seed: 42,
            format: FileFormat::Csv,
            start: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            messages_per_day: 2.0,
            progress: crate::progress::silent(),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerateSummary {
    pub users: u64,
    pub messages: u64,
    pub calls: u64,
    pub payments: u64,
    pub emoji: u64,
    pub files: Vec<PathBuf>,
    pub seconds: f64,
}

impl GenerateSummary {
    pub fn events(&self) -> u64 {
        self.messages + self.calls + self.payments
    }
}

/// One synthetic person.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: i64,
    pub cohort: usize,
    pub signup: NaiveDate,
    /// Expected messages per day before weekly/holiday/growth factors.
    pub rate: f64,
    /// Chronotype: hours added to the cohort's rhythm (−1, 0 or +1).
    pub shift: i32,
}

pub fn schema(table: &str) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    Arc::new(Schema::new(match table {
        "users" => vec![f("user_id", DataType::Int64, false), f("age_group", DataType::Utf8, false), f("signup_date", DataType::Date32, false)],
        "messages" => vec![
            f("user_id", DataType::Int64, false),
            f("ts", ts, false),
            f("chat_kind", DataType::Utf8, false),
            f("emoji", DataType::Utf8, true),
            f("length", DataType::Int64, false),
        ],
        "calls" => vec![f("user_id", DataType::Int64, false), f("ts", ts, false), f("kind", DataType::Utf8, false), f("duration_s", DataType::Int64, false)],
        "payments" => {
            vec![f("user_id", DataType::Int64, false), f("ts", ts, false), f("category", DataType::Utf8, false), f("amount_cents", DataType::Int64, false)]
        }
        "emoji_catalog" => vec![f("emoji", DataType::Utf8, false), f("name", DataType::Utf8, false)],
        other => panic!("unknown generated table {other}"),
    }))
}

/// A cell value of a generated row.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Int(i64),
    Str(&'a str),
    Null,
    /// seconds since the Unix epoch
    Ts(i64),
    Date(NaiveDate),
}

const BATCH: usize = 65_536;

/// Writes one table in the chosen format, streaming.
struct TableSink {
    path: PathBuf,
    kind: SinkKind,
    rows: u64,
    schema: SchemaRef,
}

enum SinkKind {
    Text { out: BufWriter<File>, json: bool, line: Vec<u8> },
    Parquet { writer: Option<ArrowWriter<File>>, cols: Vec<ColBuilder> },
}

enum ColBuilder {
    Int(Int64Builder),
    Str(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io { path: path.display().to_string(), source }
}

impl TableSink {
    fn create(dir: &Path, table: &str, format: FileFormat) -> Result<TableSink, GenerateError> {
        let path = dir.join(format!("{table}.{}", format.extension()));
        let file = File::create(&path).map_err(io_err(&path))?;
        let schema = schema(table);
        let kind = match format {
            FileFormat::Csv | FileFormat::Jsonl => {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                if format == FileFormat::Csv {
                    let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    writeln!(out, "{}", header.join(",")).map_err(io_err(&path))?;
                }
                SinkKind::Text { out, json: format == FileFormat::Jsonl, line: Vec::with_capacity(256) }
            }
            FileFormat::Parquet => {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
                    .map_err(|e| GenerateError::Parquet { path: path.display().to_string(), message: e.to_string() })?;
                let cols = schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Int64 => ColBuilder::Int(Int64Builder::with_capacity(BATCH)),
                        DataType::Utf8 => ColBuilder::Str(StringBuilder::with_capacity(BATCH, BATCH * 8)),
                        DataType::Date32 => ColBuilder::Date(Date32Builder::with_capacity(BATCH)),
                        DataType::Timestamp(..) => ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC")),
                        other => panic!("unsupported generated type {other}"),
                    })
                    .collect();
                SinkKind::Parquet { writer: Some(writer), cols }
            }
        };
        Ok(TableSink { path, kind, rows: 0, schema })
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), GenerateError> {
        self.rows += 1;
        match &mut self.kind {
            SinkKind::Text { out, json, line } => {
                line.clear();
                if *json {
                    line.push(b'{');
                }
                for (i, (cell, field)) in cells.iter().zip(self.schema.fields()).enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    if *json {
                        line.push(b'"');
                        line.extend_from_slice(field.name().as_bytes());
                        line.extend_from_slice(b"\":");
                    }
                    match cell {
                        Cell::Int(v) => line.extend_from_slice(v.to_string().as_bytes()),
                        Cell::Str(s) => {
                            if *json {
                                line.extend_from_slice(serde_json::to_string(s).unwrap().as_bytes());
                            } else if s.contains([',', '"', '\n']) {
                                line.push(b'"');
                                line.extend_from_slice(s.replace('"', "\"\"").as_bytes());
                                line.push(b'"');
                            } else {
                                line.extend_from_slice(s.as_bytes());
                            }
                        }
                        Cell::Null => {
                            if *json {
                                line.extend_from_slice(b"null");
                            }
                        }
                        Cell::Ts(secs) => {
                            if *json {
                                line.push(b'"');
                            }
                            push_rfc3339(line, *secs);
                            if *json {
                                line.push(b'"');
                            }
                        }
                        Cell::Date(d) => {
                            if *json {
                                line.push(b'"');
                            }
                            line.extend_from_slice(d.format("%Y-%m-%d").to_string().as_bytes());
                            if *json {
                                line.push(b'"');
                            }
                        }
                    }
                }
                if *json {
                    line.push(b'}');
                }
                line.push(b'\n');
                out.write_all(line).map_err(io_err(&self.path))?;
            }
            SinkKind::Parquet { cols, .. } => {
                for (cell, col) in cells.iter().zip(cols.iter_mut()) {
                    match (cell, col) {
                        (Cell::Int(v), ColBuilder::Int(b)) => b.append_value(*v),
                        (Cell::Str(s), ColBuilder::Str(b)) => b.append_value(s),
                        (Cell::Null, ColBuilder::Str(b)) => b.append_null(),
                        (Cell::Null, ColBuilder::Int(b)) => b.append_null(),
                        (Cell::Ts(s), ColBuilder::Ts(b)) => b.append_value(s * 1_000_000),
                        (Cell::Date(d), ColBuilder::Date(b)) => b.append_value(days_since_epoch(*d)),
                        _ => panic!("generated cell does not match its column type"),
                    }
                }
                if self.rows.is_multiple_of(BATCH as u64) {
                    self.flush_batch()?;
                }
            }
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), GenerateError> {
        if let SinkKind::Parquet { writer, cols } = &mut self.kind {
            let arrays: Vec<ArrayRef> = cols
                .iter_mut()
                .map(|c| -> ArrayRef {
                    match c {
                        ColBuilder::Int(b) => Arc::new(b.finish()),
                        ColBuilder::Str(b) => Arc::new(b.finish()),
                        ColBuilder::Ts(b) => Arc::new(b.finish()),
                        ColBuilder::Date(b) => Arc::new(b.finish()),
                    }
                })
                .collect();
            if arrays[0].is_empty() {
                return Ok(());
            }
            let batch = RecordBatch::try_new(self.schema.clone(), arrays)
                .map_err(|e| GenerateError::Parquet { path: self.path.display().to_string(), message: e.to_string() })?;
            writer.as_mut().unwrap().write(&batch).map_err(|e| GenerateError::Parquet { path: self.path.display().to_string(), message: e.to_string() })?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<PathBuf, GenerateError> {
        self.flush_batch()?;
        match &mut self.kind {
            SinkKind::Text { out, .. } => out.flush().map_err(io_err(&self.path))?,
            SinkKind::Parquet { writer, .. } => {
                writer.take().unwrap().close().map_err(|e| GenerateError::Parquet { path: self.path.display().to_string(), message: e.to_string() })?;
            }
        }
        Ok(self.path)
    }
}

pub use crate::storage::days_since_epoch;

fn push_rfc3339(out: &mut Vec<u8>, secs: i64) {
    let dt = chrono::DateTime::from_timestamp(secs, 0).expect("timestamp in range");
    out.extend_from_slice(dt.format("%Y-%m-%dT%H:%M:%SZ").to_string().as_bytes());
}

/// Draw the population (deterministic for the seed).
pub fn people(opts: &GenerateOptions) -> Vec<Person> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let cohort = Discrete::new(&COHORT_SHARE);
    let activity = LogNormal::new(0.0, 1.25).unwrap();
    let span = opts.days.max(1) as i64;
    (1..=opts.users as i64)
        .map(|id| {
            let c = cohort.sample(rng.random());
            // 65 % joined in the three years before the period, the rest during it
            let signup = if rng.random::<f64>() < 0.65 {
                opts.start - Duration::days(rng.random_range(1..=3 * 365))
            } else {
                opts.start + Duration::days(rng.random_range(0..span))
            };
            let rate = opts.messages_per_day * activity.sample(&mut rng);
            let shift = [-1, 0, 0, 1][rng.random_range(0..4)];
            Person { id, cohort: c, signup, rate, shift }
        })
        .collect()
}

struct CohortModel {
    msg_hours: Vec<Discrete>, // by chronotype shift index 0..3
    video_hours: Discrete,
    voice_hours: Discrete,
    emoji: Discrete,
    emoji_order: Vec<usize>,
    categories: Discrete,
    length: LogNormal<f64>,
}

fn shifted(hours: &[f64; 24], shift: i32) -> Vec<f64> {
    (0..24).map(|h| hours[((h - shift).rem_euclid(24)) as usize]).collect()
}

/// Generate all tables into `opts.out`.
pub fn generate(opts: &GenerateOptions) -> Result<GenerateSummary, GenerateError> {
    if opts.users == 0 {
        return Err(GenerateError::Invalid("--users must be at least 1".into()));
    }
    if opts.days == 0 {
        return Err(GenerateError::Invalid("--days must be at least 1".into()));
    }
    if !(opts.messages_per_day > 0.0 && opts.messages_per_day.is_finite()) {
        return Err(GenerateError::Invalid("--messages-per-day must be a positive number".into()));
    }
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let catalog = catalog::catalog();
    let people = people(opts);
    let mut summary = GenerateSummary { users: opts.users, ..Default::default() };

    // public emoji catalogue
    let mut sink = TableSink::create(&opts.out, "emoji_catalog", opts.format)?;
    for (e, name) in &catalog {
        sink.row(&[Cell::Str(e), Cell::Str(name)])?;
    }
    summary.emoji = sink.rows;
    summary.files.push(sink.finish()?);

    // users
    let mut sink = TableSink::create(&opts.out, "users", opts.format)?;
    for p in &people {
        sink.row(&[Cell::Int(p.id), Cell::Str(COHORTS[p.cohort]), Cell::Date(p.signup)])?;
    }
    summary.files.push(sink.finish()?);

    let models: Vec<CohortModel> = (0..5)
        .map(|c| {
            let order = cohort_emoji_order(&catalog, c);
            CohortModel {
                msg_hours: [-1, 0, 1].iter().map(|&s| Discrete::new(&shifted(&MESSAGE_HOURS[c], s))).collect(),
                video_hours: Discrete::new(&VIDEO_HOURS[c]),
                voice_hours: Discrete::new(&VOICE_HOURS[c]),
                emoji: Discrete::new(&zipf_weights(order.len(), EMOJI_ZIPF)),
                emoji_order: order,
                categories: Discrete::new(&CATEGORY_WEIGHTS[c]),
                length: LogNormal::new(LENGTH_MEDIAN[c].ln(), 0.9).unwrap(),
            }
        })
        .collect();

    let mut msgs = TableSink::create(&opts.out, "messages", opts.format)?;
    let mut calls = TableSink::create(&opts.out, "calls", opts.format)?;
    let mut pays = TableSink::create(&opts.out, "payments", opts.format)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let call_dur_voice = LogNormal::new((150.0f64).ln(), 1.0).unwrap();
    let call_dur_video = LogNormal::new((600.0f64).ln(), 0.9).unwrap();

    let progress = opts.progress.start(opts.days as u64, false, "generating days");
    // per-day event buffers: (second of day, person index, payload)
    let mut day_msgs: Vec<(u32, u32, u8, i16, i64)> = Vec::new();
    let mut day_calls: Vec<(u32, u32, bool, i64)> = Vec::new();
    let mut day_pays: Vec<(u32, u32, u8, i64)> = Vec::new();
    for day in 0..opts.days {
        let date = opts.start + Duration::days(day as i64);
        let wd = weekday_index(date);
        let holiday = holiday_factor(date);
        let lunar = is_lunar_new_year(date);
        let growth = 1.0 + YEARLY_GROWTH * (day as f64 / 365.0);
        let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        day_msgs.clear();
        day_calls.clear();
        day_pays.clear();
        for (pi, p) in people.iter().enumerate() {
            if p.signup > date {
                continue;
            }
            let c = p.cohort;
            let m = &models[c];
            let lambda = p.rate * WEEKDAY[c][wd] * holiday * growth;
            let n = poisson(&mut rng, lambda);
            for _ in 0..n {
                let hour = m.msg_hours[(p.shift + 1) as usize].sample(rng.random()) as u32;
                let sec = hour * 3600 + rng.random_range(0..3600);
                let group = rng.random::<f64>() < GROUP_SHARE[c];
                let emoji = if rng.random::<f64>() < EMOJI_SHARE[c] { m.emoji_order[m.emoji.sample(rng.random())] as i16 } else { -1 };
                let len = (m.length.sample(&mut rng).round() as i64).max(1);
                day_msgs.push((sec, pi as u32, group as u8, emoji, len));
            }
            // calls: about one for every 25 messages, lighter tail
            let nc = poisson(&mut rng, (lambda / 25.0).min(6.0) * (0.5 + 0.5 * (c as f64) / 4.0));
            for _ in 0..nc {
                let video = rng.random::<f64>() < VIDEO_SHARE[c];
                let hour = if video { m.video_hours.sample(rng.random()) } else { m.voice_hours.sample(rng.random()) } as u32;
                let sec = hour * 3600 + rng.random_range(0..3600);
                let dur = if video { call_dur_video.sample(&mut rng) } else { call_dur_voice.sample(&mut rng) };
                day_calls.push((sec, pi as u32, video, (dur.round() as i64).max(1)));
            }
            // payments: red packets surge at Lunar New Year
            let pay_rate = 0.03 * (p.rate / opts.messages_per_day).sqrt().min(5.0) * if lunar { 4.0 } else { 1.0 };
            let np = poisson(&mut rng, pay_rate);
            for _ in 0..np {
                let cat = if lunar && rng.random::<f64>() < 0.7 { 1 } else { m.categories.sample(rng.random()) };
                let amount = if cat == 1 {
                    RED_PACKET_CENTS[rng.random_range(0..RED_PACKET_CENTS.len())]
                } else {
                    let d = LogNormal::new(CATEGORY_MEDIAN_CENTS[cat].ln(), 0.8).unwrap();
                    (d.sample(&mut rng).round() as i64).max(1)
                };
                let hour = m.voice_hours.sample(rng.random()) as u32;
                day_pays.push((hour * 3600 + rng.random_range(0..3600), pi as u32, cat as u8, amount));
            }
        }
        day_msgs.sort_unstable_by_key(|r| (r.0, r.1));
        day_calls.sort_unstable_by_key(|r| (r.0, r.1));
        day_pays.sort_unstable_by_key(|r| (r.0, r.1));
        for &(sec, pi, group, emoji, len) in &day_msgs {
            let e = if emoji >= 0 { Cell::Str(catalog[emoji as usize].0) } else { Cell::Null };
            msgs.row(&[
                Cell::Int(people[pi as usize].id),
                Cell::Ts(midnight + sec as i64),
                Cell::Str(if group == 1 { "group" } else { "private" }),
                e,
                Cell::Int(len),
            ])?;
        }
        for &(sec, pi, video, dur) in &day_calls {
            calls.row(&[
                Cell::Int(people[pi as usize].id),
                Cell::Ts(midnight + sec as i64),
                Cell::Str(if video { "video" } else { "voice" }),
                Cell::Int(dur),
            ])?;
        }
        for &(sec, pi, cat, amount) in &day_pays {
            pays.row(&[Cell::Int(people[pi as usize].id), Cell::Ts(midnight + sec as i64), Cell::Str(CATEGORIES[cat as usize]), Cell::Int(amount)])?;
        }
        progress.inc(1);
    }
    progress.finish();
    summary.messages = msgs.rows;
    summary.calls = calls.rows;
    summary.payments = pays.rows;
    summary.files.push(msgs.finish()?);
    summary.files.push(calls.finish()?);
    summary.files.push(pays.finish()?);
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

/// Poisson draw; zero for a non-positive rate. (Synthetic data only: the
/// generator's randomness needs no cryptographic or exact sampler.)
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if !(lambda > 0.0) {
        return 0;
    }
    if lambda < 30.0 {
        // inversion by multiplication (Knuth), fast for small rates
        let l = (-lambda).exp();
        let mut k = 0u64;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    Poisson::new(lambda).map(|d| d.sample(rng) as u64).unwrap_or(0)
}

#[cfg(test)]
mod test;
