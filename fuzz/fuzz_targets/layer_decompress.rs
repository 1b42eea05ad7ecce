//! Fuzzes layer decompression (gzip through flate2, zstd through the zstd
//! crate) with the size cap, as a layer blob reaches the unpacker. The
//! first byte picks how the rest is used: as a raw blob (corrupt or
//! truncated streams, bombs), or compressed first with gzip or zstd and
//! then cut or bit-flipped at a chosen place. Seeds: real exported layers
//! (plain, gzip, zstd), each with a leading selector byte.
//!
//! Invariants: nothing panics; the decoder never yields more than the cap;
//! a blob that is accepted has the input's sha256 as its digest; an
//! untouched compressed stream decodes to exactly the bytes compressed.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use unionfs::oci::compress::{Compression, Decoder, Encoder};
use unionfs::oci::{self, Digest, UnpackOptions};

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let blob = match sel % 4 {
        0 | 1 => rest.to_vec(),
        k => {
            let kind = if k == 2 { Compression::Gzip } else { Compression::Zstd };
            let mut e = Encoder::new(Vec::new(), kind).expect("encoder");
            e.write_all(rest).expect("compress");
            let mut blob = e.finish().expect("finish");
            let mut out = Vec::new();
            Decoder::new(&blob[..], kind, u64::MAX)
                .expect("decoder")
                .read_to_end(&mut out)
                .expect("an untouched stream decodes");
            assert_eq!(out, rest);
            // Damage it where the selector says: cut, or flip one bit.
            let at = (sel as usize / 4) * blob.len() / 64;
            if sel & 0x80 != 0 {
                blob.truncate(at);
            } else if at < blob.len() {
                blob[at] ^= 1 << (sel % 8);
            }
            blob
        }
    };
    // The decoder alone, for each kind it may be told.
    for kind in [Compression::Gzip, Compression::Zstd, Compression::None] {
        if let Ok(mut d) = Decoder::new(&blob[..], kind, CAP) {
            let mut out = Vec::new();
            let _ = d.read_to_end(&mut out);
            assert!(out.len() as u64 <= CAP);
        }
    }
    // The whole path an unpack takes: sniff, decode, tar, digests.
    let opts = UnpackOptions {
        max_size: CAP,
        ..UnpackOptions::default()
    };
    if let Ok(r) = oci::check_with(&mut &blob[..], &opts) {
        assert_eq!(r.digest, Digest::of(&blob));
    }
});
