//! Logger setup for the binaries: env_logger, except that fuser's report of
//! a reply to an interrupted request is demoted from error to debug.
//!
//! When a caller is interrupted (Ctrl-C, a killed command at teardown), the
//! kernel forgets the request and answers our late reply with ENOENT; fuser
//! logs that as "Failed to send FUSE reply". Nothing is wrong, and the line
//! made users look for lost data.

use log::{Level, Log, Metadata, Record};

/// Installs the logger. `default_filter` applies when `RUST_LOG` is unset;
/// `prefix` (e.g. "unionfs-run") gives lines of the form "PREFIX: LEVEL: MSG".
pub fn init(default_filter: &str, prefix: Option<&'static str>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    if let Some(prefix) = prefix {
        builder.format(move |buf, rec| {
            use std::io::Write;
            let level = rec.level().as_str().to_ascii_lowercase();
            writeln!(buf, "{prefix}: {level}: {}", rec.args())
        });
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Demote { inner })).is_ok() {
        log::set_max_level(max);
    }
}

struct Demote {
    inner: env_logger::Logger,
}

/// fuser's line for a reply the kernel no longer waits for (ENOENT).
fn is_reply_to_interrupted(record: &Record) -> bool {
    record.level() == Level::Error
        && record.target().starts_with("fuser::reply")
        && record.args().to_string().ends_with("(os error 2)")
}

impl Log for Demote {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if is_reply_to_interrupted(record) {
            let demoted = Record::builder()
                .args(*record.args())
                .level(Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.inner.matches(&demoted) {
                self.inner.log(&demoted);
            }
            return;
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_says(target: &str, level: Level, msg: &str) -> bool {
        is_reply_to_interrupted(
            &Record::builder()
                .args(format_args!("{msg}"))
                .level(level)
                .target(target)
                .build(),
        )
    }

    #[test]
    fn only_fusers_enoent_reply_error_is_demoted() {
        let enoent = "Failed to send FUSE reply: No such file or directory (os error 2)";
        assert!(record_says("fuser::reply", Level::Error, enoent));
        assert!(!record_says(
            "fuser::reply",
            Level::Error,
            "Failed to send FUSE reply: Broken pipe (os error 32)"
        ));
        assert!(!record_says("unionfs::union", Level::Error, enoent));
        assert!(!record_says("fuser::reply", Level::Warn, enoent));
    }
}
