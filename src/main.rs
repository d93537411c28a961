//! The `dpq` binary: parse arguments, run, print the error chain, exit.
//! Exit codes: 0 success, 1 error, 2 usage error.

use clap::Parser;

fn main() {
    dpq::engine::total::install_panic_hook();
    let args = dpq::cli::Args::parse();
    match dpq::cli::run(args) {
        Ok(()) => {}
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(dpq::cli::exit_code(&err));
        }
    }
}
