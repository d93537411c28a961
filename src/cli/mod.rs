//! Command-line definitions (clap) and the dispatch from a parsed command to the
//! library. Output formatting for people lives here; the work lives in the
//! library modules.

/// `println!` that returns the write error (a closed pipe) instead of panicking.
macro_rules! outln {
    () => { $crate::cli::out("\n")? };
    ($($t:tt)*) => { $crate::cli::out(&format!("{}\n", format_args!($($t)*)))? };
}

/// `print!` that returns the write error instead of panicking.
macro_rules! outp {
    ($($t:tt)*) => { $crate::cli::out(&format!($($t)*))? };
}

mod commands;
pub mod output;
pub mod progress;
mod shell;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use dpq::config::MechanismKind;
use dpq::storage::FileFormat;

/// File formats on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum FormatArg {
    #[default]
    Csv,
    Jsonl,
    Parquet,
}

impl From<FormatArg> for FileFormat {
    fn from(f: FormatArg) -> FileFormat {
        match f {
            FormatArg::Csv => FileFormat::Csv,
            FormatArg::Jsonl => FileFormat::Jsonl,
            FormatArg::Parquet => FileFormat::Parquet,
        }
    }
}

pub use commands::run;

/// Write to stdout; a closed pipe (`dpq budget --log | head -1`) surfaces as an
/// error the binary treats as success.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Differentially private analytics over people's event logs.
#[derive(Debug, Parser)]
#[command(name = "dpq", version, about, long_about = None, propagate_version = true)]
pub struct Args {
    /// The dataset directory (holding dpq.toml).
    #[arg(long, global = true, default_value = ".", value_name = "DIR")]
    pub data: PathBuf,
    /// Who is asking, recorded with every charge (default: $DPQ_ANALYST, else the OS user).
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub analyst: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The one-command tour: synthetic logs → ingest → DP annual report.
    ///
    /// Examples:
    ///   dpq demo                          # 20 000 people, two years: dpq-demo/report/index.html
    ///   dpq demo --users 2000 --days 90   # a quicker one
    #[command(verbatim_doc_comment)]
    Demo {
        /// Where to put the demo dataset and report.
        #[arg(long, default_value = "dpq-demo", value_name = "DIR")]
        out: PathBuf,
        /// Number of synthetic people.
        #[arg(long, default_value_t = 20_000, value_name = "N")]
        users: u64,
        /// Days of logs (two years by default).
        #[arg(long, default_value_t = 731, value_name = "N")]
        days: u32,
        /// Seed of the synthetic logs (the same seed gives the same logs).
        #[arg(long, default_value_t = 7, value_name = "N")]
        seed: u64,
        /// Median messages per person per day in the synthetic logs.
        #[arg(long, default_value_t = 0.6)]
        messages_per_day: f64,
    },
    /// Create a dataset directory with a commented dpq.toml.
    ///
    /// Example:
    ///   dpq init mydata && dpq --data mydata tables
    #[command(verbatim_doc_comment)]
    Init {
        /// The directory to create (it must not hold a dpq.toml yet).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The dataset's tables, or one table's columns, from dpq.toml (public:
    /// names, types, privacy units, bounds, domains; never the data).
    ///
    /// Examples:
    ///   dpq tables
    ///   dpq tables messages
    ///   dpq query "SHOW TABLES"   and   dpq query "DESCRIBE messages"   say the same
    #[command(verbatim_doc_comment)]
    Tables {
        /// A table to describe (its columns).
        #[arg(value_name = "TABLE")]
        table: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Generate synthetic event logs of a messaging app: users, messages (with
    /// emoji), calls, payments and the emoji catalogue, one file per table.
    ///
    /// Examples:
    ///   dpq generate --users 1000 --days 365 --out logs
    ///   dpq generate --users 200000 --days 30 --out logs --format parquet
    #[command(verbatim_doc_comment)]
    Generate {
        /// Number of synthetic people.
        #[arg(long, value_name = "N")]
        users: u64,
        /// Days of logs from --start.
        #[arg(long, value_name = "N")]
        days: u32,
        /// Directory for the files (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seed (the same seed gives the same logs).
        #[arg(long, default_value_t = 42, value_name = "N")]
        seed: u64,
        /// File format.
        #[arg(long, value_enum, default_value_t = FormatArg::Csv)]
        format: FormatArg,
        /// First day of the logs (YYYY-MM-DD).
        #[arg(long, default_value = "2025-01-01")]
        start: chrono::NaiveDate,
        /// Median messages per person per day (the heavy tail makes the mean ~2.2× this).
        #[arg(long, default_value_t = 2.0)]
        messages_per_day: f64,
    },
    /// Ingest CSV, JSON Lines or Parquet files into a table declared in
    /// dpq.toml. Rows that do not match the declared types go to
    /// quarantine/ with the reason; the same file twice is refused (--force).
    ///
    /// Examples:
    ///   dpq --data mydata ingest messages logs/messages.csv
    ///   dpq --data mydata ingest payments 2025-*.parquet
    #[command(verbatim_doc_comment)]
    Ingest {
        /// The table (declared in dpq.toml; see `dpq tables`).
        #[arg(value_name = "TABLE")]
        table: String,
        /// The files to ingest.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Ingest even if the same content was ingested before.
        #[arg(long)]
        force: bool,
        /// Input format (default: from the file extension).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// Answer aggregate SQL with differential privacy: each noisy value with its
    /// error bar, charged to the dataset's budget (a repeated question replays
    /// its stored answer for free).
    ///
    /// Examples:
    ///   dpq query "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind"
    ///   dpq query --epsilon 0.2 "SELECT AVG(length) FROM messages"
    ///   dpq query -f questions.sql        # several statements, separated by ;
    ///   echo "SELECT COUNT(*) FROM calls" | dpq query -
    ///   dpq query "SHOW TABLES; DESCRIBE messages"
    #[command(verbatim_doc_comment)]
    Query {
        /// The SQL: one or more statements separated by `;`, or `-` to read them from stdin.
        #[arg(value_name = "SQL", required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// Read the SQL from FILE (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Draw new noise and charge again instead of replaying a stored answer.
        #[arg(long)]
        fresh: bool,
    },
    /// An interactive SQL shell: statements end with `;` and may span lines,
    /// history (~/.dpq_history), Tab completes tables, columns and keywords.
    /// Every query is charged as `dpq query` charges it.
    ///
    /// Dot commands: .tables  .schema [TABLE]  .budget  .explain on|off
    ///               .format table|csv|json  .help  .quit
    ///
    /// Example:
    ///   cd mydata && dpq shell
    ///   dpq> SELECT chat_kind, COUNT(*)
    ///     -> FROM messages GROUP BY chat_kind;
    #[command(verbatim_doc_comment)]
    Shell {
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// How answers are printed (also `.format` in the shell).
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// What a query would cost and how accurate it would be (spends nothing):
    /// the privacy unit, the contribution limits, each aggregate's noise and
    /// expected error in the query's units, the budget before and after.
    ///
    /// Examples:
    ///   dpq explain "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind"
    ///   dpq explain --epsilon 0.1 "SELECT MEDIAN(length) FROM messages" --format json
    #[command(verbatim_doc_comment)]
    Explain {
        /// The query (or `-` to read it from stdin).
        #[arg(value_name = "SQL")]
        sql: String,
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Produce a multi-query report from a TOML spec (docs/reports.md): one
    /// charge, its ε split over the sections, every number with its error bar,
    /// and the privacy statement, as index.html, report.md and report.json.
    ///
    /// Examples:
    ///   dpq report --builtin annual --plan      # the yearly report's ε split and expected errors
    ///   dpq report --builtin annual --out report
    ///   dpq report my_report.toml --out report
    #[command(verbatim_doc_comment)]
    Report {
        /// The report spec (TOML; see docs/reports.md).
        #[arg(value_name = "SPEC", required_unless_present = "builtin", conflicts_with = "builtin")]
        spec: Option<PathBuf>,
        /// A spec built into dpq instead of a file: `annual` (the messaging app's year in review).
        #[arg(long, value_name = "NAME", value_parser = ["annual"])]
        builtin: Option<String>,
        /// Output directory for index.html, report.md and report.json.
        #[arg(long, default_value = "report", value_name = "DIR")]
        out: PathBuf,
        /// Print the plan (per-section ε and expected error) without spending.
        #[arg(long)]
        plan: bool,
        /// Draw new noise and charge again instead of replaying the stored report.
        #[arg(long)]
        fresh: bool,
    },
    /// Show the privacy budget ledger, verify it, export it, or change the budget.
    ///
    /// Examples:
    ///   dpq budget                         # total, spent, remaining
    ///   dpq budget --log --limit 20        # who spent what, when
    ///   dpq budget --by-analyst
    ///   dpq budget --verify                # recompute the hash chain and the totals
    ///   dpq budget --export public/        # the public statement
    ///   dpq budget set --epsilon 20 --reason "2026 report approved by the DPO"
    #[command(verbatim_doc_comment)]
    Budget {
        #[command(subcommand)]
        action: Option<BudgetAction>,
        /// List the entries (who, when, what, how much).
        #[arg(long)]
        log: bool,
        /// With --log: the first entry to list.
        #[arg(long, value_name = "ID")]
        from: Option<i64>,
        /// With --log: how many entries to list.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: i64,
        /// Recompute the whole hash chain, totals and result hashes; report the first bad entry.
        #[arg(long)]
        verify: bool,
        /// Print the ledger's head (ENTRIES:HASH) for publishing; with --verify, check the chain against a published head.
        #[arg(long, value_name = "ENTRIES:HASH", num_args = 0..=1, default_missing_value = "")]
        anchor: Option<String>,
        /// Spending per analyst.
        #[arg(long)]
        by_analyst: bool,
        /// Write the public statement (statement.json and index.html) into DIR.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Serve the dataset to PostgreSQL clients (psql, psycopg, JDBC, BI tools):
    /// a differentially private SQL gateway. Analysts log in with the
    /// passwords of analysts.toml (`dpq analyst add`); every answer is charged
    /// to the dataset's budget and the analyst's quota.
    ///
    /// Example:
    ///   dpq analyst add alice --quota-epsilon 2
    ///   dpq serve --listen 127.0.0.1:5433
    ///   psql "host=127.0.0.1 port=5433 user=alice dbname=dpq" -c "SELECT COUNT(*) FROM messages"
    #[command(verbatim_doc_comment)]
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5433", value_name = "HOST:PORT")]
        listen: std::net::SocketAddr,
        /// TLS certificate chain (PEM); with --tls-key, clients can connect with sslmode=require.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Connections served at once (default: dpq.toml [gateway] max_connections, else 64).
        #[arg(long, value_name = "N")]
        max_connections: Option<usize>,
        /// Cancel a statement after this long, e.g. 300s or 5min; 0 for none
        /// (default: dpq.toml [gateway] statement_timeout, else 300s).
        #[arg(long, value_name = "DURATION")]
        statement_timeout: Option<String>,
        /// Execution engine for bounded plans: `local`, `standalone` or `df://host:port`.
        #[arg(long, default_value = "local")]
        engine: String,
        /// Listen on a non-loopback address without TLS (answers and queries
        /// then cross the network in clear; passwords never do: SCRAM).
        #[arg(long)]
        allow_plaintext: bool,
    },
    /// Manage the analysts who may connect to `dpq serve` (analysts.toml).
    ///
    /// Example:
    ///   dpq analyst add alice --quota-epsilon 2 --quota-delta 1e-7
    ///   echo "$PASSWORD" | dpq analyst add bob --quota-epsilon 1
    ///   dpq analyst list
    #[command(verbatim_doc_comment)]
    Analyst {
        #[command(subcommand)]
        action: AnalystAction,
    },
    /// Run a Ballista scheduler or executor that can execute dpq's bounded plans
    /// (a build with `--features ballista`).
    ///
    /// Example, on one machine:
    ///   dpq cluster scheduler --bind 127.0.0.1:50050 &
    ///   dpq cluster executor --scheduler 127.0.0.1:50050 --flight-port 50051 --grpc-port 50052 &
    ///   dpq --data mydata query --engine df://127.0.0.1:50050 "SELECT COUNT(*) FROM messages"
    #[command(verbatim_doc_comment)]
    Cluster {
        #[command(subcommand)]
        role: ClusterRole,
    },
    /// Check an exported public statement, without the data: its hash chain,
    /// totals and figures (what anyone holding statement.json can do).
    ///
    /// Example:
    ///   dpq verify-statement public/ --anchor 42:5f3a…   # against a published head
    #[command(verbatim_doc_comment)]
    VerifyStatement {
        /// The directory `dpq budget --export` wrote.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A published head (ENTRIES:HASH) the statement must contain.
        #[arg(long, value_name = "ENTRIES:HASH")]
        anchor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalystAction {
    /// Add an analyst with a password (asked at the prompt, or read from the
    /// first line of stdin) and a quota inside the dataset's budget.
    Add {
        /// The analyst's name: the PostgreSQL user name they connect as.
        name: String,
        /// ε this analyst may spend in total (default: analysts.toml [defaults], else none).
        #[arg(long, value_name = "EPSILON")]
        quota_epsilon: Option<String>,
        /// δ this analyst may spend in total (default: 0 with --quota-epsilon).
        #[arg(long, value_name = "DELTA", requires = "quota_epsilon")]
        quota_delta: Option<String>,
        /// Replace an existing analyst's password (and quota, with --quota-epsilon; without it their quota stays).
        #[arg(long)]
        replace: bool,
    },
    /// List the analysts, their quotas and what they have spent.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ClusterRole {
    /// A scheduler: accepts plans from dpq and hands their tasks to executors.
    Scheduler {
        /// Address to listen on (`0.0.0.0:50050` for every interface).
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// Host name executors and dpq use to reach this scheduler (default: the --bind host).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
    },
    /// An executor: runs tasks (scans, per-person bounding, per-group totals).
    /// Executors read the dataset's Parquet parts by path: mount the dataset
    /// directory at the same path on every executor and on the dpq host.
    Executor {
        /// The scheduler to join.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        scheduler: String,
        /// Host to bind.
        #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
        bind_host: String,
        /// Host name others use to reach this executor (default: the --bind-host).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Port for Arrow Flight (shuffle data and results).
        #[arg(long, default_value_t = 50051, value_name = "PORT")]
        flight_port: u16,
        /// Port for the executor's gRPC service.
        #[arg(long, default_value_t = 50052, value_name = "PORT")]
        grpc_port: u16,
        /// Tasks to run at once (default: the number of cores).
        #[arg(long, value_name = "N")]
        cores: Option<usize>,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Memory for query execution, e.g. 4GiB (default: a fraction of the machine's).
        #[arg(long, value_name = "SIZE")]
        memory_limit: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BudgetAction {
    /// Change the dataset's budget (the only way to change it): records who and why.
    Set {
        /// The new total ε.
        #[arg(long)]
        epsilon: String,
        /// The new total δ (default: unchanged).
        #[arg(long)]
        delta: Option<String>,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
        /// The admission rule: basic composition or the zCDP filter (default: unchanged).
        #[arg(long, value_enum)]
        accountant: Option<AccountantArg>,
    },
    /// Record dpq.toml's current privacy settings (public tables, privacy units,
    /// one row per person) after an intended change: records who and why.
    AcceptConfig {
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
    /// Reopen a ledger closed by a recorded verification failure, once it
    /// verifies again (restored from a backup, or a false alarm): records who and why.
    Reopen {
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccountantArg {
    Basic,
    Zcdp,
}

/// Per-query privacy parameters (override dpq.toml [defaults]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrivacyArgs {
    /// ε to spend on this query (default: dpq.toml [defaults] epsilon).
    #[arg(long, value_name = "EPSILON")]
    pub epsilon: Option<String>,
    /// δ to spend on this query (default: dpq.toml [defaults] delta).
    #[arg(long, value_name = "DELTA")]
    pub delta: Option<String>,
    /// L0: GROUP BY groups one person may touch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_groups_per_unit: Option<u64>,
    /// Linf: rows one person adds to one group.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_group: Option<u64>,
    /// L1: rows one person adds to the query in total.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_unit: Option<u64>,
    /// The noise: laplace (pure ε) or gaussian (zCDP, needs δ > 0) (default: dpq.toml [defaults] mechanism).
    #[arg(long, value_enum)]
    pub mechanism: Option<MechanismArg>,
    /// Confidence level of the reported intervals (default: dpq.toml [defaults] confidence, else 0.95).
    #[arg(long, value_name = "LEVEL")]
    pub confidence: Option<f64>,
    /// Choose the contribution limits from the data (the default unless a --max-… limit is given).
    #[arg(long, conflicts_with = "fixed_bounds")]
    pub auto_bounds: bool,
    /// Use the fixed limits of dpq.toml ([defaults] max_…) instead of choosing them from the data.
    #[arg(long)]
    pub fixed_bounds: bool,
    /// Execution engine: `local` (default) or a Ballista scheduler `df://host:port`.
    #[arg(long, default_value = "local")]
    pub engine: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MechanismArg {
    Laplace,
    Gaussian,
}

impl From<MechanismArg> for MechanismKind {
    fn from(m: MechanismArg) -> Self {
        match m {
            MechanismArg::Laplace => MechanismKind::Laplace,
            MechanismArg::Gaussian => MechanismKind::Gaussian,
        }
    }
}

/// A usage error detected after parsing (bad flag value): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A closed pipe (`dpq budget --log | head -1`): the reader's choice, not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// An error and its causes, one per line.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut s = err.to_string();
    for cause in err.chain().skip(1) {
        s.push_str(&format!("\n  caused by: {cause}"));
    }
    s
}

pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<UsageError>().is_some() { 2 } else { 1 }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every command shows an example (in its own help or its parent's), and
    /// every argument and flag says what it is.
    #[test]
    fn every_command_has_an_example_and_every_argument_a_description() {
        fn walk(c: &clap::Command, path: &str, parent_example: bool, out: &mut Vec<String>) {
            for sub in c.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let p = format!("{path} {}", sub.get_name());
                let about = sub.get_long_about().or(sub.get_about()).map(|s| s.to_string()).unwrap_or_default();
                let example = about.contains("Example");
                if !example && !parent_example {
                    out.push(format!("{p}: no example"));
                }
                for a in sub.get_arguments() {
                    if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                        continue;
                    }
                    if a.get_help().is_none() && a.get_long_help().is_none() {
                        out.push(format!("{p} {}: no description", a.get_id()));
                    }
                }
                walk(sub, &p, example, out);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Args::command(), "dpq", false, &mut missing);
        assert!(missing.is_empty(), "help without an example or a description:\n{}", missing.join("\n"));
    }
}
