//! `unionfs-run`: run a command in a layered rootfs mounted with unionfs-fuse
//! (see `unionfs::launcher` for the steps).

use clap::Parser;
use unionfs::launcher::{self, Cli};

fn main() {
    // Nothing here may start a thread: the launcher may enter a user
    // namespace, which only a single-threaded process can.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 125 like other launcher failures, not 2,
            // which a command could return.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 125 } else { 0 });
        }
    };
    let level = if cli.verbose { "debug" } else { "warn" };
    unionfs::logging::init(level, Some("unionfs-run"));
    if let Some(job) = cli.layer_job() {
        std::process::exit(launcher::run_layer_job(&job));
    }
    if let Some(prune) = cli.store_job() {
        std::process::exit(launcher::oci_image::run_store_job(&cli.store_dir(), prune));
    }
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("unionfs-run: {msg}");
            std::process::exit(launcher::error::EXIT_LAUNCHER);
        }
    };
    let code = match launcher::run(&config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("unionfs-run: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
