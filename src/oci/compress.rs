//! Layer compression: gzip (flate2) and zstd (the zstd crate) around our
//! tar stream. A layer's compression is told by its magic bytes; decoding
//! stops with [`TooLarge`] once the tar passes a size cap, so a tiny blob
//! cannot expand without bound (a decompression bomb).

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use super::LayerError;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// The default zstd level, as `zstd -3` (the tool's default).
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The compression a stream starting with `head` (at least 6 bytes
    /// when the stream has them) uses; xz and bzip2 are refused by name.
    pub fn sniff(head: &[u8]) -> Result<Compression, LayerError> {
        if head.starts_with(&[0x1f, 0x8b]) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Ok(Compression::Zstd);
        }
        let name = if head.starts_with(b"BZh") {
            "bzip2"
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            "xz"
        } else {
            return Ok(Compression::None);
        };
        Err(LayerError::Unsupported(format!(
            "{name}-compressed layers are not supported (plain tar, gzip and zstd are); \
             decompress it first"
        )))
    }

    /// The suffix of an OCI layer media type (`tar`, `tar+gzip`, `tar+zstd`).
    pub fn media_suffix(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar+gzip",
            Compression::Zstd => "tar+zstd",
        }
    }
}

/// The error a capped decoder gives once the tar passes its cap; it
/// travels inside an `io::Error` through the tar reader.
#[derive(Debug)]
pub struct TooLarge(pub u64);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the layer expands past {} bytes (--max-layer-size)",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

/// The uncompressed tar of a layer stream, at most `cap` bytes of it.
pub struct Decoder<R: BufRead> {
    inner: Inner<R>,
    left: u64,
    cap: u64,
}

enum Inner<R: BufRead> {
    Plain(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, R>>),
}

impl<R: BufRead> Decoder<R> {
    pub fn new(input: R, kind: Compression, cap: u64) -> io::Result<Decoder<R>> {
        let inner = match kind {
            Compression::None => Inner::Plain(input),
            Compression::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input))),
            Compression::Zstd => {
                Inner::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(input)?))
            }
        };
        Ok(Decoder {
            inner,
            left: cap,
            cap,
        })
    }
}

impl<R: BufRead> Decoder<R> {
    /// The input reader, positioned somewhere after what was decoded.
    pub fn into_inner(self) -> R {
        match self.inner {
            Inner::Plain(r) => r,
            Inner::Gzip(r) => r.into_inner(),
            Inner::Zstd(r) => r.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past the cap tells a stream of exactly `cap` bytes from
        // a longer one.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = match &mut self.inner {
            Inner::Plain(r) => r.read(&mut buf[..want]),
            Inner::Gzip(r) => r.read(&mut buf[..want]),
            Inner::Zstd(r) => r.read(&mut buf[..want]),
        }?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TooLarge(self.cap),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Compresses a tar stream into `W`.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(Box<flate2::write::GzEncoder<W>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, W>>),
}

impl<W: Write> Encoder<W> {
    /// gzip at level 6 (as `gzip -6`) with a fixed header (mtime 0, no
    /// name, OS 255); zstd at level 3 with a content checksum, single
    /// threaded. Both give the same bytes for the same tar.
    pub fn new(out: W, kind: Compression) -> io::Result<Encoder<W>> {
        Ok(match kind {
            Compression::None => Encoder::Plain(out),
            Compression::Gzip => Encoder::Gzip(Box::new(
                flate2::GzBuilder::new().write(out, flate2::Compression::new(6)),
            )),
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                z.include_checksum(true)?;
                Encoder::Zstd(Box::new(z))
            }
        })
    }

    /// Writes the trailer; returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kind: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), kind).unwrap();
        e.write_all(data).unwrap();
        let blob = e.finish().unwrap();
        assert_eq!(Compression::sniff(&blob).unwrap(), kind);
        let mut out = Vec::new();
        Decoder::new(&blob[..], kind, u64::MAX)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        blob
    }

    #[test]
    fn each_compression_round_trips_and_is_sniffed() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        for kind in [Compression::Gzip, Compression::Zstd] {
            let a = round_trip(kind, &data);
            assert_eq!(a, round_trip(kind, &data), "{kind:?} is not reproducible");
            assert!(a.len() < data.len());
        }
    }

    /// flate2, miniz_oxide and zstd-sys (which bundles libzstd) are pinned
    /// so a layer's blob, and so its digest in a manifest, stays the same
    /// from one build to the next.
    #[test]
    fn gzip_and_zstd_bytes_are_pinned() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i * 7 % 13 + i / 1000) as u8)
            .collect();
        let digest = |kind| {
            let mut e = Encoder::new(Vec::new(), kind).unwrap();
            e.write_all(&data).unwrap();
            super::super::Digest::of(&e.finish().unwrap()).to_string()
        };
        assert_eq!(
            digest(Compression::Gzip),
            "sha256:e3dfe220ea62c1145f3ebad46f761eb838dc8cd24bdd035ebc53380d422eea68"
        );
        assert_eq!(
            digest(Compression::Zstd),
            "sha256:daabc4caf4c1738ae595c177b15c92f0a79f2263ae20afce0d306ac5ff6c120f"
        );
    }

    #[test]
    fn decoding_stops_at_the_cap() {
        let data = vec![0u8; 1 << 20];
        for kind in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), kind).unwrap();
            e.write_all(&data).unwrap();
            let blob = e.finish().unwrap();
            let mut exact = Vec::new();
            Decoder::new(&blob[..], kind, 1 << 20)
                .unwrap()
                .read_to_end(&mut exact)
                .unwrap();
            assert_eq!(exact.len(), 1 << 20);
            let err = Decoder::new(&blob[..], kind, (1 << 20) - 1)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert!(
                err.get_ref().is_some_and(|e| e.is::<TooLarge>()),
                "{kind:?}: {err}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        for kind in [Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(Vec::new(), kind).unwrap();
            e.write_all(&[5u8; 100_000]).unwrap();
            let blob = e.finish().unwrap();
            let cut = &blob[..blob.len() - 6];
            let r = Decoder::new(cut, kind, u64::MAX)
                .unwrap()
                .read_to_end(&mut Vec::new());
            assert!(r.is_err(), "{kind:?}: a truncated stream was read fully");
        }
    }

    #[test]
    fn xz_and_bzip2_are_refused_by_name() {
        let xz = Compression::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
        assert!(matches!(xz, Err(LayerError::Unsupported(m)) if m.contains("xz")));
        let bz = Compression::sniff(b"BZh91AY");
        assert!(matches!(bz, Err(LayerError::Unsupported(m)) if m.contains("bzip2")));
        assert_eq!(Compression::sniff(b"").unwrap(), Compression::None);
    }
}
