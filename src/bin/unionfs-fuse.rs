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
    std::process::exit(unionfs::adapter::mount::run(config));
}
