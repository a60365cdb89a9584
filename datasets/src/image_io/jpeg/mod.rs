//! A JPEG decoder whose output is bit-exact with libjpeg-turbo's default decode, which PIL and
//! OpenCV (and so timm, torchvision and mmdetection) use: the accurate integer IDCT (`JDCT_ISLOW`,
//! `jidctint.c`), fancy (triangle-filter) chroma upsampling (`jdsample.c`) and the YCbCr to RGB
//! tables of `jdcolor.c`.
//!
//! It reads baseline, extended sequential and progressive Huffman-coded 8-bit files with any
//! integral sampling factors, restart intervals, grayscale, YCbCr, RGB, CMYK and YCCK. It rejects,
//! with an error, what PIL does not decode or libjpeg-turbo only decodes with extras not written
//! here: arithmetic coding, lossless and hierarchical JPEG, 12-bit samples, two or more than four
//! components, and progressive files whose scans leave low-frequency coefficients unrefined (where
//! libjpeg-turbo smooths blocks, `jdcoefct.c` `decompress_smooth_data`). Corrupt entropy-coded data
//! (a code in no table, a scan that ends early, a wrong restart marker) is an error too, where
//! libjpeg-turbo warns and fills in zeros.

mod color;
mod entropy;
mod idct;

pub(crate) use color::CmykRule;
use color::{ColorSpace, Plane, Upsample};
use entropy::{BitReader, HuffTable, NATURAL_ORDER};

/// Why a JPEG could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// The data is not a valid JPEG: malformed, truncated or corrupt.
    Corrupt(String),
    /// A valid JPEG of a kind this decoder does not handle.
    Unsupported(String),
}

/// A decoded JPEG: 8-bit RGB, row-major HWC, and the EXIF orientation tag if the file has one.
pub(crate) struct Decoded {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// The EXIF orientation (tag 0x0112 of the first `Exif` APP1 segment's IFD0), if present.
    pub orientation: Option<u16>,
}

/// PIL's decompression-bomb limit: it refuses images of more than twice `MAX_IMAGE_PIXELS`.
const MAX_PIXELS: usize = 2 * (1024 * 1024 * 1024 / 4 / 3);

/// Finds the next marker at or after `pos`, skipping stray bytes and 0xFF fill bytes as
/// libjpeg-turbo's `next_marker` (`jdmarker.c`) does. Returns the marker code and the position
/// after it.
pub(super) fn next_marker(data: &[u8], mut pos: usize) -> Option<(u8, usize)> {
    loop {
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        let &code = data.get(pos)?;
        pos += 1;
        if code != 0 {
            return Some((code, pos));
        }
    }
}

fn corrupt(msg: impl Into<String>) -> JpegError {
    JpegError::Corrupt(msg.into())
}

fn unsupported(msg: impl Into<String>) -> JpegError {
    JpegError::Unsupported(msg.into())
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// The quantization table, in natural order, latched at the component's first scan as
    /// libjpeg-turbo's `latch_quant_tables` (`jdinput.c`) does; libjpeg-turbo keeps its
    /// multipliers as `short`.
    quant: Option<[i16; 64]>,
    /// Downsampled size (`jdinput.c`, `downsampled_width` / `downsampled_height`).
    dw: usize,
    dh: usize,
    /// Blocks that cover the component (a non-interleaved scan's extent).
    bw: usize,
    bh: usize,
    /// Blocks in the MCU-padded grid (an interleaved scan's extent).
    pbw: usize,
    pbh: usize,
    /// Coefficients of every block of the padded grid, when the image is decoded in more than one
    /// scan.
    coefs: Vec<[i16; 64]>,
    /// Decoded samples, `pbw * 8` per row.
    plane: Vec<u8>,
    /// Progressive: the successive-approximation bit position each coefficient was last coded at,
    /// -1 if never (libjpeg-turbo's `coef_bits`).
    coef_bits: [i32; 64],
    dc_pred: i32,
}

struct Frame {
    progressive: bool,
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
    comps: Vec<Component>,
    /// Decode each block's samples as its scan is read (a single-scan sequential image) instead
    /// of keeping coefficients for the end.
    direct: bool,
    /// Scans seen so far.
    scans: usize,
}

#[derive(Default)]
struct Tables {
    quant: [Option<[i16; 64]>; 4],
    dc: [Option<HuffTable>; 4],
    ac: [Option<HuffTable>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe_transform: Option<u8>,
    orientation: Option<u16>,
    exif_seen: bool,
}

/// Sample and coefficient buffers kept by each thread between decodes, so that decoding a stream
/// of images (a data loader's worker) does not map fresh zeroed pages for every image.
#[derive(Default)]
struct Buffers {
    planes: Vec<Vec<u8>>,
    coefs: Vec<Vec<[i16; 64]>>,
}

/// Buffers larger than this many bytes in all are not kept.
const KEEP_BYTES: usize = 64 << 20;

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Decodes a JPEG file to 8-bit RGB; CMYK and YCCK files are converted with `cmyk`.
pub(crate) fn decode(data: &[u8], cmyk: CmykRule) -> Result<Decoded, JpegError> {
    let mut buffers = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let decoded = decode_with(data, cmyk, &mut buffers)?;
    let kept = buffers.planes.iter().map(Vec::capacity).sum::<usize>()
        + buffers.coefs.iter().map(|c| c.capacity() * 128).sum::<usize>();
    if kept <= KEEP_BYTES {
        BUFFERS.with(|b| *b.borrow_mut() = buffers);
    }
    Ok(decoded)
}

fn decode_with(data: &[u8], cmyk: CmykRule, buffers: &mut Buffers) -> Result<Decoded, JpegError> {
    if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(corrupt("missing JPEG start-of-image marker"));
    }
    let mut pos = 2;
    let mut tables = Tables::default();
    let mut frame: Option<Frame> = None;
    let mut space: Option<ColorSpace> = None;
    loop {
        let (marker, after) =
            next_marker(data, pos).ok_or_else(|| corrupt("the data ends before the end-of-image marker"))?;
        pos = after;
        match marker {
            0xD9 => break,
            // Markers without a length: restarts outside a scan and TEM are ignored, as in
            // libjpeg-turbo's `read_markers`.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(corrupt("a second start-of-image marker")),
            _ => {}
        }
        let len = match data.get(pos..pos + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err(corrupt("the data ends inside a marker segment")),
        };
        if len < 2 {
            return Err(corrupt(format!("invalid length {len} of marker 0xFF{marker:02X}")));
        }
        let seg = data.get(pos + 2..pos + len).ok_or_else(|| corrupt("the data ends inside a marker segment"))?;
        pos += len;
        match marker {
            0xC0..=0xC2 => {
                if frame.is_some() {
                    return Err(corrupt("more than one start-of-frame marker"));
                }
                frame = Some(read_frame(marker, seg)?);
            }
            0xC3 => return Err(unsupported("lossless JPEG is not supported")),
            0xC5..=0xC7 => return Err(unsupported("hierarchical JPEG is not supported")),
            0xC9..=0xCB | 0xCD..=0xCF => return Err(unsupported("arithmetic-coded JPEG is not supported")),
            0xC4 => read_dht(seg, &mut tables)?,
            0xDB => read_dqt(seg, &mut tables)?,
            0xDD => {
                if seg.len() != 2 {
                    return Err(corrupt("bad DRI segment length"));
                }
                tables.restart_interval = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
            }
            0xDA => {
                let f = frame.as_mut().ok_or_else(|| corrupt("start of scan before start of frame"))?;
                if space.is_none() {
                    space = Some(color_space(f, &tables)?);
                }
                pos = read_scan(data, pos, seg, f, &tables, buffers)?;
            }
            0xE0 => tables.jfif |= seg.len() >= 14 && seg.starts_with(b"JFIF\0"),
            0xE1 => {
                if !tables.exif_seen && seg.starts_with(b"Exif\0\0") {
                    tables.exif_seen = true;
                    tables.orientation = exif_orientation(&seg[6..]);
                }
            }
            0xEE => {
                if seg.len() >= 12 && seg.starts_with(b"Adobe") {
                    tables.adobe_transform = Some(seg[11]);
                }
            }
            // DAC (arithmetic conditioning), DNL, APPn, COM: nothing to use.
            0xCC | 0xDC | 0xE2..=0xEF | 0xFE => {}
            _ => return Err(corrupt(format!("unknown marker 0xFF{marker:02X}"))),
        }
    }
    let mut f = frame.ok_or_else(|| corrupt("no start-of-frame marker"))?;
    let space = space.ok_or_else(|| corrupt("no scan"))?;
    if f.progressive && smoothing_applies(&f) {
        return Err(unsupported(
            "progressive JPEG whose scans leave low-frequency coefficients unrefined (libjpeg-turbo \
             smooths such blocks; not implemented)",
        ));
    }
    if !f.direct {
        for c in &mut f.comps {
            let quant = c.quant.unwrap_or([0; 64]);
            let stride = c.pbw * 8;
            for by in 0..c.bh {
                for bx in 0..c.bw {
                    let coefs = &c.coefs[by * c.pbw + bx];
                    let out = &mut c.plane[by * 8 * stride + bx * 8..];
                    if coefs[1..].iter().all(|&v| v == 0) {
                        idct::fill_block(idct::dc_only_value(coefs[0], quant[0]), out, stride);
                    } else {
                        idct::idct_islow(coefs, &quant, out, stride);
                    }
                }
            }
        }
    }
    let mut planes = Vec::with_capacity(f.comps.len());
    for c in &f.comps {
        let method = Upsample::select(c.h, c.v, f.hmax, f.vmax, c.dw)
            .ok_or_else(|| unsupported("fractional chroma sampling ratios are not supported"))?;
        planes.push(Plane { data: &c.plane, stride: c.pbw * 8, dw: c.dw, dh: c.dh, method });
    }
    let rgb = color::to_rgb(&planes, space, cmyk, f.width, f.height);
    for c in f.comps {
        buffers.planes.push(c.plane);
        buffers.coefs.push(c.coefs);
    }
    Ok(Decoded { width: f.width, height: f.height, rgb, orientation: tables.orientation })
}

fn read_frame(marker: u8, seg: &[u8]) -> Result<Frame, JpegError> {
    if seg.len() < 6 {
        return Err(corrupt("start-of-frame segment too short"));
    }
    let precision = seg[0];
    let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
    let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
    let n = usize::from(seg[5]);
    if seg.len() != 6 + 3 * n {
        return Err(corrupt("bad start-of-frame segment length"));
    }
    match precision {
        8 => {}
        12 | 16 => return Err(unsupported(format!("{precision}-bit JPEG samples are not supported (8-bit are)"))),
        _ => return Err(corrupt(format!("bad sample precision {precision}"))),
    }
    if height == 0 {
        return Err(unsupported("JPEG whose height is given by a DNL marker is not supported"));
    }
    if width == 0 || n == 0 {
        return Err(corrupt("empty JPEG image"));
    }
    if width * height > MAX_PIXELS {
        return Err(unsupported(format!("{width}x{height} JPEG is larger than {MAX_PIXELS} pixels")));
    }
    if !matches!(n, 1 | 3 | 4) {
        return Err(unsupported(format!("JPEG with {n} components is not supported (1, 3 or 4 are)")));
    }
    let mut comps = Vec::with_capacity(n);
    for c in seg[6..].chunks_exact(3) {
        let (h, v, tq) = (usize::from(c[1] >> 4), usize::from(c[1] & 15), usize::from(c[2]));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(corrupt(format!("bad sampling factors {h}x{v}")));
        }
        if tq > 3 {
            return Err(corrupt(format!("bad quantization table index {tq}")));
        }
        comps.push(Component {
            id: c[0],
            h,
            v,
            tq,
            quant: None,
            dw: 0,
            dh: 0,
            bw: 0,
            bh: 0,
            pbw: 0,
            pbh: 0,
            coefs: Vec::new(),
            plane: Vec::new(),
            coef_bits: [-1; 64],
            dc_pred: 0,
        });
    }
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    let mcux = width.div_ceil(8 * hmax);
    let mcuy = height.div_ceil(8 * vmax);
    for c in &mut comps {
        c.dw = (width * c.h).div_ceil(hmax);
        c.dh = (height * c.v).div_ceil(vmax);
        c.bw = c.dw.div_ceil(8);
        c.bh = c.dh.div_ceil(8);
        c.pbw = mcux * c.h;
        c.pbh = mcuy * c.v;
        if Upsample::select(c.h, c.v, hmax, vmax, c.dw).is_none() {
            return Err(unsupported(format!(
                "fractional chroma sampling ({}x{} in a {hmax}x{vmax} frame) is not supported",
                c.h, c.v
            )));
        }
    }
    Ok(Frame { progressive: marker == 0xC2, width, height, hmax, vmax, mcux, mcuy, comps, direct: false, scans: 0 })
}

fn read_dht(mut seg: &[u8], t: &mut Tables) -> Result<(), JpegError> {
    while !seg.is_empty() {
        if seg.len() < 17 {
            return Err(corrupt("bad DHT segment length"));
        }
        let (class, index) = (seg[0] >> 4, usize::from(seg[0] & 15));
        if class > 1 || index > 3 {
            return Err(corrupt(format!("bad Huffman table class {class} or index {index}")));
        }
        let counts: [u8; 16] = seg[1..17].try_into().unwrap_or([0; 16]);
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = seg.get(17..17 + total).ok_or_else(|| corrupt("bad DHT segment length"))?;
        let table = HuffTable::new(&counts, symbols, class == 0).map_err(corrupt)?;
        if class == 0 {
            t.dc[index] = Some(table);
        } else {
            t.ac[index] = Some(table);
        }
        seg = &seg[17 + total..];
    }
    Ok(())
}

fn read_dqt(mut seg: &[u8], t: &mut Tables) -> Result<(), JpegError> {
    while !seg.is_empty() {
        let (precision, index) = (seg[0] >> 4, usize::from(seg[0] & 15));
        if index > 3 || precision > 1 {
            return Err(corrupt(format!("bad quantization table index {index} or precision {precision}")));
        }
        let size = if precision == 0 { 64 } else { 128 };
        let body = seg.get(1..1 + size).ok_or_else(|| corrupt("bad DQT segment length"))?;
        let mut q = [0i16; 64];
        for k in 0..64 {
            let v =
                if precision == 0 { u16::from(body[k]) } else { u16::from_be_bytes([body[2 * k], body[2 * k + 1]]) };
            q[NATURAL_ORDER[k]] = v as i16;
        }
        t.quant[index] = Some(q);
        seg = &seg[1 + size..];
    }
    Ok(())
}

/// libjpeg-turbo's guess of the color space (`jdapimin.c`, `default_decompress_parms`).
fn color_space(f: &Frame, t: &Tables) -> Result<ColorSpace, JpegError> {
    Ok(match f.comps.len() {
        1 => ColorSpace::Gray,
        3 => {
            if t.jfif {
                ColorSpace::YCbCr
            } else if let Some(transform) = t.adobe_transform {
                if transform == 0 {
                    ColorSpace::Rgb
                } else {
                    ColorSpace::YCbCr
                }
            } else {
                let ids = [f.comps[0].id, f.comps[1].id, f.comps[2].id];
                if ids == [b'R', b'G', b'B'] {
                    ColorSpace::Rgb
                } else {
                    ColorSpace::YCbCr
                }
            }
        }
        4 => match t.adobe_transform {
            Some(0) | None => ColorSpace::Cmyk,
            Some(_) => ColorSpace::Ycck,
        },
        n => return Err(unsupported(format!("JPEG with {n} components is not supported"))),
    })
}

/// Whether libjpeg-turbo would smooth blocks at output (`jdcoefct.c`, `smoothing_ok`): some of the
/// first ten coefficients of a component are not fully refined, while every component has its
/// quantization table latched with nonzero entries at those positions and has DC data.
fn smoothing_applies(f: &Frame) -> bool {
    const POSITIONS: [usize; 10] = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24];
    let mut useful = false;
    for c in &f.comps {
        let Some(q) = c.quant else { return false };
        if POSITIONS.iter().any(|&p| q[p] == 0) || c.coef_bits[0] < 0 {
            return false;
        }
        useful |= c.coef_bits[1..10].iter().any(|&b| b != 0);
    }
    useful
}

/// Reads the SOS header `seg` and decodes the scan's entropy-coded data, which starts at `pos`.
/// Returns where the marker search continues.
fn read_scan(
    data: &[u8],
    pos: usize,
    seg: &[u8],
    f: &mut Frame,
    t: &Tables,
    buffers: &mut Buffers,
) -> Result<usize, JpegError> {
    let ns = usize::from(*seg.first().ok_or_else(|| corrupt("empty start-of-scan segment"))?);
    if !(1..=4).contains(&ns) || seg.len() != 4 + 2 * ns {
        return Err(corrupt("bad start-of-scan segment length"));
    }
    let mut members = Vec::with_capacity(ns);
    for s in seg[1..1 + 2 * ns].chunks_exact(2) {
        let ci = f
            .comps
            .iter()
            .position(|c| c.id == s[0])
            .ok_or_else(|| corrupt(format!("scan names component {} that the frame lacks", s[0])))?;
        if members.iter().any(|&(c, _, _)| c == ci) {
            return Err(corrupt(format!("scan names component {} twice", s[0])));
        }
        members.push((ci, usize::from(s[1] >> 4), usize::from(s[1] & 15)));
    }
    let tail = &seg[1 + 2 * ns..];
    let (ss, se, ah, al) =
        (usize::from(tail[0]), usize::from(tail[1]), u32::from(tail[2] >> 4), u32::from(tail[2] & 15));
    if ns > 1 && members.iter().map(|&(c, _, _)| f.comps[c].h * f.comps[c].v).sum::<usize>() > 10 {
        return Err(corrupt("more than 10 blocks in an MCU"));
    }
    if f.scans == 0 {
        f.direct = !f.progressive && ns == f.comps.len();
        for c in &mut f.comps {
            // Every sample read later is written first (by the IDCT of its block), so a reused
            // buffer need not be cleared; coefficients accumulate over scans and must be.
            c.plane = buffers.planes.pop().unwrap_or_default();
            c.plane.resize(c.pbw * 8 * c.pbh * 8, 0);
            if !f.direct {
                c.coefs = buffers.coefs.pop().unwrap_or_default();
                c.coefs.clear();
                c.coefs.resize(c.pbw * c.pbh, [0; 64]);
            }
        }
    } else if f.direct {
        return Err(corrupt("a second scan in a single-scan image (expected the end of the image)"));
    }
    f.scans += 1;
    // Latch the quantization tables and check the Huffman tables this scan needs.
    for &(ci, td, ta) in &members {
        let c = &mut f.comps[ci];
        if c.quant.is_none() {
            c.quant =
                Some(t.quant[c.tq].ok_or_else(|| corrupt(format!("quantization table {} is not defined", c.tq)))?);
        }
        c.dc_pred = 0;
        let need_dc = !f.progressive || (ss == 0 && ah == 0);
        let need_ac = !f.progressive || ss != 0;
        if need_dc && t.dc.get(td).and_then(Option::as_ref).is_none() {
            return Err(corrupt(format!("DC Huffman table {td} is not defined")));
        }
        if need_ac && t.ac.get(ta).and_then(Option::as_ref).is_none() {
            return Err(corrupt(format!("AC Huffman table {ta} is not defined")));
        }
    }
    if f.progressive {
        // libjpeg-turbo `jdphuff.c`, `start_pass_phuff_decoder`: scan parameter checks (errors)
        // and the coefficient refinement bookkeeping (its order checks only warn).
        let bad =
            if ss == 0 { se != 0 } else { ss > se || se >= 64 || ns != 1 } || (ah != 0 && al + 1 != ah) || al > 13;
        if bad {
            return Err(corrupt(format!("invalid progressive scan Ss={ss} Se={se} Ah={ah} Al={al}")));
        }
        for &(ci, _, _) in &members {
            for b in &mut f.comps[ci].coef_bits[ss..=se] {
                *b = al as i32;
            }
        }
    }
    // The tables each scan member uses (checked above where the scan needs them).
    let scan: Vec<(usize, Option<&HuffTable>, Option<&HuffTable>)> = members
        .iter()
        .map(|&(ci, td, ta)| (ci, t.dc.get(td).and_then(Option::as_ref), t.ac.get(ta).and_then(Option::as_ref)))
        .collect();
    let missing = || corrupt("missing Huffman table");
    let mut br = BitReader::new(data, pos);
    let interval = t.restart_interval;
    let mut next_rst = 0u8;
    let mut eobrun = 0u32;
    // A non-interleaved scan covers the component's own blocks, one block per MCU; an
    // interleaved one the MCU grid.
    let (mcus_x, mcus_y) = if ns == 1 {
        let c = &f.comps[members[0].0];
        (c.bw, c.bh)
    } else {
        (f.mcux, f.mcuy)
    };
    let (direct, progressive) = (f.direct, f.progressive);
    let mut mcu = 0usize;
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if interval > 0 && mcu > 0 && mcu.is_multiple_of(interval) {
                br.restart(next_rst)?;
                next_rst = (next_rst + 1) & 7;
                eobrun = 0;
                for &(ci, _, _) in &scan {
                    f.comps[ci].dc_pred = 0;
                }
            }
            mcu += 1;
            for &(ci, dc, ac) in &scan {
                let c = &mut f.comps[ci];
                let (bh_n, bv_n) = if ns == 1 { (1, 1) } else { (c.h, c.v) };
                for by in 0..bv_n {
                    for bx in 0..bh_n {
                        let (x, y) = if ns == 1 { (mx, my) } else { (mx * c.h + bx, my * c.v + by) };
                        if direct {
                            let mut block = [0i16; 64];
                            let (dc, ac) = (dc.ok_or_else(missing)?, ac.ok_or_else(missing)?);
                            let any_ac = entropy::decode_block_sequential(&mut br, dc, ac, &mut c.dc_pred, &mut block)?;
                            let quant = c.quant.as_ref().ok_or_else(|| corrupt("missing quantization table"))?;
                            let stride = c.pbw * 8;
                            let out = &mut c.plane[y * 8 * stride + x * 8..];
                            if any_ac {
                                idct::idct_islow(&block, quant, out, stride);
                            } else {
                                idct::fill_block(idct::dc_only_value(block[0], quant[0]), out, stride);
                            }
                            continue;
                        }
                        let coefs = &mut c.coefs[y * c.pbw + x];
                        if !progressive {
                            *coefs = [0; 64];
                            let (dc, ac) = (dc.ok_or_else(missing)?, ac.ok_or_else(missing)?);
                            entropy::decode_block_sequential(&mut br, dc, ac, &mut c.dc_pred, coefs)?;
                        } else if ss == 0 {
                            if ah == 0 {
                                entropy::decode_dc_first(&mut br, dc.ok_or_else(missing)?, &mut c.dc_pred, al, coefs)?;
                            } else {
                                entropy::decode_dc_refine(&mut br, al, coefs);
                            }
                        } else if ah == 0 {
                            entropy::decode_ac_first(&mut br, ac.ok_or_else(missing)?, ss, se, al, &mut eobrun, coefs)?;
                        } else {
                            entropy::decode_ac_refine(
                                &mut br,
                                ac.ok_or_else(missing)?,
                                ss,
                                se,
                                al,
                                &mut eobrun,
                                coefs,
                            )?;
                        }
                    }
                }
            }
            br.check_overrun()?;
        }
    }
    Ok(br.position())
}

/// The orientation tag (0x0112) of IFD0 of a TIFF-structured EXIF block, if present and
/// well-formed.
fn exif_orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |p: usize| -> Option<u16> {
        let b = tiff.get(p..p + 2)?;
        Some(if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    };
    let u32_at = |p: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(p..p + 4)?.try_into().ok()?;
        Some(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    for i in 0..count {
        let entry = ifd + 2 + 12 * i;
        if u16_at(entry)? == 0x0112 {
            // SHORT, count 1: the value sits in the first two bytes of the value field.
            return (u16_at(entry + 2)? == 3).then(|| u16_at(entry + 8)).flatten();
        }
    }
    None
}
