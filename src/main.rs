//! The `dpq` binary: parse arguments, run, print the error chain, exit.
//! Exit codes: 0 success, 1 error, 2 usage error.

use clap::Parser;

mod cli;

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
