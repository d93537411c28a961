//! dpq: differentially private analytics over people's event logs.
//!
//! Event logs are ingested into Parquet tables ([`ingest`]); analysts write
//! ordinary aggregate SQL, which [`engine`] rewrites so that each person's
//! influence is bounded and executes with DataFusion; every released number goes
//! through the exact mechanisms in [`privacy`] and is charged to the durable,
//! hash-chained budget [`ledger`] before it is shown. [`report`] turns a TOML spec
//! into a self-contained yearly report.

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
pub mod session;
pub mod storage;

pub use session::{Answer, Error, PrivacyInfo, QueryOptions, Session, SessionOptions};

/// Install dpq's panic hook: a panic inside the evaluation of private rows is
/// caught and never printed (its message could quote a private value); any
/// other panic prints where it happened, not its message. Sessions install it.
pub fn install_panic_hook() {
    engine::total::install_panic_hook()
}
