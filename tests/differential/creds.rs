//! Per-thread credentials for ops run as another user.
//!
//! Linux keeps fsuid/fsgid and the supplementary groups per thread when they
//! are set with the raw syscalls (glibc's wrappers would broadcast setgroups
//! to every thread of the test process). Changing the fsuid from 0 to another
//! id also drops the fs capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN,
//! ...) from the thread's effective set, so the ops get ordinary DAC checks,
//! and FUSE requests carry that uid/gid. Each op runs in a fresh scoped
//! thread, so nothing leaks into the test thread.
//!
//! This is the only `unsafe` of the differential harness (common/sys.rs holds
//! the rest of the suite's); each block is one syscall on plain integers.

/// Runs `f` in a new thread whose fsuid/fsgid are `uid`/`gid` and which has
/// no supplementary groups.
pub fn with_creds<R: Send>(uid: u32, gid: u32, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("diff-as-user".into())
            .spawn_scoped(s, move || {
                set_thread_creds(uid, gid);
                f()
            })
            .expect("spawn op thread")
            .join()
            .expect("op thread panicked")
    })
}

fn set_thread_creds(uid: u32, gid: u32) {
    // SAFETY: setgroups(0, NULL) reads no memory; the raw syscall changes only
    // the calling thread's credentials.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
    assert_eq!(r, 0, "setgroups: {}", std::io::Error::last_os_error());
    // SAFETY: plain syscalls on integers; they change only this thread's fs ids.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
    }
    // setfsuid returns the previous value; calling it again with an invalid
    // id (-1) returns the current one, which verifies the switch.
    // SAFETY: as above; -1 is rejected and leaves the ids unchanged.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long) };
    assert_eq!(now as u32, uid, "setfsuid did not take effect");
}
