//! Fuzzes the layer tar reader and the unpacker's checks through
//! `unionfs::oci::check` (a dry run: parse, digests, containment model),
//! on plain tar input. Seeds: real layers exported by `--export-layer`.
//!
//! Invariants: nothing panics on any input (errors are fine); an accepted
//! input's digest is the sha256 of the input, and equals its diff_id (it
//! is not compressed); reading it twice gives the same report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unionfs::oci::{self, Compression, Digest};

fuzz_target!(|data: &[u8]| {
    if !matches!(Compression::sniff(data), Ok(Compression::None)) {
        return;
    }
    if let Ok(r) = oci::check(&mut &data[..]) {
        assert_eq!(r.digest, Digest::of(data));
        assert_eq!(r.diff_id, r.digest);
        assert!(!r.compressed);
        let again = oci::check(&mut &data[..]).expect("a second read of an accepted layer");
        assert_eq!(again, r);
    }
});
