//! The `seglab` command: parses the command line and hands over to [`seglab::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = seglab::cli::Cli::parse();
    seglab::cli::init_logging(cli.verbose, cli.quiet);
    match in_compute_pool(|| seglab::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // One line that names the file and the problem; the chain carries the context.
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command with the main thread as one of the threads of rayon's global pool (the
/// CPU backend's threads).
///
/// A parallel operation started from a thread outside the pool is queued into it and waited
/// for on a futex, two thread wake-ups per operation; started from a pool thread it is split by
/// work stealing. A network's forward and backward passes are hundreds of such operations, so
/// at `cpu-small` this made training steps and Vox2Vox prediction about 10–25 % faster
/// (interleaved `seglab bench` runs). The work stays on the main thread:
/// moved to a spawned worker, its large tensors came from a glibc thread arena, which maps and
/// unmaps every block above 64 MiB afresh (the `paper` U-Net's training step took 23 s
/// instead of 13 s).
fn in_compute_pool<R>(run: impl FnOnce() -> R) -> R {
    // Fails only if the pool already exists, which nothing before this point creates; the
    // command then still runs, with its parallel work queued into that pool.
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
    run()
}
