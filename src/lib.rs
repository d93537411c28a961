//! dpq: differentially private analytics over people's event logs.
//!
//! Event logs are ingested into Parquet tables ([`ingest`], stored as
//! [`storage`] describes); analysts write ordinary aggregate SQL through a
//! [`Session`] — the only door to private data — which rewrites it so that each
//! person's influence is bounded, executes it with DataFusion, releases every
//! number through the exact mechanisms in [`privacy`] and charges it to the
//! durable, hash-chained budget [`ledger`] before it is returned. A
//! [`report`] spec turns into a self-contained yearly report.
//!
//! ```no_run
//! # async fn run() -> Result<(), dpq::Error> {
//! let s = dpq::Session::open("mydata").await?;
//! let opts = dpq::QueryOptions::new().epsilon("0.5".parse()?);
//! let a = s.query("SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind", &opts).await?;
//! // an Arrow RecordBatch: chat_kind, n, n_stddev, n_ci_low, n_ci_high
//! println!("{} rows, ε = {} spent", a.batch.num_rows(), a.privacy.unwrap().epsilon);
//! # Ok(()) }
//! ```

// `!(x > 0.0)` is how the code says "not a positive number, NaN included"
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// errors carry the construct, why and the fix as text; their size is not hot
#![allow(clippy::result_large_err, clippy::large_enum_variant)]
// DataFusion's types make some signatures long; aliases would hide what they are
#![allow(clippy::type_complexity)]

/// Ballista processes that can run dpq's bounded plans (cargo feature `ballista`):
/// `dpq cluster scheduler` and `dpq cluster executor` call these.
#[cfg(feature = "ballista")]
pub mod cluster {
    pub use crate::engine::cluster::{ExecutorOptions, SchedulerOptions};

    /// Run a Ballista scheduler with dpq's functions registered, until the process stops.
    pub async fn run_scheduler(opts: SchedulerOptions) -> Result<(), crate::Error> {
        Ok(crate::engine::cluster::run_scheduler(opts).await?)
    }

    /// Run a Ballista executor with dpq's functions registered, until the process
    /// stops or the scheduler stops it.
    pub async fn run_executor(opts: ExecutorOptions) -> Result<(), crate::Error> {
        Ok(crate::engine::cluster::run_executor(opts).await?)
    }
}
pub mod config;
pub mod dataset;
pub(crate) mod engine;
pub mod generate;
pub mod ingest;
pub mod ledger;
pub mod present;
pub mod privacy;
pub mod progress;
pub mod report;
/// `dpq serve`: the PostgreSQL-wire gateway (cargo feature `gateway`, on by default).
#[cfg(feature = "gateway")]
pub mod server;
pub mod session;
pub mod sqltext;
pub mod storage;

pub use session::{Answer, Error, PrivacyInfo, QueryOptions, Session, SessionOptions};

/// Arrow, as dpq uses it (DataFusion's re-export): answers are Arrow record batches.
pub use datafusion::arrow;

/// Install dpq's panic hook: a panic inside the evaluation of private rows is
/// caught and never printed (its message could quote a private value); any
/// other panic prints where it happened, not its message. Sessions install it.
pub fn install_panic_hook() {
    engine::total::install_panic_hook()
}
