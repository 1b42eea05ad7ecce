//! `unionfs-fuse`: mount a union of lower dirs and an optional upper dir.

fn main() {
    let config = match unionfs::options::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    for w in &config.warnings {
        eprintln!("unionfs-fuse: warning: {w}");
    }
    let level = if config.debug { "debug" } else { "warn" };
    unionfs::logging::init(level, None);
    let config = match unionfs::options::validate(config) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("unionfs-fuse: {msg}");
            std::process::exit(1);
        }
    };
    std::process::exit(unionfs::adapter::mount::run(config, switches()));
}

/// The switches tests set in the environment, read here once:
/// `UNIONFS_DIR_FDS=N` keeps at most N layer dir fds open (1 makes
/// reopening the common case), `UNIONFS_OPENDIR` (any value) serves OPENDIR
/// as for kernels that cannot skip it.
fn switches() -> unionfs::adapter::Switches {
    unionfs::adapter::Switches {
        dir_fds: std::env::var("UNIONFS_DIR_FDS")
            .ok()
            .and_then(|v| v.parse().ok()),
        opendir: std::env::var_os("UNIONFS_OPENDIR").is_some(),
    }
}
