//! The `seglab` command: parses the command line and hands over to [`seglab::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = seglab::cli::Cli::parse();
    seglab::cli::init_logging(cli.verbose, cli.quiet);
    match seglab::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line that names the file and the problem; the chain carries the context.
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
