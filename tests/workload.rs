//! Real tool workloads through the union: a C project built with make, a git
//! repository used from a lower layer, and tar extract plus rm -rf.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

const MAKEFILE: &str = "\
CC ?= cc
prog: main.o util.o
\t$(CC) -o prog main.o util.o
main.o: main.c util.h
\t$(CC) -c -O1 -o main.o main.c
util.o: util.c util.h
\t$(CC) -c -O1 -o util.o util.c
clean:
\trm -f prog main.o util.o
";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn c_project_in_lower_builds_with_make() {
    let Some(fx) = Fixture::new() else { return };
    fx.lower(0)
        .file("proj/Makefile", MAKEFILE.as_bytes())
        .file("proj/util.h", b"int add(int a, int b);\n")
        .file(
            "proj/util.c",
            b"#include \"util.h\"\nint add(int a, int b) { return a + b; }\n",
        )
        .file(
            "proj/main.c",
            b"#include <stdio.h>\n#include \"util.h\"\n\
              int main(void) { printf(\"sum=%d\\n\", add(2, 3)); return 0; }\n",
        );
    let m = fx.mount();
    let proj = m.p("proj");
    run_ok(Command::new("make").arg("-s").arg("-C").arg(&proj));
    let out = run_ok(&mut Command::new(proj.join("prog")));
    assert_eq!(stdout(&out), "sum=5\n");
    for f in ["prog", "main.o", "util.o"] {
        assert!(lstat(&m.up("proj").join(f)).is_file(), "{f} not in upper");
    }
    assert_eq!(
        ls(&fx.lower(0).path("proj")).len(),
        4,
        "build wrote to the lower"
    );
    // Edit a lower source through the union and rebuild incrementally.
    write(
        &m.p("proj/util.c"),
        b"#include \"util.h\"\nint add(int a, int b) { return a * 10 + b; }\n",
    );
    let out = run_ok(Command::new("make").arg("-C").arg(&proj));
    let log = stdout(&out);
    assert!(log.contains("util.o"), "util.o not rebuilt:\n{log}");
    assert!(
        !log.contains("main.o main.c"),
        "main.o rebuilt needlessly:\n{log}"
    );
    assert_eq!(
        stdout(&run_ok(&mut Command::new(proj.join("prog")))),
        "sum=23\n"
    );
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&proj)
            .arg("clean"),
    );
    assert_eq!(
        ls(&m.up("proj")),
        ["util.c"],
        "clean left objects or whiteouts"
    );
    assert_eq!(ls(&proj), ["Makefile", "main.c", "util.c", "util.h"]);
}

fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0"),
    );
    stdout(&out)
}

#[test]
fn git_repo_in_lower_status_modify_commit() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.dir("home");
    let l = fx.lower(0);
    l.file("repo/README", b"hello\n")
        .file("repo/src/lib.c", b"int x;\n")
        .file("repo/docs/guide.txt", b"guide\n");
    let lrepo = l.path("repo");
    git(&lrepo, &home, &["init", "-q", "-b", "main"]);
    git(&lrepo, &home, &["add", "-A"]);
    git(&lrepo, &home, &["commit", "-q", "-m", "initial"]);
    let lower_head = fs::read_to_string(lrepo.join(".git/refs/heads/main")).unwrap();
    let mut m = fx.mount();
    let repo = m.p("repo");
    assert_eq!(git(&repo, &home, &["status", "--porcelain"]), "");
    append(&m.p("repo/README"), b"more\n");
    fs::remove_file(m.p("repo/docs/guide.txt")).unwrap();
    write(&m.p("repo/new.txt"), b"new\n");
    assert_eq!(
        git(&repo, &home, &["status", "--porcelain"]),
        " M README\n D docs/guide.txt\n?? new.txt\n"
    );
    git(&repo, &home, &["add", "-A"]);
    git(&repo, &home, &["commit", "-q", "-m", "second"]);
    assert_eq!(git(&repo, &home, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &home, &["log", "--oneline"]).lines().count(), 2);
    git(&repo, &home, &["fsck", "--no-progress"]);
    assert_eq!(
        fs::read_to_string(lrepo.join(".git/refs/heads/main")).unwrap(),
        lower_head,
        "commit changed the lower layer"
    );
    assert!(exists(&m.up("repo/.git")), "git metadata not in the upper");
    m.remount();
    assert_eq!(git(&repo, &home, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&repo, &home, &["log", "--format=%s"]),
        "second\ninitial\n"
    );
    assert_eq!(git(&repo, &home, &["show", "HEAD:README"]), "hello\nmore\n");
}

/// A source tree with files, dirs, symlinks, hard links, modes and times.
fn source_tree(fx: &Fixture) -> std::path::PathBuf {
    let src = Layer::new(fx.root().join("src"));
    for i in 0..20 {
        src.file(
            &format!("a/b{}/f{i}.txt", i % 4),
            format!("file {i}\n").as_bytes(),
        );
    }
    src.file_mode("bin/run", b"#!/bin/sh\n", 0o755)
        .file_mode("bin/suid", b"x", 0o4711)
        .symlink("bin/link", "run")
        .symlink("dangling", "nowhere")
        .hardlink("a/b0/f0.txt", "hard")
        .file("empty", b"")
        .dir("emptydir")
        .file("big", &vec![b'z'; 300_000])
        .times("a/b1/f1.txt", Ts(1_000_000_000, 0), Ts(1_000_000_000, 0));
    src.root
}

#[test]
fn tar_extract_into_union_then_rm_rf() {
    let Some(fx) = Fixture::new() else { return };
    let src = source_tree(&fx);
    let archive = fx.root().join("t.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    // dst2 already exists in the lower with overlapping names.
    fx.lower(0)
        .file("dst2/a/b0/f0.txt", b"old lower content")
        .file("dst2/lower_only", b"l");
    let m = fx.mount();
    let want = snapshot(&src, SnapOpts::with_times());
    for dst in ["dst", "dst2"] {
        fs::create_dir_all(m.p(dst)).unwrap();
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(m.p(dst))
                .arg("-xpf")
                .arg(&archive),
        );
    }
    let got = snapshot(&m.p("dst"), SnapOpts::with_times());
    assert_same(
        &want.clone().without(""),
        &got.clone().without(""),
        "tar x into union",
    );
    let got2 = snapshot(&m.p("dst2"), SnapOpts::basic()).without("lower_only");
    assert_same(
        &snapshot(&src, SnapOpts::basic()).without(""),
        &got2.without(""),
        "tar x over a lower tree",
    );
    assert_eq!(read(&m.p("dst2/a/b0/f0.txt")), "file 0\n");
    run_ok(
        Command::new("rm")
            .arg("-rf")
            .arg(m.p("dst"))
            .arg(m.p("dst2")),
    );
    assert!(!exists(&m.p("dst")));
    assert!(!exists(&m.p("dst2")));
    assert_eq!(ls(&m.p("")), Vec::<String>::new());
    assert!(!exists(&m.up("dst")), "upper-only tree left traces");
    assert_whiteout(&m.up("dst2"));
    assert_eq!(ls(&m.up("")), ["dst2"]);
}
