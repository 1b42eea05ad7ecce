//! Fuzzes the pure functions of `unionfs::format`: xattr name escaping, OCI
//! whiteout names, origin encoding and `cname`, for both the
//! `trusted.overlay.` (OCI on) and `user.overlay.` (OCI off) formats.
//!
//! Invariants: nothing panics; `visible_xattr(real_xattr(x)) == Some(x)`;
//! private names are exactly the ones `visible_xattr` hides; an encoded origin
//! matches its own (type, fid); OCI names and targets agree with each other.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use unionfs::format::{cname, Format};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Used as an xattr name and as a file name.
    name: Vec<u8>,
    /// Picks a prefix so that the interesting namespaces are hit often.
    prefix: u8,
    handle_type: i32,
    fid: Vec<u8>,
    uuid: [u8; 16],
    /// An arbitrary stored origin value.
    stored: Vec<u8>,
}

const PREFIXES: &[&[u8]] = &[
    b"",
    b"trusted.overlay.",
    b"trusted.overlay.overlay.",
    b"user.overlay.",
    b"user.overlay.overlay.",
    b".wh.",
    b".wh..wh.",
];

fn check_format(f: &Format, userxattr: bool, oci: bool, name: &[u8], inp: &Input) {
    assert_eq!(f.userxattr(), userxattr);
    assert_eq!(f.oci(), oci);
    let prefix: &[u8] = if userxattr {
        b"user.overlay."
    } else {
        b"trusted.overlay."
    };

    // xattr names.
    let real = f.real_xattr(name);
    assert_eq!(
        f.visible_xattr(&real).as_deref(),
        Some(name),
        "visible_xattr(real_xattr(x)) != x for {name:?} (real {real:?})"
    );
    assert!(
        !f.is_private_xattr(&real),
        "real_xattr({name:?}) = {real:?} is private"
    );
    let private = f.is_private_xattr(name);
    let visible = f.visible_xattr(name);
    assert_eq!(
        private,
        visible.is_none(),
        "is_private_xattr and visible_xattr disagree on {name:?}"
    );
    if private {
        assert!(name.starts_with(prefix));
    }
    if !name.starts_with(prefix) {
        assert_eq!(real, name, "a name outside the prefix was changed");
        assert_eq!(visible.as_deref(), Some(name));
    }
    if let Some(v) = &visible {
        // Unescaping removes one level or nothing.
        assert!(v.len() == name.len() || v.len() + b"overlay.".len() == name.len());
        assert_eq!(f.real_xattr(v), name, "real_xattr(visible_xattr(x)) != x");
    }

    // OCI names.
    let os = OsStr::from_bytes(name);
    let is_oci = f.is_oci_name(os);
    let target = f.oci_target(os);
    if !oci {
        assert!(!is_oci && target.is_none());
    } else {
        assert_eq!(is_oci, name.starts_with(b".wh."));
    }
    if let Some(t) = target {
        assert!(is_oci, "oci_target without is_oci_name for {name:?}");
        let t = t.as_bytes();
        assert!(!t.is_empty());
        assert!(!t.starts_with(b".wh."));
        assert_eq!([&b".wh."[..], t].concat(), name);
    }

    // Origins.
    let enc = Format::encode_origin(inp.handle_type, &inp.fid, &inp.uuid);
    let fits = (0..=255).contains(&inp.handle_type) && 21 + inp.fid.len() <= 255;
    assert_eq!(enc.is_some(), fits, "encode_origin refused a valid handle");
    if let Some(v) = &enc {
        assert_eq!(v.len(), 21 + inp.fid.len());
        assert_eq!(&v[5..21], &inp.uuid[..]);
        assert!(
            Format::origin_matches(v, inp.handle_type, &inp.fid),
            "encoded origin does not match itself"
        );
        assert!(!Format::origin_matches(
            v,
            inp.handle_type.wrapping_add(1),
            &inp.fid
        ));
        let mut longer = inp.fid.clone();
        longer.push(0);
        assert!(!Format::origin_matches(v, inp.handle_type, &longer));
    }
    // Arbitrary stored values and fids must never panic.
    let _ = Format::origin_matches(&inp.stored, inp.handle_type, &inp.fid);
    let _ = Format::origin_matches(&inp.stored, inp.handle_type, name);
    let _ = f.origin_key();
}

fuzz_target!(|inp: Input| {
    let pre = PREFIXES[inp.prefix as usize % PREFIXES.len()];
    let name = [pre, &inp.name[..]].concat();

    for (userxattr, oci) in [(false, true), (true, false)] {
        let f = Format::new(userxattr, oci);
        check_format(&f, userxattr, oci, &name, &inp);
        check_format(&f, userxattr, oci, &inp.name, &inp);
    }

    // cname: Ok exactly for names of at most 255 bytes without NUL.
    match cname(OsStr::from_bytes(&name)) {
        Ok(c) => {
            assert!(name.len() <= 255 && !name.contains(&0));
            assert_eq!(c.as_bytes(), &name[..]);
        }
        Err(e) => {
            assert!(name.len() > 255 || name.contains(&0));
            let raw = e.raw();
            assert!(
                raw == libc::ENAMETOOLONG || raw == libc::EINVAL,
                "cname: {e:?}"
            );
            assert_eq!(raw == libc::ENAMETOOLONG, name.len() > 255);
        }
    }
});
