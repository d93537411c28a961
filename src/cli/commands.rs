//! One function per command.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Args, Command, OutputFormat, PrivacyArgs, UsageError, output};
use crate::dataset::Dataset;
use crate::engine::Engine;
use crate::engine::plan::QueryParams;
use crate::generate::{self, FileFormat, GenerateOptions};
use crate::ingest::{self, IngestOptions};
use crate::ledger::Ledger;
use crate::privacy::amount::Amount;

pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone();
    let analyst = crate::ledger::analyst(args.analyst.as_deref());
    // quotas come from the dataset's analysts.toml (loaded where a dataset is opened)
    let quota_of = |dir: &Path| -> Result<Option<(Amount, Amount)>> { Ok(crate::config::analysts::Analysts::load(dir)?.quota(&analyst)) };
    let caller_for = |dir: &Path| -> Result<crate::engine::Caller> { Ok(crate::engine::Caller { analyst: analyst.clone(), quota: quota_of(dir)? }) };
    match args.command {
        Command::Init { dir } => {
            Dataset::init(&dir)?;
            println!("created dataset {}", dir.display());
            println!("  next: dpq generate --users 1000 --days 365 --out logs");
            println!("        dpq --data {} ingest users logs/users.csv   (and messages, calls, payments, emoji_catalog)", dir.display());
            Ok(())
        }
        Command::Generate { users, days, out, seed, format, start, messages_per_day } => {
            let opts = GenerateOptions { users, days, out: out.clone(), seed, format, start, messages_per_day, progress: super::progress::wanted() };
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
            // the dataset's ledger (created with the dataset's id on the first ingest) binds the data to it
            let ledger = ds.ledger(&analyst)?;
            let opts = IngestOptions { dataset: Some(ledger.dataset().to_string()), table, files, force, format, progress: super::progress::wanted() };
            let s = ingest::ingest(&ds.dir, &ds.config, &opts)?;
            print_ingest(&s);
            Ok(())
        }
        Command::Demo { out, users, days, seed, messages_per_day } => {
            demo(&out, users, days, seed, messages_per_day, &crate::engine::Caller { analyst: analyst.clone(), quota: None })
        }
        Command::Query { sql, privacy, format, fresh } => {
            let ds = Dataset::open(&data)?;
            let params = params(&ds, &privacy)?;
            let mem = memory_limit(&ds, &privacy)?;
            runtime()?.block_on(async {
                let engine = open_engine(&ds, mem, &privacy.engine).await?;
                let prepared = engine.prepare(&sql, &params).await?;
                let mut ledger = ds.ledger(&analyst)?;
                ledger.ensure_current()?;
                let spinner = super::progress::spinner(super::progress::wanted(), "running the DP query");
                let caller = caller_for(&ds.dir)?;
                let r = engine.run(&prepared, &mut ledger, fresh, &caller).await;
                spinner.finish_and_clear();
                print!("{}", output::render(&r?, format));
                Ok(())
            })
        }
        Command::Explain { sql, privacy, format } => {
            let ds = Dataset::open(&data)?;
            let params = params(&ds, &privacy)?;
            let mem = memory_limit(&ds, &privacy)?;
            runtime()?.block_on(async {
                let engine = open_engine(&ds, mem, &privacy.engine).await?;
                let prepared = engine.prepare(&sql, &params).await?;
                let ledger = ds.ledger(&analyst)?;
                let recent = crate::engine::explain::recent_limits(&ledger, &prepared);
                let e = crate::engine::explain::explain(&prepared, Some(ledger.status()?.remaining_epsilon().to_f64()), recent)?;
                match format {
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&e)?),
                    _ => print!("{}", e.to_text()),
                }
                Ok(())
            })
        }
        Command::Budget { action, log, from, limit, verify, anchor, by_analyst, export, format } => {
            let ds = Dataset::open(&data)?;
            let mut ledger = ds.ledger(&analyst)?;
            match action {
                Some(super::BudgetAction::Set { epsilon, delta, reason, accountant }) => {
                    return budget_set(&ds, &mut ledger, &analyst, &epsilon, delta.as_deref(), &reason, accountant);
                }
                Some(super::BudgetAction::AcceptConfig { reason }) => {
                    if reason.trim().is_empty() {
                        return Err(UsageError("--reason must say why the privacy settings changed".into()).into());
                    }
                    let st = ledger.accept_policy(&reason, &analyst)?;
                    println!("recorded dpq.toml's privacy settings as ledger entry {} by {analyst}: {reason}", st.entries);
                    return Ok(());
                }
                Some(super::BudgetAction::Reopen { reason }) => {
                    if reason.trim().is_empty() {
                        return Err(UsageError("--reason must say why the ledger can be reopened".into()).into());
                    }
                    let v = ledger.reopen(&reason, &analyst)?;
                    if !v.ok {
                        eprintln!("the ledger still does not verify: {}", v.problem.as_deref().unwrap_or("?"));
                        eprintln!("  restore ledger.db and ledger.anchor from a backup, then run this again");
                        std::process::exit(1);
                    }
                    println!("the ledger verifies and is open; the reopening is recorded by {analyst}: {reason}");
                    return Ok(());
                }
                None => {}
            }
            if verify {
                let want: Option<crate::ledger::anchor::Head> = match anchor.as_deref() {
                    Some("") | None => None,
                    Some(h) => Some(h.parse().map_err(UsageError)?),
                };
                let v = ledger.verify(want.as_ref())?;
                print!("{}", output::render_verify(&v, format));
                if !v.ok {
                    anyhow::bail!("the ledger failed verification: it was edited outside dpq");
                }
                return Ok(());
            }
            if anchor.is_some() {
                let st = ledger.status()?;
                println!("{}", st.head);
                return Ok(());
            }
            if let Some(dir) = export {
                let s = crate::ledger::statement::export(&ledger, &dir)?;
                println!(
                    "wrote {} and {} ({} entries, head {})",
                    dir.join("statement.json").display(),
                    dir.join("index.html").display(),
                    s.entries.len(),
                    s.head
                );
                println!("  anyone can check it without the data: dpq verify-statement {} --anchor {}", dir.display(), s.head);
                return Ok(());
            }
            let status = ledger.status()?;
            if let Some(problem) = ledger.health() {
                eprintln!("WARNING: {problem}\n");
            }
            if by_analyst {
                print!("{}", output::render_by_analyst(&status, &ledger.by_analyst()?, format));
                return Ok(());
            }
            let entries = if log { Some(ledger.entries(from, Some(limit))?) } else { None };
            print!("{}", output::render_status(&status, entries.as_deref(), format));
            Ok(())
        }
        Command::VerifyStatement { dir, anchor } => {
            let want: Option<crate::ledger::anchor::Head> = anchor.as_deref().map(|h| h.parse().map_err(UsageError)).transpose()?;
            match crate::ledger::statement::verify(&dir, want.as_ref()) {
                Ok((s, entries)) => {
                    let last = entries.last().expect("verified statements have entries");
                    println!(
                        "statement verified: dataset {}, {} entries, head {}; ε={} and δ={} charged of ε={} and δ={} ({}), {} released results all match their hashes",
                        s.dataset,
                        entries.len(),
                        s.head,
                        last.totals.epsilon,
                        last.totals.delta,
                        last.budget.epsilon,
                        last.budget.delta,
                        last.budget.rule,
                        s.results.len()
                    );
                    if want.is_none() {
                        println!("  (pass --anchor ENTRIES:HASH with a head published earlier to prove the statement is not a truncated or rewritten copy)");
                    }
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Report { spec, out, plan, fresh } => {
            let ds = Dataset::open(&data)?;
            let spec = crate::report::spec::Spec::load(&spec)?;
            runtime()?.block_on(async {
                let engine = open_engine(&ds, None, "local").await?;
                let mut ledger = ds.ledger(&analyst)?;
                ledger.ensure_current()?;
                let remaining = ledger.status()?.remaining_epsilon().to_f64();
                let p = crate::report::plan(&engine, &ds, &spec, remaining).await?;
                if plan {
                    print!("{}", p.to_text());
                    println!("\n(plan only: nothing was spent; run without --plan to produce the report)");
                    return Ok(());
                }
                let spinner = super::progress::spinner(super::progress::wanted(), "computing the report");
                let caller = caller_for(&ds.dir)?;
                let r = crate::report::run(&engine, &spec, &p, &mut ledger, fresh, &caller).await;
                spinner.finish_and_clear();
                let r = r?;
                let files = crate::report::write(&r, &out)?;
                println!(
                    "report \"{}\": ε={} spent{} (ledger entry {}), ε={} remains",
                    r.title,
                    if r.privacy.replayed { "0".to_string() } else { r.privacy.epsilon.clone() },
                    if r.privacy.replayed { " — replayed from the ledger" } else { "" },
                    r.privacy.entry,
                    r.privacy.remaining_epsilon
                );
                for f in files {
                    println!("  {}", f.display());
                }
                Ok(())
            })
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
    println!("table `{}` now holds {} rows ({:.0} rows/s)", s.table, s.table_rows, s.rows_per_second());
}

const DEMO_TABLES: [&str; 5] = ["emoji_catalog", "users", "messages", "calls", "payments"];

fn demo(out: &Path, users: u64, days: u32, seed: u64, messages_per_day: f64, caller: &crate::engine::Caller) -> Result<()> {
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
        let id = ds.ledger(&caller.analyst)?.dataset().to_string();
        for t in DEMO_TABLES {
            let file = logs.join(format!("{t}.parquet"));
            let opts = IngestOptions {
                dataset: Some(id.clone()),
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
    println!("3/3 producing the annual report with differential privacy…");
    let spec_path = out.join("annual_report.toml");
    if !spec_path.exists() {
        std::fs::write(&spec_path, ANNUAL_REPORT)?;
    }
    let spec = crate::report::spec::Spec::load(&spec_path)?;
    let report_dir = out.join("report");
    runtime()?.block_on(async {
        let engine = open_engine(&ds, None, "local").await?;
        let mut ledger = ds.ledger(&caller.analyst)?;
        let remaining = ledger.status()?.remaining_epsilon().to_f64();
        let plan = crate::report::plan(&engine, &ds, &spec, remaining).await?;
        let spinner = super::progress::spinner(super::progress::wanted(), "computing the report");
        let r = crate::report::run(&engine, &spec, &plan, &mut ledger, false, caller).await;
        spinner.finish_and_clear();
        let r = r?;
        crate::report::write(&r, &report_dir)?;
        let index = std::fs::canonicalize(report_dir.join("index.html"))?;
        print_highlights(&r);
        println!();
        println!("report: {}", index.display());
        println!(
            "privacy: the report spent ε={}{} of the dataset's ε={}; ε={} remains (see `dpq --data {} budget --log`)",
            r.privacy.epsilon,
            if r.privacy.replayed { " earlier (replayed now, free)" } else { "" },
            r.privacy.total_epsilon,
            r.privacy.remaining_epsilon,
            data.display()
        );
        println!("try:     dpq --data {} query \"SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind\"", data.display());
        Ok(())
    })
}

/// A few of the report's released figures, with their error bars, on the terminal.
fn print_highlights(r: &crate::report::ReportResult) {
    const SHOWN: [&str; 4] = ["messages_per_day", "last_message", "video_after_dinner", "top_emoji"];
    for s in r.sections.iter().filter(|s| SHOWN.contains(&s.id.as_str())) {
        println!();
        println!("{} (ε={}):", s.title, s.epsilon);
        let headers: Vec<String> = s.result.columns.iter().map(|c| c.name.clone()).collect();
        let rows: Vec<Vec<String>> = s
            .result
            .rows
            .iter()
            .take(10)
            .map(|row| s.result.columns.iter().map(|c| super::output::cell_text(row.get(&c.name).unwrap_or(&serde_json::Value::Null))).collect())
            .collect();
        print!("{}", super::output::table(&headers, &rows));
        for d in &s.derived {
            println!(
                "{}: {} ({:.0}% CI {} – {})",
                d.label,
                super::output::fmt_f(d.value),
                d.confidence * 100.0,
                super::output::fmt_f(d.ci_low),
                super::output::fmt_f(d.ci_high)
            );
        }
    }
    println!("(intervals: {:.0}% confidence, noise only)", r.privacy.confidence * 100.0);
}

/// The annual report spec, embedded so that `dpq demo` works from any directory.
pub const ANNUAL_REPORT: &str = include_str!("../../queries/annual_report.toml");

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `dpq budget set`: change the budget through the ledger (who, why), then
/// make dpq.toml's [budget] say the same.
fn budget_set(
    ds: &Dataset,
    ledger: &mut Ledger,
    analyst: &str,
    epsilon: &str,
    delta: Option<&str>,
    reason: &str,
    accountant: Option<super::AccountantArg>,
) -> Result<()> {
    use crate::privacy::accountant::filter::{Budget, Rule};
    if reason.trim().is_empty() {
        return Err(UsageError("--reason must say why the budget changes (it is recorded in the ledger)".into()).into());
    }
    let current = ledger.status()?.budget;
    let eps: Amount = epsilon.parse().map_err(|e| UsageError(format!("--epsilon {epsilon}: {e}")))?;
    let delta: Amount = match delta {
        Some(d) => d.parse().map_err(|e| UsageError(format!("--delta {d}: {e}")))?,
        None => current.delta,
    };
    if eps.is_zero() || delta >= Amount::ONE {
        return Err(UsageError("--epsilon must be > 0 and --delta < 1".into()).into());
    }
    let rule = match accountant {
        Some(super::AccountantArg::Basic) => Rule::Basic,
        Some(super::AccountantArg::Zcdp) => Rule::Zcdp,
        None => current.rule,
    };
    // dpq.toml must be able to say the new budget before the ledger records it
    let text = crate::config::budget_text(&ds.config.file, eps, delta)?;
    let parsed = crate::config::Config::parse(&text, &ds.config.file)?;
    if parsed.budget.epsilon != eps || parsed.budget.delta != delta {
        return Err(UsageError(format!("ε={eps}, δ={delta} cannot be written to dpq.toml exactly")).into());
    }
    let st = ledger.set_budget(Budget { epsilon: eps, delta, rule }, reason, analyst, &ds.config.file.display().to_string())?;
    crate::config::write_budget(&ds.config.file, eps, delta)?;
    println!(
        "budget set to ε={}, δ={} ({}) by {analyst}: {reason}
  spent ε={}, remaining ε={}; recorded as ledger entry {}, and dpq.toml updated",
        st.budget.epsilon,
        st.budget.delta,
        st.budget.rule,
        st.epsilon_spent,
        st.remaining_epsilon(),
        st.entries
    );
    Ok(())
}

pub async fn open_engine(ds: &Dataset, mem: Option<u64>, engine: &str) -> Result<Engine> {
    use crate::engine::session::Backend;
    let backend = match engine {
        "local" => Backend::Local,
        url if url.starts_with("df://") || url == "standalone" => {
            if !cfg!(feature = "ballista") {
                return Err(UsageError(format!(
                    "--engine {engine}: this build runs queries locally only\n  hint: build with `cargo build --release --features ballista` to run the bounded plan on a Ballista cluster"
                ))
                .into());
            }
            Backend::Ballista(url.to_string())
        }
        other => return Err(UsageError(format!("--engine {other}: use `local`, `standalone` or `df://host:port`")).into()),
    };
    Ok(Engine::open_on(ds, mem, backend).await?)
}

fn amount_flag(name: &str, v: &Option<String>) -> Result<Option<Amount>> {
    match v {
        None => Ok(None),
        Some(s) => s.parse::<Amount>().map(Some).map_err(|e| UsageError(format!("--{name} {s}: {e}")).into()),
    }
}

pub fn params(ds: &Dataset, p: &PrivacyArgs) -> Result<QueryParams> {
    let eps = amount_flag("epsilon", &p.epsilon)?;
    if eps.is_some_and(|e| e.is_zero()) {
        return Err(UsageError("--epsilon must be > 0".into()).into());
    }
    let delta = amount_flag("delta", &p.delta)?;
    if delta.is_some_and(|d| d >= Amount::ONE) {
        return Err(UsageError("--delta must be < 1".into()).into());
    }
    if let Some(c) = p.confidence {
        if !(c > 0.0 && c < 1.0) {
            return Err(UsageError(format!("--confidence {c}: must be strictly between 0 and 1 (e.g. 0.95)")).into());
        }
    }
    Ok(crate::engine::params_from(
        &ds.config,
        eps,
        delta,
        p.max_rows_per_unit,
        p.max_groups_per_unit,
        p.max_rows_per_group,
        p.mechanism.map(Into::into),
        p.confidence,
        if p.fixed_bounds {
            Some(false)
        } else if p.auto_bounds {
            Some(true)
        } else {
            None
        },
    ))
}

pub fn memory_limit(ds: &Dataset, p: &PrivacyArgs) -> Result<Option<u64>> {
    let s = p.memory_limit.clone().or_else(|| ds.config.defaults.memory_limit.clone());
    match s {
        None => Ok(None),
        Some(s) => crate::config::parse_bytes(&s).map(Some).map_err(|e| UsageError(format!("--memory-limit: {e}")).into()),
    }
}
