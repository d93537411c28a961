//! One function per command.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Args, Command, OutputFormat, PrivacyArgs, UsageError, output};
use dpq::dataset::Dataset;
use dpq::generate::{self, GenerateOptions};
use dpq::ingest::{self, IngestOptions};
use dpq::ledger::Ledger;
use dpq::privacy::amount::Amount;
use dpq::storage::FileFormat;
use dpq::{QueryOptions, Session, SessionOptions};

pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone();
    let analyst = dpq::ledger::analyst(args.analyst.as_deref());
    match args.command {
        Command::Init { dir } => {
            Dataset::init(&dir)?;
            outln!("created dataset {}", dir.display());
            outln!("  next: dpq generate --users 1000 --days 365 --out logs");
            outln!("        dpq --data {} ingest users logs/users.csv   (and messages, calls, payments, emoji_catalog)", dir.display());
            Ok(())
        }
        Command::Generate { users, days, out, seed, format, start, messages_per_day } => {
            let opts =
                GenerateOptions { users, days, out: out.clone(), seed, format: format.into(), start, messages_per_day, progress: super::progress::reporter() };
            let s = generate::generate(&opts)?;
            outln!(
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
                outln!("  {}", f.display());
            }
            Ok(())
        }
        Command::Ingest { table, files, force, format } => {
            let ds = Dataset::open(&data)?;
            // the dataset's ledger (created with the dataset's id on the first ingest) binds the data to it
            let ledger = ds.ledger(&analyst)?;
            let opts = IngestOptions {
                dataset: Some(ledger.dataset().to_string()),
                table,
                files,
                force,
                format: format.map(Into::into),
                progress: super::progress::reporter(),
            };
            let s = ingest::ingest(&ds.dir, &ds.config, &opts)?;
            print_ingest(&s)?;
            Ok(())
        }
        Command::Demo { out, users, days, seed, messages_per_day } => demo(&out, users, days, seed, messages_per_day, &analyst),
        Command::Query { sql, file, privacy, format, fresh } => {
            let text = sql_text(sql, file)?;
            let statements = statements_of(&text)?;
            let options = query_options(&privacy, fresh)?;
            runtime()?.block_on(async {
                let session = open_session(&data, &analyst, &privacy).await?;
                run_statements(&session, &statements, &options, format).await
            })
        }
        Command::Shell { privacy, format } => {
            let options = query_options(&privacy, false)?;
            runtime()?.block_on(async {
                let session = open_session(&data, &analyst, &privacy).await?;
                super::shell::run(&session, &options, format).await
            })
        }
        Command::Tables { table, format } => {
            let ds = Dataset::open(&data)?;
            let listing = match table {
                None => dpq::config::describe::tables(&ds.config),
                Some(t) => dpq::config::describe::describe(&ds.config, &t).map_err(UsageError)?,
            };
            super::out(&output::render_listing(&listing, format))
        }
        Command::Explain { sql, privacy, format } => {
            let sql = sql_text(Some(sql), None)?;
            let options = query_options(&privacy, false)?;
            runtime()?.block_on(async {
                let session = open_session(&data, &analyst, &privacy).await?;
                let e = session.explain(&sql, &options).await?;
                match format {
                    OutputFormat::Json => super::out(&(serde_json::to_string_pretty(&e)? + "\n")),
                    _ => super::out(&e.to_text()),
                }
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
                    // a table now declared one row per person must hold one row per person
                    for (name, t) in &ds.config.tables {
                        if t.one_row_per_unit {
                            let n = dpq::ingest::people_with_several_rows(&ds.dir, &ds.config, name)?;
                            if n > 0 {
                                anyhow::bail!(
                                    "table `{name}` is declared one_row_per_unit, but its stored data holds more than one row for {n} people\n  fix: re-ingest it into a new dataset with the declaration (duplicates are then quarantined), or keep one_row_per_unit = false"
                                );
                            }
                        }
                    }
                    let st = ledger.accept_policy(&reason, &analyst)?;
                    outln!("recorded dpq.toml's privacy settings as ledger entry {} by {analyst}: {reason}", st.entries);
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
                    outln!("the ledger verifies and is open; the reopening is recorded by {analyst}: {reason}");
                    return Ok(());
                }
                None => {}
            }
            if verify {
                let want: Option<dpq::ledger::anchor::Head> = match anchor.as_deref() {
                    Some("") | None => None,
                    Some(h) => Some(h.parse().map_err(UsageError)?),
                };
                let v = ledger.verify(want.as_ref())?;
                outp!("{}", output::render_verify(&v, format));
                if !v.ok {
                    anyhow::bail!("the ledger failed verification: it was edited outside dpq");
                }
                return Ok(());
            }
            if anchor.is_some() {
                let st = ledger.status()?;
                outln!("{}", st.head);
                return Ok(());
            }
            if let Some(dir) = export {
                let s = dpq::ledger::statement::export(&ledger, &dir)?;
                outln!(
                    "wrote {} and {} ({} entries, head {})",
                    dir.join("statement.json").display(),
                    dir.join("index.html").display(),
                    s.entries.len(),
                    s.head
                );
                outln!("  anyone can check it without the data: dpq verify-statement {} --anchor {}", dir.display(), s.head);
                return Ok(());
            }
            let status = ledger.status()?;
            if let Some(problem) = ledger.health() {
                eprintln!("WARNING: {problem}\n");
            }
            if by_analyst {
                outp!("{}", output::render_by_analyst(&status, &ledger.by_analyst()?, format));
                return Ok(());
            }
            let entries = if log { Some(ledger.entries(from, Some(limit))?) } else { None };
            outp!("{}", output::render_status(&status, entries.as_deref(), format));
            Ok(())
        }
        Command::VerifyStatement { dir, anchor } => {
            let want: Option<dpq::ledger::anchor::Head> = anchor.as_deref().map(|h| h.parse().map_err(UsageError)).transpose()?;
            match dpq::ledger::statement::verify(&dir, want.as_ref()) {
                Ok((s, entries)) => {
                    let last = entries.last().expect("verified statements have entries");
                    outln!(
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
                        outln!("  (pass --anchor ENTRIES:HASH with a head published earlier to prove the statement is not a truncated or rewritten copy)");
                    }
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Cluster { role } => cluster(role),
        Command::Serve { listen, tls_cert, tls_key, max_connections, statement_timeout, engine, allow_plaintext } => {
            if !listen.ip().is_loopback() && tls_cert.is_none() && !allow_plaintext {
                return Err(UsageError(format!(
                    "dpq serve --listen {listen} without TLS would send answers and queries across the network in clear\n  fix: add --tls-cert FILE --tls-key FILE (clients then connect with sslmode=require), listen on 127.0.0.1, or pass --allow-plaintext"
                ))
                .into());
            }
            serve(&data, listen, tls_cert.zip(tls_key), max_connections, statement_timeout, &engine)
        }
        Command::Analyst { action } => analyst_command(&data, action),
        Command::Report { spec, builtin, out, plan, fresh } => {
            let spec = match (spec, builtin.as_deref()) {
                (Some(path), _) => dpq::session::Spec::load(&path)?,
                (None, Some("annual")) => dpq::session::Spec::parse(ANNUAL_REPORT, "--builtin annual")?,
                _ => return Err(UsageError("give a report spec file, or --builtin annual".into()).into()),
            };
            runtime()?.block_on(async {
                let session = Session::open_with(&data, SessionOptions { analyst: Some(analyst.clone()), ..Default::default() }).await?;
                let p = session.report_plan(&spec).await?;
                if plan {
                    super::out(&p.to_text())?;
                    return super::out("\n(plan only: nothing was spent; run without --plan to produce the report)\n");
                }
                let spinner = super::progress::spinner("computing the report");
                let r = session.report(&spec, &p, fresh).await;
                spinner.finish_and_clear();
                let r = r?;
                let files = dpq::report::write(&r, &out)?;
                let mut text = format!(
                    "report \"{}\": ε={} spent{} (ledger entry {}), ε={} remains\n",
                    r.title,
                    if r.privacy.replayed { "0".to_string() } else { r.privacy.epsilon.clone() },
                    if r.privacy.replayed { " — replayed from the ledger" } else { "" },
                    r.privacy.entry,
                    r.privacy.remaining_epsilon
                );
                for f in files {
                    text.push_str(&format!("  {}\n", f.display()));
                }
                super::out(&text)
            })
        }
    }
}

fn print_ingest(s: &ingest::IngestSummary) -> Result<()> {
    for f in &s.files {
        outln!(
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
            outln!("  {n} × {reason}");
        }
    }
    outln!("table `{}` now holds {} rows ({:.0} rows/s)", s.table, s.table_rows, s.rows_per_second());
    Ok(())
}

const DEMO_TABLES: [&str; 5] = ["emoji_catalog", "users", "messages", "calls", "payments"];

fn demo(out: &Path, users: u64, days: u32, seed: u64, messages_per_day: f64, analyst: &str) -> Result<()> {
    let data = out.join("data");
    let logs = out.join("logs");
    if data.join(dpq::config::CONFIG_FILE).exists() {
        outln!("reusing the demo dataset in {}", data.display());
    } else {
        let ds = Dataset::init(&data)?;
        outln!("1/3 generating two years of a messaging app's logs for {users} synthetic people…");
        let opts = GenerateOptions {
            users,
            days,
            out: logs.clone(),
            seed,
            format: FileFormat::Parquet,
            start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            messages_per_day,
            progress: super::progress::reporter(),
        };
        let s = generate::generate(&opts)?;
        outln!("    {} events in {:.1}s", s.events(), s.seconds);
        outln!("2/3 ingesting…");
        let id = ds.ledger(analyst)?.dataset().to_string();
        for t in DEMO_TABLES {
            let file = logs.join(format!("{t}.parquet"));
            let opts = IngestOptions {
                dataset: Some(id.clone()),
                table: t.to_string(),
                files: vec![file],
                force: false,
                format: None,
                progress: super::progress::reporter(),
            };
            let s = ingest::ingest(&ds.dir, &ds.config, &opts).with_context(|| format!("ingesting {t}"))?;
            outln!("    {t}: {} rows", s.table_rows);
        }
    }
    outln!("3/3 producing the annual report with differential privacy…");
    let spec_path = out.join("annual_report.toml");
    if !spec_path.exists() {
        std::fs::write(&spec_path, ANNUAL_REPORT)?;
    }
    let spec = dpq::session::Spec::load(&spec_path)?;
    let report_dir = out.join("report");
    runtime()?.block_on(async {
        let session = Session::open_with(&data, SessionOptions { analyst: Some(analyst.to_string()), ..Default::default() }).await?;
        let plan = session.report_plan(&spec).await?;
        let spinner = super::progress::spinner("computing the report");
        let r = session.report(&spec, &plan, false).await;
        spinner.finish_and_clear();
        let r = r?;
        dpq::report::write(&r, &report_dir)?;
        let index = std::fs::canonicalize(report_dir.join("index.html"))?;
        print_highlights(&r)?;
        outln!();
        outln!("report: {}", index.display());
        outln!(
            "privacy: the report spent ε={}{} of the dataset's ε={}; ε={} remains (see `dpq --data {} budget --log`)",
            r.privacy.epsilon,
            if r.privacy.replayed { " earlier (replayed now, free)" } else { "" },
            r.privacy.total_epsilon,
            r.privacy.remaining_epsilon,
            data.display()
        );
        outln!("try:     dpq --data {} query \"SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind\"", data.display());
        Ok(())
    })
}

/// A few of the report's released figures, with their error bars, on the terminal.
fn print_highlights(r: &dpq::report::ReportResult) -> Result<()> {
    const SHOWN: [&str; 4] = ["messages_per_day", "last_message", "video_after_dinner", "top_emoji"];
    for s in r.sections.iter().filter(|s| SHOWN.contains(&s.id.as_str())) {
        outln!();
        outln!("{} (ε={}):", s.title, s.epsilon);
        let headers: Vec<String> = s.result.columns.iter().map(|c| c.name.clone()).collect();
        // a top-k section: each group's k largest (by the released value), not the first rows in key order
        let mut picked: Vec<&serde_json::Map<String, serde_json::Value>> = s.result.rows.iter().collect();
        let noisy = s.result.columns.iter().find(|c| c.noisy).map(|c| c.name.clone());
        let released = |r: &serde_json::Map<String, serde_json::Value>| -> f64 {
            noisy.as_ref().and_then(|n| r.get(n)).and_then(|v| v.get("value").or(Some(v))).and_then(|v| v.as_f64()).unwrap_or(f64::NEG_INFINITY)
        };
        if s.chart == dpq::report::spec::Chart::Topk {
            let x = s.spec.as_ref().and_then(|sp| sp.x.clone());
            let k = s.spec.as_ref().and_then(|sp| sp.k).unwrap_or(5);
            picked.sort_by(|a, b| {
                let ga = x.as_ref().and_then(|x| a.get(x)).map(|v| v.to_string()).unwrap_or_default();
                let gb = x.as_ref().and_then(|x| b.get(x)).map(|v| v.to_string()).unwrap_or_default();
                ga.cmp(&gb).then(released(b).total_cmp(&released(a)))
            });
            let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            picked.retain(|r| {
                let g = x.as_ref().and_then(|x| r.get(x)).map(|v| v.to_string()).unwrap_or_default();
                let n = seen.entry(g).or_insert(0);
                *n += 1;
                *n <= k
            });
        }
        let limit = if s.chart == dpq::report::spec::Chart::Topk { picked.len() } else { 10 };
        let rows: Vec<Vec<String>> = picked
            .iter()
            .take(limit)
            .map(|row| s.result.columns.iter().map(|c| super::output::cell_text(row.get(&c.name).unwrap_or(&serde_json::Value::Null))).collect())
            .collect();
        outp!("{}", super::output::table(&headers, &rows));
        for d in &s.derived {
            // a share whose interval is all of [0, 100 %] says nothing
            let spans_all = !d.label.starts_with("growth") && d.ci_low <= 0.0 && d.ci_high >= 100.0;
            if !d.value.is_finite() || !d.ci_low.is_finite() || !d.ci_high.is_finite() || spans_all {
                outln!("{}: not enough data at this ε (the {:.0}% interval is unbounded or spans everything)", d.label, d.confidence * 100.0);
                continue;
            }
            // derived figures (growth, shares) are percentages
            outln!(
                "{}: {}% ({:.0}% CI {}% – {}%)",
                d.label,
                super::output::fmt_f(d.value),
                d.confidence * 100.0,
                super::output::fmt_f(d.ci_low),
                super::output::fmt_f(d.ci_high)
            );
        }
    }
    outln!("(intervals: {:.0}% confidence, noise only)", r.privacy.confidence * 100.0);
    Ok(())
}

/// The annual report spec, embedded so that `dpq demo` works from any directory.
pub const ANNUAL_REPORT: &str = include_str!("../../queries/annual_report.toml");

/// The SQL of `dpq query`: the argument, `-` (stdin), or `-f FILE`.
fn sql_text(sql: Option<String>, file: Option<std::path::PathBuf>) -> Result<String> {
    let from_stdin = || -> Result<String> {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the SQL from stdin")?;
        Ok(s)
    };
    match (sql, file) {
        (Some(s), _) if s == "-" => from_stdin(),
        (Some(s), _) => Ok(s),
        (None, Some(f)) if f.as_os_str() == "-" => from_stdin(),
        (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| UsageError(format!("cannot read {}: {e}", f.display())).into()),
        (None, None) => Err(UsageError("give the SQL as an argument, with -f FILE, or - to read it from stdin".into()).into()),
    }
}

/// The statements of a request; none is a usage error.
pub fn statements_of(text: &str) -> Result<Vec<String>> {
    let statements = dpq::sqltext::split(text).map_err(|e| UsageError(format!("the SQL does not tokenize: {e}")))?;
    if statements.is_empty() {
        return Err(UsageError("the SQL is empty: write a query, e.g. dpq query \"SELECT COUNT(*) FROM messages\"".into()).into());
    }
    Ok(statements.into_iter().map(|s| s.trim().to_string()).collect())
}

/// Run statements in order, printing each answer; stop at the first error
/// (naming which statement failed when there are several). `SHOW TABLES` and
/// `DESCRIBE t` are answered from dpq.toml.
pub async fn run_statements(session: &Session, statements: &[String], options: &QueryOptions, format: OutputFormat) -> Result<()> {
    let many = statements.len() > 1;
    let mut json = Vec::new();
    for (i, sql) in statements.iter().enumerate() {
        let fail = |e: anyhow::Error| if many { e.context(format!("statement {} of {}: {}", i + 1, statements.len(), first_line(sql))) } else { e };
        let text = match dpq::sqltext::discovery(sql) {
            Some(d) => {
                let c = &session.dataset().config;
                let listing = match d {
                    dpq::sqltext::Discovery::Tables => dpq::config::describe::tables(c),
                    dpq::sqltext::Discovery::Describe(t) => dpq::config::describe::describe(c, &t).map_err(|e| fail(dpq::Error::Query(e).into()))?,
                };
                if format == OutputFormat::Json {
                    json.push(serde_json::to_value(&listing)?);
                    continue;
                }
                output::render_listing(&listing, format)
            }
            None => {
                let spinner = super::progress::spinner("running the DP query");
                let r = session.query(sql, options).await;
                spinner.finish_and_clear();
                let r = r.map_err(|e| fail(e.into()))?;
                if format == OutputFormat::Json && many {
                    json.push(serde_json::from_str(&output::render(&r.result, format))?);
                    continue;
                }
                output::render(&r.result, format)
            }
        };
        if i > 0 {
            super::out("\n")?;
        }
        super::out(&text)?;
    }
    if format == OutputFormat::Json {
        let v = if many { serde_json::Value::Array(json) } else { json.pop().unwrap_or_default() };
        if !v.is_null() {
            super::out(&(serde_json::to_string_pretty(&v)? + "\n"))?;
        }
    }
    Ok(())
}

fn first_line(sql: &str) -> String {
    let l = sql.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if l.chars().count() > 60 { format!("{}…", l.chars().take(60).collect::<String>()) } else { l.to_string() }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `dpq budget set`: change the budget through the ledger (who, why), then
/// make dpq.toml's `[budget]` say the same.
fn budget_set(
    ds: &Dataset,
    ledger: &mut Ledger,
    analyst: &str,
    epsilon: &str,
    delta: Option<&str>,
    reason: &str,
    accountant: Option<super::AccountantArg>,
) -> Result<()> {
    use dpq::privacy::accountant::filter::{Budget, Rule};
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
    let text = dpq::config::budget_text(&ds.config.file, eps, delta)?;
    let parsed = dpq::config::Config::parse(&text, &ds.config.file)?;
    if parsed.budget.epsilon != eps || parsed.budget.delta != delta {
        return Err(UsageError(format!("ε={eps}, δ={delta} cannot be written to dpq.toml exactly")).into());
    }
    let st = ledger.set_budget(Budget { epsilon: eps, delta, rule }, reason, analyst, &ds.config.file.display().to_string())?;
    dpq::config::write_budget(&ds.config.file, eps, delta)?;
    outln!(
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

/// "300s", "5min", "2h", "1500ms", "0" (none).
fn parse_duration(s: &str) -> Option<Option<std::time::Duration>> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len()));
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "min" | "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(if secs == 0.0 { None } else { Some(std::time::Duration::from_secs_f64(secs)) })
}

/// `dpq serve`: until Ctrl-C or SIGTERM, then a graceful shutdown.
#[cfg(feature = "gateway")]
fn serve(
    data: &Path,
    listen: std::net::SocketAddr,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    max_connections: Option<usize>,
    statement_timeout: Option<String>,
    engine: &str,
) -> Result<()> {
    use dpq::server::{ServeOptions, TlsFiles};
    let ds = Dataset::open(data)?;
    let g = &ds.config.gateway;
    let timeout_text = statement_timeout.or_else(|| g.statement_timeout.clone());
    let statement_timeout = match timeout_text {
        Some(t) => parse_duration(&t).ok_or_else(|| UsageError(format!("statement timeout {t:?}: write a duration such as 300s, 5min or 0 (none)")))?,
        None => ServeOptions::default().statement_timeout,
    };
    let max_connections = max_connections.or(g.max_connections).unwrap_or(ServeOptions::default().max_connections);
    if max_connections == 0 {
        return Err(UsageError("--max-connections must be at least 1".into()).into());
    }
    let backend = backend_of(engine)?;
    let memory_per_statement =
        g.memory_per_statement.as_deref().map(dpq::config::parse_bytes).transpose().map_err(|e| UsageError(format!("[gateway] memory_per_statement: {e}")))?;
    let opts = ServeOptions {
        listen,
        tls: tls.map(|(cert, key)| TlsFiles { cert, key }),
        max_connections,
        statement_timeout,
        memory_per_statement,
        backend,
        ..Default::default()
    };
    let tls_on = opts.tls.is_some();
    runtime()?.block_on(async move {
        let server = dpq::server::start(data, opts).await?;
        let addr = server.local_addr;
        eprintln!(
            "dpq serve: listening on {addr}{} for analysts of {}\n  connect: psql \"host={} port={} user=NAME dbname=dpq{}\"\n  stop with Ctrl-C (running statements finish first)",
            if tls_on { " (TLS)" } else { "" },
            data.display(),
            addr.ip(),
            addr.port(),
            if tls_on { " sslmode=require" } else { "" }
        );
        let stop = async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r,
                    _ = term.recv() => Ok(()),
                }
            }
            #[cfg(not(unix))]
            tokio::signal::ctrl_c().await
        };
        stop.await?;
        eprintln!("dpq serve: shutting down (letting running statements finish)");
        server.shutdown().await?;
        eprintln!("dpq serve: stopped");
        Ok::<(), anyhow::Error>(())
    })
}

#[cfg(not(feature = "gateway"))]
fn serve(_: &Path, _: std::net::SocketAddr, _: Option<(std::path::PathBuf, std::path::PathBuf)>, _: Option<usize>, _: Option<String>, _: &str) -> Result<()> {
    Err(UsageError("dpq serve: this build has no gateway\n  hint: build with the default features (`cargo build --release`)".into()).into())
}

/// The password for `dpq analyst add`: asked twice at a terminal, else the
/// first line of stdin.
#[cfg(feature = "gateway")]
fn read_password(name: &str) -> Result<String> {
    use std::io::IsTerminal;
    let pw = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("password for {name}: "))?;
        let b = rpassword::prompt_password("again: ")?;
        if a != b {
            return Err(UsageError("the two passwords differ; nothing was changed".into()).into());
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if pw.chars().count() < 8 {
        return Err(UsageError("the password must have at least 8 characters; nothing was changed".into()).into());
    }
    Ok(pw)
}

#[cfg(feature = "gateway")]
fn analyst_command(data: &Path, action: super::AnalystAction) -> Result<()> {
    use super::AnalystAction;
    use dpq::config::analysts::Analysts;
    let ds = Dataset::open(data)?;
    match action {
        AnalystAction::Add { name, quota_epsilon, quota_delta, replace } => {
            if !dpq::config::analysts::valid_name(&name) {
                return Err(UsageError(format!("analyst name {name:?}: use 1 to 63 letters, digits, `_`, `.`, `-` or `@`")).into());
            }
            let quota = match quota_epsilon {
                Some(e) => {
                    let e: Amount = e.parse().map_err(|x| UsageError(format!("--quota-epsilon {e}: {x}")))?;
                    let d: Amount = match quota_delta {
                        Some(d) => d.parse().map_err(|x| UsageError(format!("--quota-delta {d}: {x}")))?,
                        None => Amount::ZERO,
                    };
                    let budget = ds.ledger(&name)?.status()?.budget;
                    if e > budget.epsilon || d > budget.delta {
                        return Err(UsageError(format!(
                            "a quota of ε={e}, δ={d} is larger than the dataset's budget (ε={}, δ={}); a quota lives inside the budget",
                            budget.epsilon, budget.delta
                        ))
                        .into());
                    }
                    Some((e, d))
                }
                // --replace without a quota changes the password only: the analyst's own
                // quota stays (dropping it silently lifted the limit: found by the second attack)
                None if replace => Analysts::load(&ds.dir)?.analysts.get(&name).and_then(|a| a.quota),
                None => None,
            };
            let password = read_password(&name)?;
            let verifier = dpq::server::scram::Verifier::new(&password).to_text();
            Analysts::write_entry(&ds.dir, &name, quota, &verifier, replace)?;
            let q = match quota {
                Some((e, d)) => format!("quota ε={e}, δ={d}"),
                None => match Analysts::load(&ds.dir)?.quota(&name) {
                    Some((e, d)) => format!("the default quota ε={e}, δ={d}"),
                    None => "no quota of their own (the dataset's budget applies)".into(),
                },
            };
            outln!("analyst {name} {} in {} with {q}", if replace { "set" } else { "added" }, ds.dir.join("analysts.toml").display());
            outln!("  connect: psql \"host=127.0.0.1 port=5433 user={name} dbname=dpq\" (after `dpq serve`)");
        }
        AnalystAction::List => {
            let analysts = Analysts::load(&ds.dir)?;
            let spent: std::collections::HashMap<String, dpq::privacy::accountant::filter::Totals> = ds.ledger("dpq")?.by_analyst()?.into_iter().collect();
            outln!("{:<20} {:>12} {:>12} {:>12} {:>10}", "analyst", "quota ε", "spent ε", "quota δ", "password");
            let mut names: Vec<&String> = analysts.analysts.keys().chain(spent.keys()).collect();
            names.sort();
            names.dedup();
            for n in names {
                let q = analysts.quota(n);
                let s = spent.get(n).copied().unwrap_or_default();
                outln!(
                    "{:<20} {:>12} {:>12} {:>12} {:>10}",
                    n,
                    q.map(|q| q.0.to_string()).unwrap_or_else(|| "-".into()),
                    s.epsilon.to_string(),
                    q.map(|q| q.1.to_string()).unwrap_or_else(|| "-".into()),
                    if analysts.analysts.get(n).and_then(|a| a.scram.as_ref()).is_some() { "set" } else { "-" }
                );
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "gateway"))]
fn analyst_command(_: &Path, _: super::AnalystAction) -> Result<()> {
    Err(UsageError("dpq analyst: this build has no gateway\n  hint: build with the default features".into()).into())
}

/// `--engine`: where bounded plans run.
fn backend_of(engine: &str) -> Result<dpq::session::Backend> {
    use dpq::session::Backend;
    Ok(match engine {
        "local" => Backend::Local,
        url if url.starts_with("df://") || url == "standalone" => {
            if !cfg!(feature = "ballista") {
                return Err(UsageError(format!(
                    "--engine {url}: this build runs queries locally only\n  hint: build with `cargo build --release --features ballista` to run the bounded plan on a Ballista cluster"
                ))
                .into());
            }
            Backend::Ballista(url.to_string())
        }
        other => return Err(UsageError(format!("--engine {other}: use `local`, `standalone` or `df://host:port`")).into()),
    })
}

/// `dpq cluster scheduler|executor`: runs until stopped.
#[cfg(feature = "ballista")]
fn cluster(role: super::ClusterRole) -> Result<()> {
    use super::ClusterRole;
    use dpq::cluster::{ExecutorOptions, SchedulerOptions};
    match role {
        ClusterRole::Scheduler { bind, external_host } => {
            eprintln!("dpq cluster scheduler: listening on {bind} (ready when GET http://{bind}/readyz answers 200)");
            runtime()?.block_on(dpq::cluster::run_scheduler(SchedulerOptions { bind, external_host }))?;
        }
        ClusterRole::Executor { scheduler, bind_host, external_host, flight_port, grpc_port, cores, work_dir, memory_limit } => {
            let (host, port) = scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| UsageError(format!("--scheduler {scheduler}: write HOST:PORT, e.g. --scheduler 127.0.0.1:50050")))?;
            let memory_limit = match memory_limit {
                Some(m) => Some(dpq::config::parse_bytes(&m).map_err(|e| UsageError(format!("--memory-limit {m}: {e}; write a size such as 4GiB")))?),
                None => None,
            };
            let opts = ExecutorOptions {
                scheduler: (host, port),
                bind_host,
                external_host,
                flight_port,
                grpc_port,
                cores,
                work_dir: work_dir.map(|d| d.to_string_lossy().into_owned()),
                memory_limit,
            };
            eprintln!("dpq cluster executor: joining the scheduler at {scheduler} (flight port {flight_port}, gRPC port {grpc_port})");
            runtime()?.block_on(dpq::cluster::run_executor(opts))?;
        }
    }
    Ok(())
}

#[cfg(not(feature = "ballista"))]
fn cluster(_role: super::ClusterRole) -> Result<()> {
    Err(UsageError("dpq cluster: this build has no Ballista support\n  hint: build with `cargo build --release --features ballista`".into()).into())
}

/// The session for a query or explain: the analyst, memory limit and engine of the flags.
async fn open_session(data: &Path, analyst: &str, p: &PrivacyArgs) -> Result<Session> {
    let backend = backend_of(&p.engine)?;
    // the memory limit is the data owner's (dpq.toml): an analyst who could set it
    // per query could search for the limit at which one person's rows decide
    // whether the query fits (found by the second totality attack)
    Ok(Session::open_with(data, SessionOptions { analyst: Some(analyst.to_string()), memory_limit: None, backend }).await?)
}

fn amount_flag(name: &str, v: &Option<String>) -> Result<Option<Amount>> {
    match v {
        None => Ok(None),
        Some(s) => s.parse::<Amount>().map(Some).map_err(|e| UsageError(format!("--{name} {s}: {e}")).into()),
    }
}

/// The query options of the flags (usage errors exit 2).
pub fn query_options(p: &PrivacyArgs, fresh: bool) -> Result<QueryOptions> {
    let mut o = QueryOptions::new().fresh(fresh);
    if let Some(e) = amount_flag("epsilon", &p.epsilon)? {
        if e.is_zero() {
            return Err(UsageError("--epsilon must be > 0".into()).into());
        }
        o = o.epsilon(e);
    }
    if let Some(d) = amount_flag("delta", &p.delta)? {
        if d >= Amount::ONE {
            return Err(UsageError("--delta must be < 1".into()).into());
        }
        o = o.delta(d);
    }
    if let Some(c) = p.confidence {
        if !(c > 0.0 && c < 1.0) {
            return Err(UsageError(format!("--confidence {c}: must be strictly between 0 and 1 (e.g. 0.95)")).into());
        }
        o = o.confidence(c);
    }
    if let Some(m) = p.mechanism {
        o = o.mechanism(m.into());
    }
    if let Some(n) = p.max_rows_per_unit {
        o = o.max_rows_per_unit(n);
    }
    if let Some(n) = p.max_groups_per_unit {
        o = o.max_groups_per_unit(n);
    }
    if let Some(n) = p.max_rows_per_group {
        o = o.max_rows_per_group(n);
    }
    if p.fixed_bounds {
        o = o.auto_bounds(false);
    } else if p.auto_bounds {
        o = o.auto_bounds(true);
    }
    Ok(o)
}
