//! dpq: differentially private analytics over people's event logs.
//!
//! Event logs are ingested into Parquet tables ([`ingest`]); analysts write
//! ordinary aggregate SQL, which [`engine`] rewrites so that each person's
//! influence is bounded and executes with DataFusion; every released number goes
//! through the exact mechanisms in [`privacy`] and is charged to the durable,
//! hash-chained budget [`ledger`] before it is shown. [`report`] turns a TOML spec
//! into a self-contained yearly report.

pub mod cli;
pub mod config;
pub mod dataset;
pub mod engine;
pub mod generate;
pub mod ingest;
pub mod ledger;
pub mod privacy;
pub mod report;
