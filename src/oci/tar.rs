//! The tar format as OCI layers use it: POSIX ustar headers, with PAX
//! extended headers (`x`) for what ustar cannot hold (long `path` and
//! `linkpath`, sub-second `mtime`, big `size`/`uid`/`gid`, and
//! `SCHILY.xattr.NAME` records). The reader also accepts GNU long names
//! (`L`/`K`), GNU base-256 numbers, global PAX headers and v7 headers.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::LayerError;

pub const BLOCK: usize = 512;

const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;
/// Upper bound on PAX and GNU long-name payloads we buffer.
const MAX_META: u64 = 16 << 20;

/// The object type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One tar member's metadata (the data, for regular files, follows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Relative path; directories end in `/` when written.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Symlink target or hard link target path.
    pub link: Vec<u8>,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Data length (regular files only).
    pub size: u64,
    /// Seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Device numbers for `Char` and `Block`.
    pub dev: (u32, u32),
    /// Extended attributes by name, in name order.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Header {
    pub fn new(path: Vec<u8>, kind: Kind) -> Header {
        Header {
            path,
            kind,
            link: Vec::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: (0, 0),
            dev: (0, 0),
            xattrs: BTreeMap::new(),
        }
    }

    /// The header blocks: a PAX extended header when needed, then ustar.
    pub fn encode(&self) -> Vec<u8> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if self.path.len() > 100 {
            pax.push((b"path".to_vec(), self.path.clone()));
        }
        if self.link.len() > 100 {
            pax.push((b"linkpath".to_vec(), self.link.clone()));
        }
        let (secs, ns) = self.mtime;
        if ns != 0 || secs < 0 || secs as u64 > MAX_OCTAL_11 {
            pax.push((b"mtime".to_vec(), format_time(secs, ns).into_bytes()));
        }
        if self.size > MAX_OCTAL_11 {
            pax.push((b"size".to_vec(), self.size.to_string().into_bytes()));
        }
        if self.uid > MAX_OCTAL_7 {
            pax.push((b"uid".to_vec(), self.uid.to_string().into_bytes()));
        }
        if self.gid > MAX_OCTAL_7 {
            pax.push((b"gid".to_vec(), self.gid.to_string().into_bytes()));
        }
        for (k, v) in &self.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        let mut out = Vec::with_capacity(3 * BLOCK);
        if !pax.is_empty() {
            pax.sort();
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            let base = self
                .path
                .rsplit(|c| *c == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"x");
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(base);
            name.truncate(100);
            out.extend_from_slice(&ustar_block(
                &name,
                b'x',
                b"",
                0o644,
                0,
                0,
                body.len() as u64,
                0,
                (0, 0),
            ));
            out.extend_from_slice(&body);
            out.resize(out.len() + padding(body.len() as u64), 0);
        }
        let mtime = if secs < 0 {
            0
        } else {
            (secs as u64).min(MAX_OCTAL_11)
        };
        out.extend_from_slice(&ustar_block(
            &self.path,
            self.kind.flag(),
            &self.link,
            self.mode & 0o7777,
            self.uid.min(MAX_OCTAL_7),
            self.gid.min(MAX_OCTAL_7),
            if self.kind == Kind::Regular {
                self.size.min(MAX_OCTAL_11)
            } else {
                0
            },
            mtime,
            self.dev,
        ));
        out
    }
}

/// Zero bytes that follow `len` data bytes to fill the last block.
pub fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// `LEN key=value\n`, where LEN counts the whole record including itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = len.to_string().into_bytes();
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn format_time(secs: i64, ns: u32) -> String {
    if ns == 0 {
        secs.to_string()
    } else if secs >= 0 {
        format!("{secs}.{ns:09}")
    } else {
        // -1 s + 0.25 s is -0.75 s.
        let whole = -(secs + 1);
        format!("-{whole}.{:09}", 1_000_000_000 - ns)
    }
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    flag: u8,
    link: &[u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    dev: (u32, u32),
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], mode as u64);
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = flag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if flag == b'3' || flag == b'4' {
        octal(&mut b[329..337], (dev.0 as u64).min(MAX_OCTAL_7));
        octal(&mut b[337..345], (dev.1 as u64).min(MAX_OCTAL_7));
    }
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|c| *c as u32).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

/// One PAX `key=value` record.
type PaxRecord = (Vec<u8>, Vec<u8>);

fn malformed(msg: impl Into<String>) -> LayerError {
    LayerError::Malformed(msg.into())
}

/// Parses a numeric header field: octal text or GNU base-256.
fn number(field: &[u8]) -> Result<u64, LayerError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first != 0x80 {
                return Err(malformed("negative or oversized base-256 number"));
            }
            let mut v: u64 = 0;
            for &c in &field[1..] {
                if v >> 56 != 0 {
                    return Err(malformed("base-256 number overflows"));
                }
                v = v << 8 | c as u64;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut started = false;
    for &c in field {
        match c {
            b'0'..=b'7' => {
                started = true;
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add((c - b'0') as u64))
                    .ok_or_else(|| malformed("octal number overflows"))?;
            }
            b' ' if !started => {}
            0 | b' ' => break,
            _ => return Err(malformed("bad octal number in header")),
        }
    }
    Ok(v)
}

fn cstring_field(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|c| *c == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

fn parse_decimal(v: &[u8], what: &str) -> Result<u64, LayerError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| malformed(format!("bad PAX {what}")))
}

/// `[-]SECS[.FRACTION]` as (seconds, nanoseconds).
fn parse_time(v: &[u8]) -> Result<(i64, u32), LayerError> {
    let s = std::str::from_utf8(v).map_err(|_| malformed("bad PAX mtime"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().map_err(|_| malformed("bad PAX mtime"))?;
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(malformed("bad PAX mtime"));
    }
    let mut ns: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        ns += (c - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if !neg {
        Ok((secs, ns))
    } else if ns == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - ns))
    }
}

fn parse_pax(body: &[u8]) -> Result<Vec<PaxRecord>, LayerError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.iter().all(|c| *c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|c| *c == b' ')
            .ok_or_else(|| malformed("PAX record without length"))?;
        let len = parse_decimal(&rest[..sp], "record length")? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed("bad PAX record length"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|c| *c == b'=')
            .ok_or_else(|| malformed("PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Reads a tar stream member by member.
pub struct Reader<R: Read> {
    src: R,
    /// Data and padding bytes of the current member not yet read.
    left: u64,
    pad: usize,
    global: Vec<PaxRecord>,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(src: R) -> Reader<R> {
        Reader {
            src,
            left: 0,
            pad: 0,
            global: Vec::new(),
            done: false,
        }
    }

    /// Fills `buf` completely; Ok(false) on a clean end of input before
    /// the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, LayerError> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(malformed("archive is truncated")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayerError::Read(e)),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), LayerError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if !self.fill(&mut buf[..k])? {
                return Err(malformed("archive is truncated"));
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads data of the current (regular file) member; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, LayerError> {
        if self.left == 0 {
            return Ok(0);
        }
        let k = self.left.min(buf.len() as u64) as usize;
        if !self.fill(&mut buf[..k])? {
            return Err(malformed("archive is truncated"));
        }
        self.left -= k as u64;
        Ok(k)
    }

    fn finish_member(&mut self) -> Result<(), LayerError> {
        let n = self.left + self.pad as u64;
        self.left = 0;
        self.pad = 0;
        self.skip(n)
    }

    fn meta_body(&mut self, size: u64) -> Result<Vec<u8>, LayerError> {
        if size > MAX_META {
            return Err(malformed("extended header too large"));
        }
        let mut body = vec![0u8; size as usize];
        if !self.fill(&mut body)? && size > 0 {
            return Err(malformed("archive is truncated"));
        }
        self.skip(padding(size) as u64)?;
        Ok(body)
    }

    /// The next member, or None after the end-of-archive marker (or a
    /// clean end of input at a member boundary).
    pub fn next_header(&mut self) -> Result<Option<Header>, LayerError> {
        if self.done {
            return Ok(None);
        }
        self.finish_member()?;
        let mut pax: Vec<PaxRecord> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut b = [0u8; BLOCK];
            if !self.fill(&mut b)? {
                self.done = true;
                return Ok(None);
            }
            if b.iter().all(|c| *c == 0) {
                // End of archive: one zero block (a second one is optional
                // for us; what follows is drained by the caller).
                self.done = true;
                return Ok(None);
            }
            let stored = number(&b[148..156])?;
            let mut unsigned: u64 = 0;
            let mut signed: i64 = 0;
            for (i, c) in b.iter().enumerate() {
                let c = if (148..156).contains(&i) { b' ' } else { *c };
                unsigned += c as u64;
                signed += c as i8 as i64;
            }
            if stored != unsigned && stored as i64 != signed {
                return Err(malformed("header checksum mismatch (not a tar archive?)"));
            }
            let flag = b[156];
            let size = number(&b[124..136])?;
            match flag {
                b'x' => {
                    let body = self.meta_body(size)?;
                    pax.extend(parse_pax(&body)?);
                    continue;
                }
                b'g' => {
                    let body = self.meta_body(size)?;
                    self.global.extend(parse_pax(&body)?);
                    continue;
                }
                b'L' => {
                    let body = self.meta_body(size)?;
                    long_name = Some(cstring_field(&body));
                    continue;
                }
                b'K' => {
                    let body = self.meta_body(size)?;
                    long_link = Some(cstring_field(&body));
                    continue;
                }
                _ => {}
            }
            let posix = &b[257..263] == b"ustar\0";
            let mut path = cstring_field(&b[0..100]);
            if posix && b[345] != 0 {
                let mut p = cstring_field(&b[345..500]);
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
            let kind = match flag {
                b'0' | 0 | b'7' => Kind::Regular,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => {
                    return Err(LayerError::Unsupported(
                        "GNU sparse tar members are not supported".into(),
                    ))
                }
                other => {
                    return Err(LayerError::Unsupported(format!(
                        "tar member type {:?} is not supported",
                        other as char
                    )))
                }
            };
            let mut h = Header::new(path, kind);
            h.link = cstring_field(&b[157..257]);
            h.mode = (number(&b[100..108])? & 0o7777) as u32;
            h.uid = number(&b[108..116])?;
            h.gid = number(&b[116..124])?;
            h.size = size;
            h.mtime = (number(&b[136..148])? as i64, 0);
            if kind == Kind::Char || kind == Kind::Block {
                h.dev = (number(&b[329..337])? as u32, number(&b[337..345])? as u32);
            }
            if let Some(n) = long_name {
                h.path = n;
            }
            if let Some(l) = long_link {
                h.link = l;
            }
            let globals = self.global.clone();
            for (k, v) in globals.iter().chain(pax.iter()) {
                apply_pax(&mut h, k, v)?;
            }
            // Old archives mark dirs only with a trailing slash.
            if kind == Kind::Regular && h.path.ends_with(b"/") {
                h.kind = Kind::Dir;
            }
            if h.kind != Kind::Regular {
                h.size = 0;
            }
            self.left = h.size;
            self.pad = padding(h.size);
            return Ok(Some(h));
        }
    }
}

fn apply_pax(h: &mut Header, k: &[u8], v: &[u8]) -> Result<(), LayerError> {
    match k {
        b"path" => h.path = v.to_vec(),
        b"linkpath" => h.link = v.to_vec(),
        b"size" => h.size = parse_decimal(v, "size")?,
        b"uid" => h.uid = parse_decimal(v, "uid")?,
        b"gid" => h.gid = parse_decimal(v, "gid")?,
        b"mtime" => h.mtime = parse_time(v)?,
        _ if k.starts_with(b"GNU.sparse.") => {
            return Err(LayerError::Unsupported(
                "PAX sparse tar members are not supported".into(),
            ))
        }
        _ => {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() {
                    return Err(malformed("empty xattr name"));
                }
                h.xattrs.insert(name.to_vec(), v.to_vec());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut h = Header::new(b"a/b".to_vec(), Kind::Regular);
        h.mode = 0o4755;
        h.uid = 1000;
        h.gid = 100;
        h.size = 5;
        h.mtime = (1_700_000_000, 123_456_789);
        h.xattrs
            .insert(b"user.k".to_vec(), b"v\0with\nbinary".to_vec());
        h
    }

    fn archive(entries: &[(Header, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (h, data) in entries {
            out.extend_from_slice(&h.encode());
            out.extend_from_slice(data);
            out.resize(out.len() + padding(data.len() as u64), 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"x"), b"9 path=x\n");
        assert_eq!(pax_record(b"path", b"xx"), b"11 path=xx\n");
        let long = vec![b'a'; 90];
        let r = pax_record(b"path", &long);
        let n: usize = std::str::from_utf8(&r[..r.iter().position(|c| *c == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn times() {
        assert_eq!(format_time(5, 0), "5");
        assert_eq!(format_time(5, 250_000_000), "5.250000000");
        assert_eq!(format_time(-1, 250_000_000), "-0.750000000");
        for t in [(5, 0), (5, 250_000_000), (-1, 250_000_000), (-3, 1)] {
            assert_eq!(parse_time(format_time(t.0, t.1).as_bytes()).unwrap(), t);
        }
        assert_eq!(parse_time(b"12.5").unwrap(), (12, 500_000_000));
    }

    #[test]
    fn round_trip_headers() {
        let mut long = sample();
        long.path = [b"d/".repeat(80), b"file".to_vec()].concat();
        let mut link = Header::new(b"l".to_vec(), Kind::Symlink);
        link.link = b"t/".repeat(70);
        link.uid = 5_000_000;
        let mut dev = Header::new(b"dev/null".to_vec(), Kind::Char);
        dev.dev = (1, 3);
        dev.mode = 0o666;
        let a = archive(&[
            (sample(), b"hello"),
            (long.clone(), b"hello"),
            (link.clone(), b""),
            (dev.clone(), b""),
        ]);
        let mut r = Reader::new(&a[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h, sample());
        let mut buf = [0u8; 16];
        assert_eq!(r.read_data(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(r.next_header().unwrap().unwrap(), long);
        assert_eq!(r.next_header().unwrap().unwrap(), link);
        assert_eq!(r.next_header().unwrap().unwrap(), dev);
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let a = archive(&[(sample(), b"hello")]);
        let mut x: u32 = 1;
        for i in 0..2000 {
            let mut c = a.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let at = (x as usize >> 8) % c.len();
                c[at] = (x >> 3) as u8;
            }
            c.truncate(c.len() - (i % 700));
            let mut r = Reader::new(&c[..]);
            while let Ok(Some(_)) = r.next_header() {}
        }
        let mut r = Reader::new(&b"not a tar file at all"[..]);
        assert!(r.next_header().is_err());
    }
}
