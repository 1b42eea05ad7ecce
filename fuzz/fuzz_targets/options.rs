//! Fuzzes command line parsing: arbitrary argv vectors into
//! `unionfs::options::parse`, and lowerdir lists into `split_lowers`.
//!
//! Invariants: nothing panics; an accepted config has a non-empty list of
//! non-empty lowers, no upper or work when `ro`, and no work without an
//! upper; `split_lowers` inverts escaping (`\` -> `\\`, `:` -> `\:`) plus
//! joining with `:`, and a list without backslashes splits and re-joins to
//! itself. Id mappings (`uidmapping=`) parse exactly when well formed and,
//! with disjoint ranges, map ids out and back unchanged.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use unionfs::idmap::{IdMap, OVERFLOW_ID};
use unionfs::options::{parse, split_lowers};

/// An argv word: either a word that the parser knows (to get deep quickly)
/// or arbitrary text.
#[derive(Arbitrary, Debug)]
enum Word {
    Known(u8),
    Opts(Vec<OptItem>),
    Text(String),
    /// Not necessarily UTF-8 (paths may be anything).
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum OptItem {
    Key(u8),
    KeyValue(u8, String),
    Raw(String),
}

const WORDS: &[&str] = &[
    "-o",
    "-f",
    "-d",
    "--help",
    "--version",
    "-h",
    "-V",
    "--",
    "l1:l2",
    "u",
    "m",
    "/",
    "a\\:b:c",
];

const KEYS: &[&str] = &[
    "lowerdir",
    "upperdir",
    "workdir",
    "ro",
    "rw",
    "userxattr",
    "redirect_dir",
    "volatile",
    "oci_whiteouts",
    "timeout",
    "threads",
    "allow_other",
    "default_permissions",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "fsname",
    "uidmapping",
    "gidmapping",
    "metacopy",
    "x-systemd.automount",
    "comment",
    "defaults",
    "",
];

fn key(k: u8) -> &'static str {
    KEYS[k as usize % KEYS.len()]
}

fn render(w: &Word) -> OsString {
    match w {
        Word::Known(i) => WORDS[*i as usize % WORDS.len()].into(),
        Word::Text(s) => s.into(),
        Word::Bytes(b) => OsString::from_vec(b.clone()),
        Word::Opts(items) => items
            .iter()
            .map(|it| match it {
                OptItem::Key(k) => key(*k).to_string(),
                OptItem::KeyValue(k, v) => format!("{}={v}", key(*k)),
                OptItem::Raw(s) => s.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
            .into(),
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    argv: Vec<Word>,
    /// Parts for the escape/split round trip.
    parts: Vec<String>,
    /// A raw lowerdir list.
    list: String,
    /// A raw id mapping, and one built from triples.
    map: String,
    triples: Vec<(u32, u32, u32)>,
    leading_colon: bool,
    ids: Vec<u32>,
}

fn escape(part: &str) -> String {
    let mut s = String::with_capacity(part.len());
    for c in part.chars() {
        if c == '\\' || c == ':' {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// `IdMap::parse` on raw text and on well-formed triples: never panics; the
/// mapping of any id never panics; with disjoint ranges on both sides,
/// mapping an id out and back in gives it back.
fn check_idmap(inp: &Input) {
    if let Ok(m) = IdMap::parse(&inp.map) {
        for &id in &inp.ids {
            let _ = m.to_inside(m.to_outside(id));
        }
    }
    let triples = &inp.triples[..inp.triples.len().min(4)];
    let mut text = if inp.leading_colon { ":" } else { "" }.to_string();
    text += &triples
        .iter()
        .map(|(i, o, n)| format!("{i}:{o}:{n}"))
        .collect::<Vec<_>>()
        .join(":");
    let valid = !triples.is_empty()
        && triples.iter().all(|&(i, o, n)| {
            n > 0 && i.checked_add(n - 1).is_some() && o.checked_add(n - 1).is_some()
        });
    let m = match IdMap::parse(&text) {
        Ok(m) => {
            assert!(valid, "IdMap::parse accepted {text:?}");
            m
        }
        Err(_) => {
            assert!(!valid, "IdMap::parse refused {text:?}");
            return;
        }
    };
    let overlap = |a: (u32, u32), b: (u32, u32)| {
        a.0 <= b.0.saturating_add(b.1 - 1) && b.0 <= a.0.saturating_add(a.1 - 1)
    };
    let mut disjoint = true;
    for (x, a) in triples.iter().enumerate() {
        for b in &triples[x + 1..] {
            if overlap((a.0, a.2), (b.0, b.2)) || overlap((a.1, a.2), (b.1, b.2)) {
                disjoint = false;
            }
        }
    }
    let mut ids = inp.ids.clone();
    for &(i, o, n) in triples {
        ids.extend([i, o, i.saturating_add(n - 1), o.saturating_add(n - 1)]);
    }
    for id in ids {
        let out = m.to_outside(id);
        let back = m.to_inside(out);
        let covered = triples.iter().any(|&(i, _, n)| id >= i && id - i < n);
        if !covered {
            assert_eq!(
                out, OVERFLOW_ID,
                "unmapped {id} stored as {out} by {text:?}"
            );
        } else if disjoint {
            assert_eq!(back, id, "{id} -> {out} -> {back} with {text:?}");
        }
    }
}

fuzz_target!(|inp: Input| {
    check_idmap(&inp);

    // parse: argv[0] is the program name.
    let argv: Vec<OsString> = std::iter::once(OsString::from("unionfs-fuse"))
        .chain(inp.argv.iter().map(render))
        .collect();
    if let Ok(c) = parse(argv.clone()) {
        assert!(!c.lowers.is_empty(), "accepted no lowers: {argv:?}");
        assert!(
            c.lowers.iter().all(|l| !l.as_os_str().is_empty()),
            "accepted an empty lower: {argv:?}"
        );
        if c.ro {
            assert!(
                c.upper.is_none() && c.work.is_none(),
                "ro with upper: {argv:?}"
            );
        }
        if c.work.is_some() {
            assert!(c.upper.is_some(), "work without upper: {argv:?}");
        }
        assert!(c.timeout.is_finite() && c.timeout >= 0.0);
        assert!(c.threads >= 1 && c.threads <= 64);
        assert!(!c.merged.as_os_str().is_empty() || argv.iter().any(|a| a.is_empty()));
    }

    // split_lowers never returns an empty list.
    let split = split_lowers(&inp.list);
    assert!(!split.is_empty());
    if !inp.list.contains('\\') {
        // Without backslashes, escaping the parts changes nothing, so the
        // parts re-join to the input.
        let joined = split
            .iter()
            .map(|p| escape(&p.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(joined, inp.list, "split/join round trip");
        assert_eq!(split.len(), inp.list.matches(':').count() + 1);
    }

    // Escaped parts joined with ':' split back into exactly those parts.
    if !inp.parts.is_empty() {
        let joined = inp
            .parts
            .iter()
            .map(|p| escape(p))
            .collect::<Vec<_>>()
            .join(":");
        let back = split_lowers(&joined);
        let want: Vec<PathBuf> = inp.parts.iter().map(PathBuf::from).collect();
        assert_eq!(back, want, "escape/join/split round trip of {joined:?}");
    }
});
