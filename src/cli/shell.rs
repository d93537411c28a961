//! `dpq shell`: an interactive SQL shell in the manner of datafusion-cli and
//! the DuckDB shell, over one [`Session`]. Statements end with `;` and may
//! span lines; history is kept in `~/.dpq_history`; Tab completes table and
//! column names (from dpq.toml), SQL keywords and dot commands. Every query is
//! charged exactly as `dpq query` charges it; `.explain on` explains instead
//! (spends nothing).

use anyhow::Result;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use super::OutputFormat;
use dpq::{QueryOptions, Session};

const DOT_HELP: &str = "\
.tables              the dataset's tables (from dpq.toml)
.schema [TABLE]      a table's columns: types, bounds, domains (all tables without TABLE)
.budget              the budget: total, spent, remaining
.explain on|off      with on, statements are explained (cost, accuracy) instead of run: nothing is spent
.format table|csv|json   how answers are printed
.help                this text
.quit                leave (also Ctrl-D)
SQL statements end with ; and may span lines. Tab completes names.";

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "WITH",
    "COUNT",
    "SUM",
    "AVG",
    "MEDIAN",
    "PERCENTILE_CONT",
    "WITHIN GROUP",
    "STDDEV",
    "VARIANCE",
    "date_part",
    "date_trunc",
    "EXTRACT",
    "SHOW TABLES",
    "DESCRIBE",
];

struct ShellHelper {
    words: Vec<String>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).map(|i| i + 1).unwrap_or(0);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lw = word.to_lowercase();
        let mut out: Vec<String> = self.words.iter().filter(|w| w.to_lowercase().starts_with(&lw) && w.len() > word.len()).cloned().collect();
        out.sort();
        out.dedup();
        Ok((start, out))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let t = input.trim();
        if t.is_empty() || t.starts_with('.') || dpq::sqltext::is_complete(input) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

impl Helper for ShellHelper {}

fn history_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("DPQ_HISTORY") {
        return Some(p.into());
    }
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".dpq_history"))
}

/// Run the shell until `.quit` or end of input.
pub async fn run(session: &Session, options: &QueryOptions, mut format: OutputFormat) -> Result<()> {
    let config = &session.dataset().config;
    let mut words: Vec<String> = KEYWORDS.iter().map(|s| s.to_string()).collect();
    words.extend([".tables", ".schema", ".budget", ".explain", ".format", ".help", ".quit"].map(String::from));
    for (t, tc) in &config.tables {
        words.push(t.clone());
        for c in tc.columns.keys() {
            words.push(c.clone());
            words.push(format!("{t}.{c}"));
        }
    }
    let mut rl: Editor<ShellHelper, rustyline::history::DefaultHistory> =
        Editor::with_config(rustyline::Config::builder().auto_add_history(true).max_history_size(5000)?.build())?;
    rl.set_helper(Some(ShellHelper { words }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let status = session.budget()?;
    eprintln!(
        "dpq shell on {} — ε {} of {} left. Statements end with ;  .help for commands, .quit to leave.",
        session.dataset().dir.display(),
        status.remaining_epsilon(),
        status.budget.epsilon
    );
    let mut explain = false;
    loop {
        let line = match rl.readline("dpq> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(cmd) = t.strip_prefix('.') {
            let mut parts = cmd.split_whitespace();
            let name = parts.next().unwrap_or("");
            let arg = parts.next();
            let result: Result<bool> = (|| {
                match name {
                    "quit" | "exit" | "q" => return Ok(true),
                    "help" => eprintln!("{DOT_HELP}"),
                    "tables" => super::out(&super::output::render_listing(&dpq::config::describe::tables(config), format))?,
                    "schema" => match arg {
                        Some(t) => super::out(&super::output::render_listing(
                            &dpq::config::describe::describe(config, t).map_err(|e| anyhow::anyhow!("{e}"))?,
                            format,
                        ))?,
                        None => {
                            for t in config.tables.keys() {
                                super::out(&format!("{t}\n"))?;
                                super::out(&super::output::render_listing(
                                    &dpq::config::describe::describe(config, t).map_err(|e| anyhow::anyhow!("{e}"))?,
                                    format,
                                ))?;
                            }
                        }
                    },
                    "budget" => {
                        let s = session.budget()?;
                        super::out(&format!(
                            "ε {} of {} left (spent {}), δ {} of {} left · {} charges · {}\n",
                            s.remaining_epsilon(),
                            s.budget.epsilon,
                            s.epsilon_spent,
                            s.remaining_delta(),
                            s.budget.delta,
                            s.totals.charges,
                            s.budget.rule
                        ))?;
                    }
                    "explain" => match arg {
                        Some("on") => {
                            explain = true;
                            eprintln!("explain on: statements are explained, not run (nothing is spent)");
                        }
                        Some("off") => {
                            explain = false;
                            eprintln!("explain off: statements are run and charged");
                        }
                        _ => eprintln!("usage: .explain on|off (now {})", if explain { "on" } else { "off" }),
                    },
                    "format" => match arg {
                        Some("table") => format = OutputFormat::Table,
                        Some("csv") => format = OutputFormat::Csv,
                        Some("json") => format = OutputFormat::Json,
                        _ => eprintln!("usage: .format table|csv|json"),
                    },
                    other => {
                        let known = ["tables", "schema", "budget", "explain", "format", "help", "quit"];
                        match dpq::sqltext::did_you_mean(other, known) {
                            Some(s) => eprintln!("unknown command .{other}: did you mean .{s}? (.help lists them)"),
                            None => eprintln!("unknown command .{other} (.help lists them)"),
                        }
                    }
                }
                Ok(false)
            })();
            match result {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        let statements = match dpq::sqltext::split(&line) {
            Ok(s) => s.into_iter().map(|s| s.trim().to_string()).collect::<Vec<_>>(),
            Err(e) => {
                eprintln!("error: the SQL does not tokenize: {e}");
                continue;
            }
        };
        let r = if explain {
            explain_all(session, &statements, options, format).await
        } else {
            super::commands::run_statements(session, &statements, options, format).await
        };
        if let Err(e) = r {
            if super::is_broken_pipe(&e) {
                break;
            }
            eprintln!("error: {}", super::error_text(&e));
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}

async fn explain_all(session: &Session, statements: &[String], options: &QueryOptions, format: OutputFormat) -> Result<()> {
    for sql in statements {
        let e = session.explain(sql, options).await?;
        match format {
            OutputFormat::Json => super::out(&(serde_json::to_string_pretty(&e)? + "\n"))?,
            _ => super::out(&e.to_text())?,
        }
    }
    Ok(())
}
