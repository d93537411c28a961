//! dpq's integration tests: one binary (like ripgrep's), driving the real CLI on
//! temporary dataset directories.

mod cli;
mod gateway;
mod golden;
mod hostile;
mod ingest;
mod ledger;
mod report;
mod util;
