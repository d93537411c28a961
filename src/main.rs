//! The `dpq` binary: parse arguments, run, print the error chain, exit.
//! Exit codes: 0 success, 1 error, 2 usage error.

use clap::Parser;

mod cli;

/// mimalloc: the bounding operator allocates many small buffers per person,
/// and with glibc's malloc allocation took ~40 % of a query (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    dpq::install_panic_hook();
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(()) => {}
        // a closed pipe (`dpq budget --log | head -1`) is the reader's choice, not a failure
        Err(err) if cli::is_broken_pipe(&err) => {}
        Err(err) => {
            eprintln!("error: {}", cli::error_text(&err));
            std::process::exit(cli::exit_code(&err));
        }
    }
}
