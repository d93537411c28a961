//! One function per command.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Args, Command};
use crate::dataset::Dataset;
use crate::generate::{self, FileFormat, GenerateOptions};
use crate::ingest::{self, IngestOptions};

pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone();
    match args.command {
        Command::Init { dir } => {
            Dataset::init(&dir)?;
            println!("created dataset {}", dir.display());
            println!("  next: dpq generate --users 1000 --days 365 --out logs");
            println!("        dpq --data {} ingest users logs/users.csv   (and messages, calls, payments, emoji_catalog)", dir.display());
            Ok(())
        }
        Command::Generate { users, days, out, seed, format, start, messages_per_day } => {
            let opts = GenerateOptions {
                users,
                days,
                out: out.clone(),
                seed,
                format,
                start,
                messages_per_day,
                progress: super::progress::wanted(),
            };
            let s = generate::generate(&opts)?;
            println!(
                "generated {} people, {} messages, {} calls, {} payments, {} emoji in {:.1}s ({:.0} events/s)",
                s.users,
                s.messages,
                s.calls,
                s.payments,
                s.emoji,
                s.seconds,
                s.events() as f64 / s.seconds.max(1e-9)
            );
            for f in &s.files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        Command::Ingest { table, files, force, format } => {
            let ds = Dataset::open(&data)?;
            let opts = IngestOptions { table, files, force, format, progress: super::progress::wanted() };
            let s = ingest::ingest(&ds.dir, &ds.config, &opts)?;
            print_ingest(&s);
            Ok(())
        }
        Command::Demo { out, users, days, seed, messages_per_day } => demo(&out, users, days, seed, messages_per_day),
        Command::Query { .. } | Command::Explain { .. } | Command::Report { .. } | Command::Budget { .. } => {
            anyhow::bail!("this command is not available yet")
        }
    }
}

fn print_ingest(s: &ingest::IngestSummary) {
    for f in &s.files {
        println!(
            "{}: kept {} rows, rejected {}{}",
            f.file,
            f.kept,
            f.rejected,
            match &f.quarantine {
                Some(q) => format!(" (see {q})"),
                None => String::new(),
            }
        );
        for (reason, n) in &f.reasons {
            println!("  {n} × {reason}");
        }
    }
    println!(
        "table `{}` now holds {} rows ({:.0} rows/s)",
        s.table,
        s.table_rows,
        s.rows_per_second()
    );
}

const DEMO_TABLES: [&str; 5] = ["emoji_catalog", "users", "messages", "calls", "payments"];

fn demo(out: &Path, users: u64, days: u32, seed: u64, messages_per_day: f64) -> Result<()> {
    let data = out.join("data");
    let logs = out.join("logs");
    let ds = if data.join(crate::config::CONFIG_FILE).exists() {
        println!("reusing the demo dataset in {}", data.display());
        Dataset::open(&data)?
    } else {
        let ds = Dataset::init(&data)?;
        println!("1/3 generating two years of a messaging app's logs for {users} synthetic people…");
        let opts = GenerateOptions {
            users,
            days,
            out: logs.clone(),
            seed,
            format: FileFormat::Parquet,
            start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            messages_per_day,
            progress: super::progress::wanted(),
        };
        let s = generate::generate(&opts)?;
        println!("    {} events in {:.1}s", s.events(), s.seconds);
        println!("2/3 ingesting…");
        for t in DEMO_TABLES {
            let file = logs.join(format!("{t}.parquet"));
            let opts = IngestOptions {
                table: t.to_string(),
                files: vec![file],
                force: false,
                format: None,
                progress: super::progress::wanted(),
            };
            let s = ingest::ingest(&ds.dir, &ds.config, &opts).with_context(|| format!("ingesting {t}"))?;
            println!("    {t}: {} rows", s.table_rows);
        }
        ds
    };
    println!("3/3 the DP query engine is the next step: see README.md for what comes next.");
    let _ = ds;
    Ok(())
}
