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
        Err(err) if err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)) => {}
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(cli::exit_code(&err));
        }
    }
}
