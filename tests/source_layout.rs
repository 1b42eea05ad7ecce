//! The layout rules of `src/`, checked on the source text: no import
//! circles between modules, fuser only in `src/adapter/`, an opening `//!`
//! comment and at most 800 lines per file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

/// Every library source file (not the binaries), by module path
/// (`union::lookup`; the crate root is "").
fn modules() -> BTreeMap<String, (PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                if !p.ends_with("bin") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            let text = fs::read_to_string(&p).expect("read source");
            (parts.join("::"), (p, text))
        })
        .collect()
}

/// The source without `//` comments, so prose naming a module is no import.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| without_strings(l.split("//").next().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line without its one-line string literals, so a log target named in
/// a string is no use of that crate.
fn without_strings(line: &str) -> String {
    line.split('"').step_by(2).collect::<Vec<_>>().join("\"\"")
}

/// The modules `module` names through `crate::` or `super::` paths,
/// reduced to the nearest module that exists, leaving out itself and the
/// modules it is inside of.
fn deps(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(['c', 's']) {
        let before = rest[..i].chars().last();
        let path: String = rest[i..]
            .chars()
            .take_while(|&c| ident(c) || c == ':')
            .collect();
        rest = &rest[i + path.len().max(1)..];
        if before.is_some_and(|c| ident(c) || c == ':') {
            continue;
        }
        let mut segs = path.split("::").filter(|s| !s.is_empty()).peekable();
        let mut parts: Vec<String> = match segs.peek() {
            Some(&"crate") => Vec::new(),
            Some(&"super") => own.iter().map(|s| s.to_string()).collect(),
            _ => continue,
        };
        for s in segs {
            match s {
                "crate" => {}
                "super" => {
                    parts.pop();
                }
                s => parts.push(s.to_string()),
            }
        }
        while !parts.is_empty() && !known.contains(&parts.join("::")) {
            parts.pop();
        }
        let target = parts.join("::");
        let inside = module == target || module.starts_with(&format!("{target}::"));
        if !target.is_empty() && !inside {
            out.insert(target);
        }
    }
    out
}

/// Each circle in the import graph of `mods` (module path to source).
fn circles(mods: &BTreeMap<String, String>) -> Vec<String> {
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let graph: BTreeMap<&str, BTreeSet<String>> = mods
        .iter()
        .map(|(m, text)| (m.as_str(), deps(m, &code_of(text), &known)))
        .collect();
    // A circle is a module that reaches itself again.
    let mut found = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![(start.to_string(), vec![start.to_string()])];
        while let Some((m, path)) = stack.pop() {
            for d in graph.get(m.as_str()).into_iter().flatten() {
                if d == start {
                    found.push(path.join(" -> ") + " -> " + start);
                } else if seen.insert(d.clone()) {
                    let mut p = path.clone();
                    p.push(d.clone());
                    stack.push((d.clone(), p));
                }
            }
        }
    }
    found
}

#[test]
fn no_import_circles_between_source_modules() {
    let mods = modules()
        .into_iter()
        .map(|(m, (_, text))| (m, text))
        .collect();
    let found = circles(&mods);
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_finder_sees_a_circle_through_super_and_not_one_in_a_comment() {
    let mods = |c: &str| -> BTreeMap<String, String> {
        [
            ("", "mod a;\nmod b;"),
            ("a", "//! A.\nuse crate::b::c::Thing;"),
            ("b", "//! B.\nmod c;"),
            ("b::c", c),
        ]
        .into_iter()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect()
    };
    assert_eq!(circles(&mods("//! C.\nuse super::super::a::X;")).len(), 2);
    assert!(circles(&mods("//! C, used by super::super::a.")).is_empty());
    assert!(circles(&mods("//! C.\nconst N: &str = \"crate::a\";")).is_empty());
}

#[test]
fn only_the_adapter_uses_fuser() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|(m, (_, text))| !m.starts_with("adapter") && code_of(text).contains("fuser::"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        offenders.is_empty(),
        "fuser used outside src/adapter/: {offenders:?}"
    );
}

#[test]
fn every_source_file_opens_with_a_module_comment_and_stays_short() {
    let mut bad = Vec::new();
    for (_, (path, text)) in modules() {
        if !text.trim_start().starts_with("//!") {
            bad.push(format!("{}: no opening //! comment", path.display()));
        }
        let n = text.lines().count();
        if n > MAX_LINES {
            bad.push(format!("{}: {n} lines", path.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
