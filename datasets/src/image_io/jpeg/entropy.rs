//! Huffman entropy decoding: the bit reader, the derived Huffman tables and the per-block decoders
//! of sequential (libjpeg-turbo `jdhuff.c`) and progressive (libjpeg-turbo `jdphuff.c`) scans.
//!
//! Where libjpeg-turbo only warns about corrupt entropy data (a code that is in no table, a scan
//! that runs out of data before its last block) and goes on with zeros, these functions return an
//! error: the caller turns it into a "corrupt image" error naming the file.

use super::JpegError;

/// Bits the lookup table decodes in one step (libjpeg-turbo's `HUFF_LOOKAHEAD` is 8; one more
/// bit lets more AC coefficients take the fast path, the decoded symbols are the same).
const LOOKAHEAD: u32 = 9;

/// `NATURAL_ORDER[k]` is the row-major position of the `k`-th coefficient in zigzag order, with
/// 16 extra entries of 63 so that a corrupt run length that carries `k` past 63 writes the last
/// coefficient instead of out of bounds (libjpeg-turbo `jutils.c`, `jpeg_natural_order`).
pub(super) const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
];

/// A Huffman table prepared for decoding (libjpeg-turbo `jdhuff.c`, `jpeg_make_d_derived_tbl`).
#[derive(Clone)]
pub(super) struct HuffTable {
    /// For each `LOOKAHEAD`-bit prefix: `(code length << 8) | symbol`, or 0 when the code is
    /// longer than `LOOKAHEAD` bits.
    lookup: Box<[u16; 1 << LOOKAHEAD]>,
    /// For AC tables, each prefix whose code and value bits both fit in `LOOKAHEAD` bits, packed
    /// as `value << 16 | run << 8 | total bits`; 0 otherwise.
    fast_ac: Box<[i32; 1 << LOOKAHEAD]>,
    /// Largest code of each length (index 1..=16), -1 if none; index 17 is a sentinel.
    maxcode: [i32; 18],
    /// `values` index of the first code of each length minus that code.
    valoffset: [i32; 18],
    /// The symbols in code order.
    values: [u8; 256],
}

impl HuffTable {
    /// Builds the decoding tables from a DHT segment's 16 code counts and its symbols, with
    /// libjpeg-turbo's checks: at most 256 symbols, codes that fit their length (no all-ones
    /// code), and DC symbols no larger than 15.
    pub(super) fn new(counts: &[u8; 16], symbols: &[u8], is_dc: bool) -> Result<Self, String> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || total != symbols.len() {
            return Err(format!("bad Huffman table: {total} codes"));
        }
        if is_dc && symbols.iter().any(|&s| s > 15) {
            return Err("bad Huffman table: DC symbol larger than 15".into());
        }
        // Code lengths and canonical codes, in symbol order.
        let mut sizes = Vec::with_capacity(total);
        for (l, &c) in counts.iter().enumerate() {
            sizes.extend(std::iter::repeat_n(l as u32 + 1, usize::from(c)));
        }
        let mut codes = Vec::with_capacity(total);
        let mut code = 0u32;
        let mut si = sizes.first().copied().unwrap_or(0);
        let mut p = 0;
        while p < sizes.len() {
            while p < sizes.len() && sizes[p] == si {
                codes.push(code);
                code += 1;
                p += 1;
            }
            if u64::from(code) >= 1u64 << si {
                return Err("bad Huffman table: code lengths do not form a prefix code".into());
            }
            code <<= 1;
            si += 1;
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut p = 0usize;
        for l in 1..=16 {
            let n = usize::from(counts[l - 1]);
            if n > 0 {
                valoffset[l] = p as i32 - codes[p] as i32;
                p += n;
                maxcode[l] = codes[p - 1] as i32;
            }
        }
        maxcode[17] = 0xFFFFF;
        let mut values = [0u8; 256];
        values[..total].copy_from_slice(symbols);

        let mut lookup = Box::new([0u16; 1 << LOOKAHEAD]);
        let mut fast_ac = Box::new([0i32; 1 << LOOKAHEAD]);
        for (i, (&len, &code)) in sizes.iter().zip(&codes).enumerate() {
            if len > LOOKAHEAD {
                break;
            }
            let sym = symbols[i];
            let shift = LOOKAHEAD - len;
            let first = (code << shift) as usize;
            for prefix in first..first + (1usize << shift) {
                lookup[prefix] = ((len as u16) << 8) | u16::from(sym);
                let size = u32::from(sym & 15);
                if !is_dc && size != 0 && len + size <= LOOKAHEAD {
                    let bits = (prefix as u32 >> (LOOKAHEAD - len - size)) & ((1 << size) - 1);
                    let value = extend(bits, size);
                    fast_ac[prefix] = (value << 16) | (i32::from(sym >> 4) << 8) | (len + size) as i32;
                }
            }
        }
        Ok(Self { lookup, fast_ac, maxcode, valoffset, values })
    }
}

/// The signed value of an `s`-bit magnitude category (libjpeg-turbo `jdhuff.h`, `HUFF_EXTEND`).
#[inline(always)]
fn extend(bits: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if bits < 1 << (s - 1) {
        bits as i32 - (1 << s) + 1
    } else {
        bits as i32
    }
}

/// Reads the entropy-coded bits of a scan: removes stuffed zero bytes, stops at a marker and then
/// supplies zero bits, as libjpeg-turbo's `jpeg_fill_bit_buffer` does, remembering how many bits
/// were made up so that using them is an error.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Buffered bits, left-aligned.
    buf: u64,
    /// Number of buffered bits (real and made up).
    nbits: u32,
    /// Number of made-up zero bits at the end of the buffer.
    padded: u32,
    /// Whether a marker (or the end of the data) has been reached.
    at_marker: bool,
}

impl<'a> BitReader<'a> {
    /// Starts reading at byte `pos` of `data`.
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        Self { data, pos, buf: 0, nbits: 0, padded: 0, at_marker: false }
    }

    /// Where the marker search continues once the scan is decoded: at the marker that ended the
    /// data, or after the last byte buffered.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Fills the buffer to at least 57 bits.
    #[inline(never)]
    fn refill(&mut self) {
        // Fast path: eight bytes without a 0xFF among them.
        if !self.at_marker && self.pos + 8 <= self.data.len() {
            let chunk = u64::from_be_bytes(self.data[self.pos..self.pos + 8].try_into().unwrap_or([0; 8]));
            let inv = !chunk;
            let has_ff = inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080 != 0;
            if !has_ff {
                let nbytes = (64 - self.nbits) / 8;
                let keep = nbytes * 8;
                let top = if keep == 64 { chunk } else { chunk & !(u64::MAX >> keep) };
                self.buf |= top >> self.nbits;
                self.nbits += keep;
                self.pos += nbytes as usize;
                return;
            }
        }
        while self.nbits <= 56 {
            if self.at_marker {
                self.padded += 64 - self.nbits;
                self.nbits = 64;
                return;
            }
            let byte = match self.data.get(self.pos) {
                None => {
                    self.at_marker = true;
                    continue;
                }
                Some(&0xFF) => {
                    // FF fill bytes before a zero are one FF data byte; before anything else they
                    // start a marker, which ends the entropy-coded data.
                    let mut p = self.pos + 1;
                    while p < self.data.len() && self.data[p] == 0xFF {
                        p += 1;
                    }
                    if p < self.data.len() && self.data[p] == 0 {
                        self.pos = p + 1;
                        0xFF
                    } else {
                        self.at_marker = true;
                        continue;
                    }
                }
                Some(&b) => {
                    self.pos += 1;
                    b
                }
            };
            self.buf |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    /// Makes at least `n` (at most 57) bits available.
    #[inline(always)]
    fn ensure(&mut self, n: u32) {
        if self.nbits < n {
            self.refill();
        }
    }

    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.nbits -= n;
    }

    /// Reads `n` (1..=16) bits.
    #[inline(always)]
    fn bits(&mut self, n: u32) -> u32 {
        self.ensure(n);
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Reads one bit.
    #[inline(always)]
    fn bit(&mut self) -> bool {
        self.bits(1) != 0
    }

    /// Reads the `s`-bit value of a magnitude category and sign-extends it.
    #[inline(always)]
    fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        extend(self.bits(s), s)
    }

    /// Decodes one Huffman symbol (libjpeg-turbo `jdhuff.c`, `HUFF_DECODE` and
    /// `jpeg_huff_decode`).
    #[inline(always)]
    fn decode(&mut self, t: &HuffTable) -> Result<u8, JpegError> {
        self.ensure(16);
        let e = t.lookup[self.peek(LOOKAHEAD) as usize];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return Ok(e as u8);
        }
        self.decode_slow(t)
    }

    #[inline(never)]
    fn decode_slow(&mut self, t: &HuffTable) -> Result<u8, JpegError> {
        for l in LOOKAHEAD + 1..=16 {
            let code = self.peek(l) as i32;
            if code <= t.maxcode[l as usize] {
                self.consume(l);
                let idx = (code + t.valoffset[l as usize]) as usize;
                return Ok(t.values[idx & 0xFF]);
            }
        }
        Err(JpegError::Corrupt("bad Huffman code in the entropy-coded data".into()))
    }

    /// An error if the decoder has used bits beyond the end of the scan's data.
    pub(super) fn check_overrun(&self) -> Result<(), JpegError> {
        if self.nbits < self.padded {
            Err(JpegError::Corrupt("the entropy-coded data ends before the last block of the scan".into()))
        } else {
            Ok(())
        }
    }

    /// Handles a restart marker (libjpeg-turbo `jdhuff.c`, `process_restart`): drops the buffered
    /// bits and expects marker RST`n` next, after skipping any stray bytes as `next_marker` does.
    pub(super) fn restart(&mut self, n: u8) -> Result<(), JpegError> {
        self.check_overrun()?;
        self.buf = 0;
        self.nbits = 0;
        self.padded = 0;
        self.at_marker = false;
        match super::next_marker(self.data, self.pos) {
            Some((m, after)) if m == 0xD0 + n => {
                self.pos = after;
                Ok(())
            }
            Some((m, _)) => {
                Err(JpegError::Corrupt(format!("expected restart marker RST{n}, found marker 0xFF{m:02X}")))
            }
            None => Err(JpegError::Corrupt(format!("the data ends where restart marker RST{n} was expected"))),
        }
    }
}

/// Decodes one block of a sequential scan into `block` (zeroed by the caller) in natural order
/// (libjpeg-turbo `jdhuff.c`, `decode_mcu_slow`). Returns whether any AC coefficient was coded.
///
/// The bit buffer is kept in local variables (in registers) and written back to the reader only
/// around refills and on return.
#[inline(always)]
pub(super) fn decode_block_sequential(
    br: &mut BitReader<'_>,
    dc: &HuffTable,
    ac: &HuffTable,
    pred: &mut i32,
    block: &mut [i16; 64],
) -> Result<bool, JpegError> {
    let (mut buf, mut nbits) = (br.buf, br.nbits);
    // At least 32 bits buffered: a code (at most 16 bits) and its value (at most 15).
    macro_rules! fill {
        () => {
            if nbits < 32 {
                (br.buf, br.nbits) = (buf, nbits);
                br.refill();
                (buf, nbits) = (br.buf, br.nbits);
            }
        };
    }
    macro_rules! take {
        ($n:expr) => {{
            let n: u32 = $n;
            let v = (buf >> (64 - n)) as u32;
            buf <<= n;
            nbits -= n;
            v
        }};
    }
    macro_rules! huff {
        ($t:expr) => {{
            let e = $t.lookup[(buf >> (64 - LOOKAHEAD)) as usize];
            if e != 0 {
                take!(u32::from(e >> 8));
                e as u8
            } else {
                (br.buf, br.nbits) = (buf, nbits);
                let sym = br.decode_slow($t)?;
                (buf, nbits) = (br.buf, br.nbits);
                sym
            }
        }};
    }
    fill!();
    let s = u32::from(huff!(dc));
    let diff = if s == 0 { 0 } else { extend(take!(s), s) };
    *pred = pred.wrapping_add(diff);
    block[0] = *pred as i16;
    let mut any_ac = false;
    let mut k = 1usize;
    while k < 64 {
        fill!();
        let fast = ac.fast_ac[(buf >> (64 - LOOKAHEAD)) as usize];
        if fast != 0 {
            take!((fast & 0xFF) as u32);
            k += ((fast >> 8) & 0xFF) as usize;
            block[NATURAL_ORDER[k.min(79)]] = (fast >> 16) as i16;
            any_ac = true;
            k += 1;
            continue;
        }
        let rs = huff!(ac);
        let r = usize::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += r;
            block[NATURAL_ORDER[k.min(79)]] = extend(take!(s), s) as i16;
            any_ac = true;
        } else {
            if r != 15 {
                break;
            }
            k += 15;
        }
        k += 1;
    }
    (br.buf, br.nbits) = (buf, nbits);
    Ok(any_ac)
}

/// First DC scan of a progressive image for one block (libjpeg-turbo `jdphuff.c`,
/// `decode_mcu_DC_first`).
#[inline]
pub(super) fn decode_dc_first(
    br: &mut BitReader<'_>,
    dc: &HuffTable,
    pred: &mut i32,
    al: u32,
    block: &mut [i16; 64],
) -> Result<(), JpegError> {
    let s = u32::from(br.decode(dc)?);
    let diff = br.receive_extend(s);
    *pred = pred.wrapping_add(diff);
    block[0] = ((*pred as u32) << al) as i16;
    Ok(())
}

/// DC refinement scan for one block (libjpeg-turbo `jdphuff.c`, `decode_mcu_DC_refine`).
#[inline]
pub(super) fn decode_dc_refine(br: &mut BitReader<'_>, al: u32, block: &mut [i16; 64]) {
    if br.bit() {
        block[0] |= (1u32 << al) as i16;
    }
}

/// First AC scan over bands `ss..=se` for one block (libjpeg-turbo `jdphuff.c`,
/// `decode_mcu_AC_first`). `eobrun` carries the end-of-band run across blocks.
#[inline]
pub(super) fn decode_ac_first(
    br: &mut BitReader<'_>,
    ac: &HuffTable,
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
    block: &mut [i16; 64],
) -> Result<(), JpegError> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = ss;
    while k <= se {
        let rs = br.decode(ac)?;
        let r = u32::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += r as usize;
            let v = br.receive_extend(s);
            block[NATURAL_ORDER[k.min(79)]] = ((v as u32) << al) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = 1 << r;
            if r != 0 {
                *eobrun += br.bits(r);
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
    Ok(())
}

/// AC refinement scan over bands `ss..=se` for one block (libjpeg-turbo `jdphuff.c`,
/// `decode_mcu_AC_refine`).
#[inline]
pub(super) fn decode_ac_refine(
    br: &mut BitReader<'_>,
    ac: &HuffTable,
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
    block: &mut [i16; 64],
) -> Result<(), JpegError> {
    let p1 = (1i32 << al) as i16;
    let m1 = (-1i32 << al) as i16;
    // Appends a correction bit to an already-nonzero coefficient.
    let correct = |br: &mut BitReader<'_>, c: &mut i16| {
        if br.bit() && (*c & p1) == 0 {
            *c = if *c >= 0 { c.wrapping_add(p1) } else { c.wrapping_add(m1) };
        }
    };
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = br.decode(ac)?;
            let mut r = i32::from(rs >> 4);
            let s = rs & 15;
            let mut value = 0i16;
            if s != 0 {
                // The size of a newly nonzero coefficient is 1 in a valid file; libjpeg-turbo
                // warns and goes on otherwise, and so does this.
                value = if br.bit() { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = 1 << r;
                if r != 0 {
                    *eobrun += br.bits(r as u32);
                }
                break;
            }
            while k <= se {
                let c = &mut block[NATURAL_ORDER[k]];
                if *c != 0 {
                    correct(br, c);
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                block[NATURAL_ORDER[k.min(79)]] = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= se {
            let c = &mut block[NATURAL_ORDER[k]];
            if *c != 0 {
                correct(br, c);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}
