//! The mount command line's parser and checks, case by case.

use super::*;

fn p(args: &[&str]) -> Result<MountConfig, clap::Error> {
    parse(
        std::iter::once("unionfs-fuse")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect(),
    )
}

#[test]
fn lowers_split_with_escaped_colon() {
    assert_eq!(
        split_lowers(r"/a\:b:/c"),
        vec![PathBuf::from("/a:b"), PathBuf::from("/c")]
    );
}

#[test]
fn three_forms_parse() {
    let c = p(&["l1:l2", "u", "m"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.lowers.len(), 2);
    assert_eq!(c.upper, Some(PathBuf::from("u")));
    let c = p(&["l1:l2", "m", "-o", "ro"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.upper.is_none());
    let c = p(&["l1:l2", "u", "m", "-o", "ro,workdir=w"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.upper, c.work), (None, None));
    assert_eq!(c.lowers, ["u", "l1", "l2"].map(PathBuf::from));
    assert!(p(&["l1:l2", "m", "-o", "upperdir=,ro"]).is_err());
    let c = p(&["-o", "lowerdir=a:b,upperdir=u,workdir=w,", "m"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.work, Some(PathBuf::from("w")));
    let c = p(&[
        "src",
        "m",
        "-o",
        "rw,lowerdir=a,upperdir=u,workdir=w,dev,suid",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, "src");
    assert_eq!(c.merged, PathBuf::from("m"));
}

#[test]
fn explicit_fsname_wins_over_source() {
    let c = p(&["src", "m", "-o", "lowerdir=a,fsname=mine"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, "mine");
    assert!(p(&["a", "m", "-o", "fsname="]).is_err());
}

#[test]
fn writeback_refuses_an_explicit_passthrough() {
    assert!(p(&["l", "u", "m", "-o", "writeback,passthrough=all"]).is_err());
    assert!(p(&["l", "u", "m", "-o", "passthrough,writeback"]).is_err());
    let c =
        p(&["l", "u", "m", "-o", "writeback,passthrough=off"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.writeback);
    assert!(p(&["l", "u", "m", "-o", "writeback"]).is_ok());
}

#[test]
fn timeout_must_be_a_sane_number_of_seconds() {
    for bad in ["-1", "nan", "inf", "1e20", "99999999999999999999", "x"] {
        assert!(
            p(&["l", "m", "-o", &format!("timeout={bad}")]).is_err(),
            "{bad}"
        );
    }
    assert!(p(&["l", "m", "-o", "timeout=1e9"]).is_ok());
}

/// A value each option of the table accepts.
fn sample(o: &Opt) -> String {
    if o.key.contains('=') {
        return o.key.into();
    }
    let value = match o.key {
        "x-" => return "x-systemd.foo".into(),
        "comment" => return "comment=systemd".into(),
        _ if !o.form.contains('=') => return o.key.into(),
        "uidmapping" | "gidmapping" => "0:1000:1",
        "oci_whiteouts" | "passthrough" | "writeback" | "verity" => "on",
        "xattr_permissions" => "2",
        "noxattrs" | "threaded" => "1",
        "context" => "\"system_u:object_r:container_file_t:s0:c1,c2\"",
        "xino" => "auto",
        "datadir+" => return "lowerdir+=a,datadir+=7".into(),
        "uuid" => "off",
        _ => "7",
    };
    format!("{}={value}", o.key)
}

fn parse_one(o: &Opt) -> Result<MountConfig, clap::Error> {
    let opts = format!("upperdir=u,{}", sample(o));
    if o.key.starts_with("lowerdir") || o.key.starts_with("datadir") {
        p(&["m", "-o", &opts])
    } else {
        p(&["l", "m", "-o", &opts])
    }
}

#[test]
fn every_option_in_the_help_table_parses_as_its_kind_says() {
    let help = full_help();
    for o in OPTIONS {
        assert!(help.contains(o.form), "{} not in --help", o.form);
        let r = parse_one(o);
        match o.kind {
            Kind::Refused => assert!(r.is_err(), "{} was accepted", o.key),
            Kind::Ignored => {
                let c = r.unwrap_or_else(|e| panic!("{}: {e}", o.key));
                assert_eq!(c.warnings.len(), 1, "{}", o.key);
            }
            Kind::Accepted | Kind::ForMount => {
                let c = r.unwrap_or_else(|e| panic!("{}: {e}", o.key));
                assert!(c.warnings.is_empty(), "{}", o.key);
            }
        }
    }
}

#[test]
fn every_option_in_the_table_is_in_the_readme_options_section() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_default();
    let start = readme.find("### Options").unwrap_or(0);
    let end = readme[start..]
        .find("### Unmounting")
        .map_or(readme.len(), |e| start + e);
    let section = &readme[start..end];
    for o in OPTIONS {
        let shown = if o.key == "x-" { "x-*" } else { o.key };
        assert!(
            section.contains(&format!("`{shown}")),
            "{shown} missing from the README's Options"
        );
    }
}

#[test]
fn quoted_and_escaped_commas_stay_in_the_value() {
    let c = p(&[
        "l",
        "m",
        "-o",
        "context=\"system_u:object_r:container_file_t:s0:c1,c2\",fsname=a\\,b",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.context.as_deref(),
        Some("system_u:object_r:container_file_t:s0:c1,c2")
    );
    assert_eq!(c.source, "a,b");
    assert!(p(&["l", "m", "-o", "context=\"a,b"]).is_err());
}

#[test]
fn squash_to_uid_wins_over_squash_to_root() {
    let c =
        p(&["l", "m", "-o", "squash_to_root,squash_to_uid=5"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.squash_uid, c.squash_gid), (Some(5), Some(0)));
}

#[test]
fn index_and_nfs_export_on_are_refused_off_accepted() {
    for bad in ["index=on", "nfs_export=on", "verity=on", "verity=require"] {
        let e = p(&["l", "u", "m", "-o", bad]).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains(bad)), "{bad}");
    }
    assert!(p(&["l", "u", "m", "-o", "index=off,nfs_export=off,metacopy=off"]).is_ok());
}

#[test]
fn lowerdir_plus_appends_and_does_not_mix_with_lowerdir() {
    let c = p(&["m", "-o", "lowerdir+=a,lowerdir+=b\\:c"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.lowers, ["a", "b\\:c"].map(PathBuf::from));
    assert!(p(&["m", "-o", "lowerdir=a,lowerdir+=b"]).is_err());
}

#[test]
fn data_only_layers_follow_a_double_colon_or_datadir_plus_as_in_overlayfs() {
    let c = p(&["m", "-o", "lowerdir=a:b::d1::d2"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.lowers, ["a", "b"].map(PathBuf::from));
    assert_eq!(c.datadirs, ["d1", "d2"].map(PathBuf::from));
    let c =
        p(&["m", "-o", "lowerdir+=a,datadir+=d1,datadir+=d2"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.lowers.len(), c.datadirs.len()), (1, 2));
    // The kernel's refusals, measured on 6.18.
    for bad in [
        "lowerdir=a::d1:d2",
        "lowerdir=::d",
        "lowerdir=a::",
        "lowerdir=a,datadir+=d",
        "datadir+=d,lowerdir+=a",
        "lowerdir+=a,datadir+=d,lowerdir+=b",
        "datadir+=d",
    ] {
        assert!(p(&["m", "-o", bad]).is_err(), "{bad}");
    }
}

#[test]
fn metacopy_on_turns_redirect_dir_on_and_refuses_what_the_kernel_refuses() {
    let c = p(&["l", "u", "m", "-o", "metacopy=on"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.metacopy && c.redirect_dir);
    for bad in [
        "metacopy=on,redirect_dir=off",
        "metacopy=on,redirect_dir=follow",
        "metacopy=on,redirect_dir=nofollow",
        "metacopy=on,userxattr",
    ] {
        let e = p(&["l", "u", "m", "-o", bad]).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("conflicting")), "{bad}");
    }
    // Read-only, redirects are only followed: off is fine there.
    assert!(p(&["l1:l2", "m", "-o", "metacopy=on,redirect_dir=off"]).is_ok());
}

#[test]
fn fsync_0_skips_fsync_without_the_volatile_marker() {
    let c = p(&["l", "u", "m", "-o", "fsync=0"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.no_fsync && !c.volatile);
    assert!(p(&["l", "u", "m", "-o", "fsync=2"]).is_err());
}

#[test]
fn unknown_option_is_an_error() {
    assert!(p(&["l", "u", "m", "-o", "bogus"]).is_err());
    assert!(p(&["l", "u", "m", "-o", "redirect_dir=maybe"]).is_err());
    assert!(p(&["l", "u", "m", "-o", "metacopy"]).is_err());
}
