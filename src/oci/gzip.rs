//! gzip (RFC 1952) over deflate (RFC 1951), written here so the crate needs
//! no compression dependency.
//!
//! - [`GzWriter`]: deterministic output (mtime 0, no name, OS 255), LZ77 with
//!   hash chains and lazy matching, coded with the fixed Huffman table; a
//!   block whose fixed coding would be larger than the input is stored.
//!   Ratios are a little below `gzip -6` (no dynamic Huffman tables).
//! - [`GzReader`]: a complete inflater (stored, fixed and dynamic blocks),
//!   multi-member input, CRC-32 and length checked. Malformed input is an
//!   `InvalidData` error, never a panic.

use std::io::{self, Read, Write};

// ---------------------------------------------------------------------------
// CRC-32 (IEEE, reflected, as gzip uses it)
// ---------------------------------------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Running CRC-32; start with 0.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for b in data {
        c = CRC_TABLE[((c ^ *b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Whether a stream starts with the gzip magic.
pub fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
}

// ---------------------------------------------------------------------------
// Shared deflate tables
// ---------------------------------------------------------------------------

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const WINDOW: usize = 32 * 1024;

fn fixed_litlen_lengths() -> [u8; 288] {
    let mut l = [0u8; 288];
    for (i, v) in l.iter_mut().enumerate() {
        *v = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    l
}

fn reverse_bits(mut v: u32, n: u32) -> u32 {
    let mut r = 0;
    for _ in 0..n {
        r = (r << 1) | (v & 1);
        v >>= 1;
    }
    r
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// Input bytes compressed per deflate block.
const CHUNK: usize = 256 * 1024;
const MAX_CHAIN: usize = 48;
const NICE_LEN: usize = 128;
const HASH_BITS: u32 = 15;

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new() -> BitWriter {
        BitWriter {
            out: Vec::new(),
            acc: 0,
            n: 0,
        }
    }

    fn bits(&mut self, v: u32, n: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which deflate sends most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.bits(reverse_bits(code, len), len);
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.bits(0, 8 - self.n);
        }
    }
}

#[derive(Clone, Copy)]
enum Token {
    Lit(u8),
    Match { len: u16, dist: u16 },
}

fn len_code(len: u16) -> usize {
    LEN_BASE.iter().rposition(|b| *b <= len).unwrap_or(0)
}

fn dist_code(dist: u16) -> usize {
    DIST_BASE.iter().rposition(|b| *b <= dist).unwrap_or(0)
}

fn fixed_lit_code(sym: u32) -> (u32, u32) {
    match sym {
        0..=143 => (0x30 + sym, 8),
        144..=255 => (0x190 + sym - 144, 9),
        256..=279 => (sym - 256, 7),
        _ => (0xc0 + sym - 280, 8),
    }
}

fn fixed_cost(tokens: &[Token]) -> u64 {
    let mut bits = 3 + 7u64;
    for t in tokens {
        bits += match *t {
            Token::Lit(b) => fixed_lit_code(b as u32).1 as u64,
            Token::Match { len, dist } => {
                let lc = len_code(len);
                let dc = dist_code(dist);
                (fixed_lit_code(257 + lc as u32).1 + LEN_EXTRA[lc] as u32 + 5) as u64
                    + DIST_EXTRA[dc] as u64
            }
        };
    }
    bits
}

/// LZ77 over `buf[start..]`, with `buf[..start]` as history.
fn lz77(buf: &[u8], start: usize) -> Vec<Token> {
    let n = buf.len();
    let mut head = vec![-1i32; 1 << HASH_BITS];
    let mut prev = vec![-1i32; n];
    let hash = |i: usize| -> usize {
        let v = (buf[i] as u32) << 16 | (buf[i + 1] as u32) << 8 | buf[i + 2] as u32;
        (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
    };
    let mut inserted = 0usize;
    let mut insert_until = |p: usize, head: &mut Vec<i32>, prev: &mut Vec<i32>| {
        while inserted < p {
            if inserted + 3 <= n {
                let h = hash(inserted);
                prev[inserted] = head[h];
                head[h] = inserted as i32;
            }
            inserted += 1;
        }
    };
    let find = |i: usize, head: &Vec<i32>, prev: &Vec<i32>| -> (usize, usize) {
        if i + 3 > n {
            return (0, 0);
        }
        let max = (n - i).min(258);
        let mut best = (0usize, 0usize);
        let mut cand = head[hash(i)];
        let mut chain = 0;
        while cand >= 0 && chain < MAX_CHAIN {
            let c = cand as usize;
            if i - c > WINDOW {
                break;
            }
            if buf[c + best.0.min(max - 1)] == buf[i + best.0.min(max - 1)] {
                let mut l = 0;
                while l < max && buf[c + l] == buf[i + l] {
                    l += 1;
                }
                if l > best.0 {
                    best = (l, i - c);
                    if l >= max || l >= NICE_LEN {
                        break;
                    }
                }
            }
            cand = prev[c];
            chain += 1;
        }
        if best.0 >= 3 {
            best
        } else {
            (0, 0)
        }
    };
    let mut tokens = Vec::with_capacity(n - start);
    let mut i = start;
    while i < n {
        insert_until(i, &mut head, &mut prev);
        let (l, d) = find(i, &head, &prev);
        if l == 0 {
            tokens.push(Token::Lit(buf[i]));
            i += 1;
            continue;
        }
        if l < NICE_LEN && i + 1 < n {
            insert_until(i + 1, &mut head, &mut prev);
            let (l2, _) = find(i + 1, &head, &prev);
            if l2 > l {
                tokens.push(Token::Lit(buf[i]));
                i += 1;
                continue;
            }
        }
        tokens.push(Token::Match {
            len: l as u16,
            dist: d as u16,
        });
        i += l;
    }
    tokens
}

/// Compresses to gzip, writing whole blocks to `inner` as they fill.
pub struct GzWriter<W: Write> {
    inner: W,
    /// History (up to WINDOW bytes) followed by input not yet compressed.
    buf: Vec<u8>,
    hist: usize,
    crc: u32,
    size: u32,
    bits: BitWriter,
    header_done: bool,
}

impl<W: Write> GzWriter<W> {
    pub fn new(inner: W) -> GzWriter<W> {
        GzWriter {
            inner,
            buf: Vec::new(),
            hist: 0,
            crc: 0,
            size: 0,
            bits: BitWriter::new(),
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            // ID1 ID2 CM=8 FLG=0 MTIME=0 XFL=0 OS=255: no name, no time.
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        }
        Ok(())
    }

    /// Compresses `buf[hist..hist+len]` as one non-final block.
    fn block(&mut self, len: usize) -> io::Result<()> {
        let end = self.hist + len;
        let tokens = lz77(&self.buf[..end], self.hist);
        let fixed = fixed_cost(&tokens);
        let stored = (len as u64 + 5 * len.div_ceil(65535) as u64) * 8 + 8;
        if fixed <= stored {
            self.bits.bits(0b010, 3);
            for t in &tokens {
                match *t {
                    Token::Lit(b) => {
                        let (c, l) = fixed_lit_code(b as u32);
                        self.bits.code(c, l);
                    }
                    Token::Match { len, dist } => {
                        let lc = len_code(len);
                        let (c, l) = fixed_lit_code(257 + lc as u32);
                        self.bits.code(c, l);
                        self.bits
                            .bits((len - LEN_BASE[lc]) as u32, LEN_EXTRA[lc] as u32);
                        let dc = dist_code(dist);
                        self.bits.code(dc as u32, 5);
                        self.bits
                            .bits((dist - DIST_BASE[dc]) as u32, DIST_EXTRA[dc] as u32);
                    }
                }
            }
            let (c, l) = fixed_lit_code(256);
            self.bits.code(c, l);
        } else {
            for piece in self.buf[self.hist..end].chunks(65535) {
                self.bits.bits(0, 3);
                self.bits.align();
                let n = piece.len() as u16;
                self.bits.out.extend_from_slice(&n.to_le_bytes());
                self.bits.out.extend_from_slice(&(!n).to_le_bytes());
                self.bits.out.extend_from_slice(piece);
            }
        }
        let keep_from = end.saturating_sub(WINDOW);
        self.buf.drain(..keep_from);
        self.hist = end - keep_from;
        self.inner.write_all(&self.bits.out)?;
        self.bits.out.clear();
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        let rest = self.buf.len() - self.hist;
        if rest > 0 {
            self.block(rest)?;
        }
        // Final empty fixed block: BFINAL=1, BTYPE=01, end-of-block.
        self.bits.bits(0b011, 3);
        self.bits.code(0, 7);
        self.bits.align();
        self.bits.out.extend_from_slice(&self.crc.to_le_bytes());
        self.bits.out.extend_from_slice(&self.size.to_le_bytes());
        self.inner.write_all(&self.bits.out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.header()?;
        let total = data.len();
        self.crc = crc32_update(self.crc, data);
        self.size = self.size.wrapping_add(total as u32);
        let mut data = data;
        while !data.is_empty() {
            let room = CHUNK - (self.buf.len() - self.hist);
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() - self.hist == CHUNK {
                self.block(CHUNK)?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {msg}"))
}

struct BitReader<R: Read> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    acc: u64,
    n: u32,
}

impl<R: Read> BitReader<R> {
    fn new(inner: R) -> BitReader<R> {
        BitReader {
            inner,
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            acc: 0,
            n: 0,
        }
    }

    fn next_byte(&mut self) -> io::Result<Option<u8>> {
        if self.start == self.end {
            if self.eof {
                return Ok(None);
            }
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        self.eof = true;
                        return Ok(None);
                    }
                    Ok(k) => {
                        self.start = 0;
                        self.end = k.min(self.buf.len());
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let b = self.buf[self.start];
        self.start += 1;
        Ok(Some(b))
    }

    /// Tries to hold at least `k` bits; fewer only at end of input.
    fn fill(&mut self, k: u32) -> io::Result<()> {
        while self.n < k {
            match self.next_byte()? {
                Some(b) => {
                    self.acc |= (b as u64) << self.n;
                    self.n += 8;
                }
                None => break,
            }
        }
        Ok(())
    }

    fn bits(&mut self, k: u32) -> io::Result<u32> {
        if k == 0 {
            return Ok(0);
        }
        self.fill(k)?;
        if self.n < k {
            return Err(bad("truncated input"));
        }
        let v = (self.acc & ((1u64 << k) - 1)) as u32;
        self.acc >>= k;
        self.n -= k;
        Ok(v)
    }

    fn align(&mut self) {
        let drop = self.n % 8;
        self.acc >>= drop;
        self.n -= drop;
    }

    /// A whole byte after [`align`](Self::align); None at end of input.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        if self.n >= 8 {
            let b = self.acc as u8;
            self.acc >>= 8;
            self.n -= 8;
            return Ok(Some(b));
        }
        self.next_byte()
    }

    fn need_byte(&mut self) -> io::Result<u8> {
        self.byte()?.ok_or_else(|| bad("truncated input"))
    }

    fn u16le(&mut self) -> io::Result<u16> {
        Ok(u16::from_le_bytes([self.need_byte()?, self.need_byte()?]))
    }

    fn u32le(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        for v in &mut b {
            *v = self.need_byte()?;
        }
        Ok(u32::from_le_bytes(b))
    }
}

/// A canonical Huffman decoding table indexed by the next `max` input bits.
struct Huffman {
    /// `symbol << 4 | length`; 0 marks an unused code.
    table: Vec<u16>,
    max: u32,
}

impl Huffman {
    fn new(lengths: &[u8]) -> io::Result<Huffman> {
        let mut count = [0u16; 16];
        for &l in lengths {
            if l > 15 {
                return Err(bad("code length over 15"));
            }
            count[l as usize] += 1;
        }
        count[0] = 0;
        let max = (1..16).rev().find(|&l| count[l] > 0).unwrap_or(1) as u32;
        let mut left: i32 = 1;
        for c in count.iter().skip(1) {
            left = (left << 1) - *c as i32;
            if left < 0 {
                return Err(bad("over-subscribed Huffman code"));
            }
        }
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for l in 1..16 {
            code = (code + count[l - 1] as u32) << 1;
            next[l] = code;
        }
        let mut table = vec![0u16; 1 << max];
        for (sym, &l) in lengths.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let l = l as u32;
            let c = next[l as usize];
            next[l as usize] += 1;
            let r = reverse_bits(c, l) as usize;
            let step = 1usize << l;
            let mut i = r;
            while i < table.len() {
                table[i] = ((sym as u16) << 4) | l as u16;
                i += step;
            }
        }
        Ok(Huffman { table, max })
    }

    fn decode<R: Read>(&self, br: &mut BitReader<R>) -> io::Result<u16> {
        br.fill(self.max)?;
        let idx = (br.acc & ((1u64 << self.max) - 1)) as usize;
        let e = self.table.get(idx).copied().unwrap_or(0);
        let len = (e & 15) as u32;
        if len == 0 {
            return Err(bad("invalid Huffman code"));
        }
        if len > br.n {
            return Err(bad("truncated input"));
        }
        br.acc >>= len;
        br.n -= len;
        Ok(e >> 4)
    }
}

enum State {
    /// Expecting a gzip member header (or the end of input).
    Member,
    /// Expecting a block header.
    Block,
    Stored(usize),
    Huff(Box<(Huffman, Huffman)>),
    /// After the final block: the member trailer.
    Trailer,
    Done,
}

/// Decompresses a gzip stream (one or more members).
pub struct GzReader<R: Read> {
    src: BitReader<R>,
    /// Window (last WINDOW bytes of the member) followed by unread output.
    out: Vec<u8>,
    pos: usize,
    state: State,
    last_block: bool,
    member_len: u64,
    crc: u32,
    members: u32,
}

impl<R: Read> GzReader<R> {
    pub fn new(inner: R) -> GzReader<R> {
        GzReader {
            src: BitReader::new(inner),
            out: Vec::new(),
            pos: 0,
            state: State::Member,
            last_block: false,
            member_len: 0,
            crc: 0,
            members: 0,
        }
    }

    fn member_header(&mut self) -> io::Result<bool> {
        let b = &mut self.src;
        let Some(id1) = b.byte()? else {
            if self.members == 0 {
                return Err(bad("empty input"));
            }
            return Ok(false);
        };
        let id2 = b.byte()?;
        if id1 != 0x1f || id2 != Some(0x8b) {
            if self.members == 0 {
                return Err(bad("not gzip data"));
            }
            // Trailing bytes after a complete member (often zero padding)
            // are ignored, as gzip(1) does.
            return Ok(false);
        }
        if b.need_byte()? != 8 {
            return Err(bad("unknown compression method"));
        }
        let flg = b.need_byte()?;
        if flg & 0xe0 != 0 {
            return Err(bad("reserved header flags set"));
        }
        for _ in 0..6 {
            b.need_byte()?;
        }
        if flg & 4 != 0 {
            let xlen = b.u16le()?;
            for _ in 0..xlen {
                b.need_byte()?;
            }
        }
        for flag in [8u8, 16] {
            if flg & flag != 0 {
                while b.need_byte()? != 0 {}
            }
        }
        if flg & 2 != 0 {
            b.u16le()?;
        }
        self.members += 1;
        self.member_len = 0;
        self.crc = 0;
        self.last_block = false;
        self.out.clear();
        self.pos = 0;
        Ok(true)
    }

    fn dynamic_tables(&mut self) -> io::Result<(Huffman, Huffman)> {
        let b = &mut self.src;
        let hlit = b.bits(5)? as usize + 257;
        let hdist = b.bits(5)? as usize + 1;
        let hclen = b.bits(4)? as usize + 4;
        if hlit > 286 || hdist > 30 {
            return Err(bad("too many codes"));
        }
        let mut cl = [0u8; 19];
        for &i in CLEN_ORDER.iter().take(hclen) {
            cl[i] = b.bits(3)? as u8;
        }
        let clh = Huffman::new(&cl)?;
        let mut lens = vec![0u8; hlit + hdist];
        let mut i = 0;
        while i < lens.len() {
            let sym = clh.decode(b)?;
            let (val, rep) = match sym {
                0..=15 => (sym as u8, 1),
                16 => {
                    if i == 0 {
                        return Err(bad("repeat with no previous length"));
                    }
                    (lens[i - 1], 3 + b.bits(2)? as usize)
                }
                17 => (0, 3 + b.bits(3)? as usize),
                18 => (0, 11 + b.bits(7)? as usize),
                _ => return Err(bad("bad code length symbol")),
            };
            if i + rep > lens.len() {
                return Err(bad("code lengths overrun"));
            }
            lens[i..i + rep].fill(val);
            i += rep;
        }
        if lens[256] == 0 {
            return Err(bad("no end-of-block code"));
        }
        Ok((Huffman::new(&lens[..hlit])?, Huffman::new(&lens[hlit..])?))
    }

    /// Decodes until at least `want` new bytes exist or the state changes.
    fn step(&mut self, want: usize) -> io::Result<()> {
        let start = self.out.len();
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => {}
            State::Member => {
                // A new member starts with an empty window and no output.
                self.state = if self.member_header()? {
                    State::Block
                } else {
                    State::Done
                };
                return Ok(());
            }
            State::Block => {
                if self.last_block {
                    self.state = State::Trailer;
                    return Ok(());
                }
                self.last_block = self.src.bits(1)? == 1;
                self.state = match self.src.bits(2)? {
                    0 => {
                        self.src.align();
                        let len = self.src.u16le()?;
                        let nlen = self.src.u16le()?;
                        if len != !nlen {
                            return Err(bad("stored block length check failed"));
                        }
                        State::Stored(len as usize)
                    }
                    1 => {
                        let lit = Huffman::new(&fixed_litlen_lengths())?;
                        let dist = Huffman::new(&[5u8; 30])?;
                        State::Huff(Box::new((lit, dist)))
                    }
                    2 => State::Huff(Box::new(self.dynamic_tables()?)),
                    _ => return Err(bad("invalid block type")),
                };
            }
            State::Stored(mut left) => {
                while left > 0 && self.out.len() - start < want {
                    self.src.align();
                    let b = self.src.need_byte()?;
                    self.out.push(b);
                    left -= 1;
                }
                self.state = if left == 0 {
                    State::Block
                } else {
                    State::Stored(left)
                };
            }
            State::Huff(tables) => {
                let (lit, dist) = &*tables;
                let mut end = false;
                while self.out.len() - start < want {
                    let sym = lit.decode(&mut self.src)? as usize;
                    if sym < 256 {
                        self.out.push(sym as u8);
                    } else if sym == 256 {
                        end = true;
                        break;
                    } else {
                        let li = sym - 257;
                        if li >= 29 {
                            return Err(bad("invalid length symbol"));
                        }
                        let len =
                            LEN_BASE[li] as usize + self.src.bits(LEN_EXTRA[li] as u32)? as usize;
                        let di = dist.decode(&mut self.src)? as usize;
                        if di >= 30 {
                            return Err(bad("invalid distance symbol"));
                        }
                        let d =
                            DIST_BASE[di] as usize + self.src.bits(DIST_EXTRA[di] as u32)? as usize;
                        let produced = self.member_len + (self.out.len() - start) as u64;
                        if d > self.out.len() || d as u64 > produced {
                            return Err(bad("distance too far back"));
                        }
                        let from = self.out.len() - d;
                        for k in 0..len {
                            let v = self.out[from + k];
                            self.out.push(v);
                        }
                    }
                }
                self.state = if end {
                    State::Block
                } else {
                    State::Huff(tables)
                };
            }
            State::Trailer => {
                self.src.align();
                let crc = self.src.u32le()?;
                let isize = self.src.u32le()?;
                if crc != self.crc {
                    return Err(bad("CRC mismatch"));
                }
                if isize != self.member_len as u32 {
                    return Err(bad("length mismatch"));
                }
                self.state = State::Member;
            }
        }
        let new = &self.out[start..];
        self.crc = crc32_update(self.crc, new);
        self.member_len += new.len() as u64;
        Ok(())
    }
}

impl<R: Read> Read for GzReader<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        while self.pos == self.out.len() {
            if matches!(self.state, State::Done) {
                return Ok(0);
            }
            if self.out.len() > 3 * WINDOW {
                let cut = self.out.len() - WINDOW;
                self.out.drain(..cut);
                self.pos = self.out.len();
            }
            self.step(2 * WINDOW)?;
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut w = GzWriter::new(Vec::new());
        let step = (data.len() / pieces.max(1)).max(1);
        for c in data.chunks(step) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzReader::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 12345;
        let words: [&[u8]; 6] = [
            b"layer ",
            b"overlay ",
            b"whiteout ",
            b"tar ",
            b"\n",
            b"opaque ",
        ];
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if x >> 28 == 0 {
                v.push((x >> 8) as u8);
            } else {
                v.extend_from_slice(words[(x >> 16) as usize % words.len()]);
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, 3, 100, 70_000, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data = sample(n);
            let z = gz(&data, 7);
            assert_eq!(gunzip(&z).unwrap(), data, "size {n}");
            assert_eq!(z, gz(&data, 1), "output depends on write sizes ({n})");
        }
        let big = sample(1 << 20);
        assert!(gz(&big, 1).len() < big.len() / 3);
    }

    #[test]
    fn incompressible_data_is_stored() {
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let z = gz(&data, 3);
        assert!(z.len() < data.len() + 100);
        assert_eq!(gunzip(&z).unwrap(), data);
    }

    #[test]
    fn reads_system_gzip_if_present() {
        let data = sample(300_000);
        let Ok(mut child) = std::process::Command::new("gzip")
            .args(["-n", "-9", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        let d2 = data.clone();
        let t = std::thread::spawn(move || stdin.write_all(&d2));
        let out = child.wait_with_output().unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(gunzip(&out.stdout).unwrap(), data);
        // Two members concatenated decode as one stream.
        let mut two = out.stdout.clone();
        two.extend_from_slice(&gz(b"tail", 1));
        let mut want = data.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(gunzip(&two).unwrap(), want);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let z = gz(&sample(50_000), 1);
        assert!(gunzip(&z[..z.len() - 3]).is_err());
        let mut flipped = z.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        assert!(gunzip(&flipped).is_err());
        let mut x: u32 = 7;
        for len in 0..300 {
            let mut junk = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
            for _ in 0..len {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                junk.push((x >> 24) as u8);
            }
            let _ = gunzip(&junk);
        }
        assert!(gunzip(b"plain text").is_err());
    }
}
