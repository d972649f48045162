//! Camera frames to RGB: YUYV (YUY2), NV12 (one buffer or two planes, NM12) and MJPEG into
//! one reused buffer.
//!
//! [`Converter::convert`] takes a [`RawFrame`] (the bytes a camera delivered, its pixel
//! format, size and line stride) and returns the frame as packed RGB (HWC, u8), written
//! into a buffer the converter owns and keeps: after the first frame of a size, YUYV and
//! NV12 conversion allocate nothing. MJPEG is decoded by zune-jpeg (the decoder the
//! `image` crate already uses, so it adds no dependency) straight into the same buffer;
//! the decoder allocates its own scratch on every frame (4 allocations, 32 KB for a
//! 640x480 frame; counted apart by `tests/alloc_convert.rs`, as tract's are), which only
//! a decoder with reusable state could avoid.
//!
//! YUYV and NV12 are gathered into planar blocks of 32 pixels and computed lane-wise (the
//! compiler vectorises that loop; an AVX2 build of it is picked at run time on x86_64).
//!
//! Colour: YUYV and NV12 use BT.601. The range is [`YuvRange::Limited`] by default
//! (Y 16..235, Cb/Cr 16..240, what UVC webcams and most V4L2 drivers send) and
//! [`YuvRange::Full`] on request (Y, Cb, Cr 0..255, JFIF). MJPEG is full-range BT.601
//! by the JPEG (JFIF) standard and ignores the setting. Fixed point: each channel is
//! `(c_y * (Y - y0) + c_u * (U - 128) + c_v * (V - 128) + 2^15) >> 16`, clamped to 0..255;
//! chroma is shared by the two pixels of a YUYV pair and the 2x2 block of NV12 (no
//! interpolation).
//!
//! Garbage in is a typed [`ConvertError`], never a panic: a frame shorter than its format
//! needs (a truncated USB transfer), a stride too small for the width, a JPEG that does
//! not decode, ends without its end-of-image marker, or has another size than the one
//! negotiated. The camera source reports these as bad frames (skipped and counted).
//!
//! Odd sizes: a YUYV row of an odd width ends with a half-used pair (`ceil(w / 2)` pairs);
//! NV12's chroma plane is `ceil(w / 2)` x `ceil(h / 2)` pairs with the luma plane's stride.
//!
//! Multi-planar NV12 (`NM12`, what ARM camera pipelines deliver through the V4L2
//! multi-planar API) is the same layout with the chroma plane in its own buffer
//! ([`RawFrame::chroma`]), with the luma plane's stride.

use std::cell::Cell;

/// The pixel formats a camera frame can arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PixelFormat {
    /// Packed 4:2:2, `Y0 U Y1 V` per pair of pixels (V4L2 `YUYV`, also called YUY2).
    #[serde(rename = "YUYV")]
    Yuyv,
    /// Planar 4:2:0: a Y plane, then one plane of interleaved `U V` pairs (V4L2 `NV12`).
    #[serde(rename = "NV12")]
    Nv12,
    /// NV12 in two buffers, luma then interleaved `U V` (V4L2 `NM12`, multi-planar API).
    #[serde(rename = "NM12")]
    Nv12M,
    /// Motion JPEG: each frame a JPEG (V4L2 `MJPG`).
    #[serde(rename = "MJPG")]
    Mjpeg,
}

impl PixelFormat {
    /// The V4L2 fourcc.
    pub fn fourcc(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Nv12M => "NM12",
            PixelFormat::Mjpeg => "MJPG",
        }
    }

    /// Parses a fourcc or common name (`YUYV`, `YUY2`, `NV12`, `NM12`, `MJPG`, `MJPEG`; any
    /// case).
    pub fn parse(s: &str) -> Option<PixelFormat> {
        match s.trim().to_ascii_uppercase().as_str() {
            "YUYV" | "YUY2" => Some(PixelFormat::Yuyv),
            "NV12" => Some(PixelFormat::Nv12),
            "NM12" => Some(PixelFormat::Nv12M),
            "MJPG" | "MJPEG" => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }

    /// The smallest line stride (bytes per row of the first plane) for a width.
    pub fn min_stride(self, width: u32) -> usize {
        let pairs = (width as usize).div_ceil(2);
        match self {
            PixelFormat::Yuyv => pairs * 4,
            PixelFormat::Nv12 | PixelFormat::Nv12M => pairs * 2,
            PixelFormat::Mjpeg => 0,
        }
    }

    /// The fewest bytes a frame of this size and stride can have (0 for MJPEG; for NM12
    /// the luma plane, [`PixelFormat::chroma_min_len`] the other).
    pub fn min_len(self, width: u32, height: u32, stride: usize) -> usize {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return 0;
        }
        match self {
            PixelFormat::Yuyv => stride * (h - 1) + w.div_ceil(2) * 4,
            PixelFormat::Nv12 => stride * h + Self::nv12_chroma_len(w, h, stride),
            PixelFormat::Nv12M => stride * (h - 1) + w,
            PixelFormat::Mjpeg => 0,
        }
    }

    /// The fewest bytes the separate chroma plane of an NM12 frame can have (0 for the
    /// single-plane formats).
    pub fn chroma_min_len(self, width: u32, height: u32, stride: usize) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Nv12M if w > 0 && h > 0 => Self::nv12_chroma_len(w, h, stride),
            _ => 0,
        }
    }

    fn nv12_chroma_len(w: usize, h: usize, stride: usize) -> usize {
        stride * (h.div_ceil(2) - 1) + w.div_ceil(2) * 2
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.fourcc())
    }
}

/// The range of YUV values (YUYV and NV12 only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YuvRange {
    /// Y 16..235, Cb/Cr 16..240 ("TV" / studio range): what webcams send.
    #[default]
    Limited,
    /// Y, Cb, Cr 0..255 ("PC" / JFIF range).
    Full,
}

/// The bytes of one camera frame as delivered.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per row of the (first) plane; 0: packed ([`PixelFormat::min_stride`]).
    /// Ignored for MJPEG.
    pub stride: usize,
    pub data: &'a [u8],
    /// NM12's chroma plane (same stride as the luma plane); None for the other formats.
    pub chroma: Option<&'a [u8]>,
}

/// Why a frame could not be converted. The frame is skipped; the next one may be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{format} frame is {width}x{height}; both sides must be at least 1 pixel")]
    Degenerate {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    #[error("{format} frame is truncated: a {width}x{height} frame (stride {stride}) needs {expected} bytes, got {got}")]
    Truncated {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        expected: usize,
        got: usize,
    },
    #[error("NM12 frame's chroma plane is truncated: a {width}x{height} frame (stride {stride}) needs {expected} bytes, got {got}")]
    ChromaTruncated {
        width: u32,
        height: u32,
        stride: usize,
        expected: usize,
        got: usize,
    },
    #[error("{format} frame: stride {stride} bytes is too small for a width of {width} (needs at least {min})")]
    Stride {
        format: PixelFormat,
        width: u32,
        stride: usize,
        min: usize,
    },
    #[error("MJPEG frame is empty (0 bytes)")]
    EmptyJpeg,
    #[error("MJPEG frame is truncated: no end-of-image marker in its last KiB ({len} bytes)")]
    TruncatedJpeg { len: usize },
    #[error("MJPEG frame does not decode: {0}")]
    Jpeg(String),
    #[error("MJPEG frame is {got_w}x{got_h}, but {want_w}x{want_h} was negotiated")]
    JpegSize {
        want_w: u32,
        want_h: u32,
        got_w: u32,
        got_h: u32,
    },
}

/// BT.601 YUV -> RGB coefficients in 16.16 fixed point.
#[derive(Debug, Clone, Copy)]
struct Coeffs {
    y0: i32,
    cy: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Coeffs {
    const fn of(range: YuvRange) -> Coeffs {
        match range {
            // 255/219, 255/224 * 1.402, ... (ITU-R BT.601, studio swing)
            YuvRange::Limited => Coeffs {
                y0: 16,
                cy: 76309,  // 1.164383
                rv: 104597, // 1.596027
                gu: 25675,  // 0.391762
                gv: 53279,  // 0.812968
                bu: 132201, // 2.017232
            },
            // JFIF
            YuvRange::Full => Coeffs {
                y0: 0,
                cy: 65536,  // 1
                rv: 91881,  // 1.402
                gu: 22554,  // 0.344136
                gv: 46802,  // 0.714136
                bu: 116130, // 1.772
            },
        }
    }
}

fn check_layout(f: &RawFrame) -> Result<usize, ConvertError> {
    if f.width == 0 || f.height == 0 {
        return Err(ConvertError::Degenerate {
            format: f.format,
            width: f.width,
            height: f.height,
        });
    }
    let min = f.format.min_stride(f.width);
    let stride = if f.stride == 0 { min } else { f.stride };
    if stride < min {
        return Err(ConvertError::Stride {
            format: f.format,
            width: f.width,
            stride,
            min,
        });
    }
    let expected = f.format.min_len(f.width, f.height, stride);
    if f.data.len() < expected {
        return Err(ConvertError::Truncated {
            format: f.format,
            width: f.width,
            height: f.height,
            stride,
            expected,
            got: f.data.len(),
        });
    }
    let chroma = f.format.chroma_min_len(f.width, f.height, stride);
    let got = f.chroma.map_or(0, <[u8]>::len);
    if got < chroma {
        return Err(ConvertError::ChromaTruncated {
            width: f.width,
            height: f.height,
            stride,
            expected: chroma,
            got,
        });
    }
    Ok(stride)
}

/// Pixels converted per block: gathered into planar arrays, computed in lanes (the
/// compiler vectorises the arithmetic), then interleaved into RGB.
const BLOCK: usize = 32;

/// Planar luma and per-pixel chroma of up to [`BLOCK`] pixels.
struct Planes {
    y: [u8; BLOCK],
    u: [u8; BLOCK],
    v: [u8; BLOCK],
}

impl Planes {
    const fn new() -> Self {
        Planes {
            y: [0; BLOCK],
            u: [128; BLOCK],
            v: [128; BLOCK],
        }
    }

    /// Writes the first `n` pixels as RGB into `out` (`n * 3` bytes). Same integer
    /// arithmetic for every pixel: `(c_y (Y - y0) + c_u (U - 128) + c_v (V - 128) + 2^15) >> 16`.
    #[inline(always)]
    fn emit(&self, c: &Coeffs, out: &mut [u8], n: usize) {
        let (mut r, mut g, mut b) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
        let n = n.min(BLOCK);
        let (ys, us, vs) = (&self.y[..n], &self.u[..n], &self.v[..n]);
        let (rs, gs, bs) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        let half = 1i32 << 15; // rounding
        for i in 0..n {
            // (wrapping: no overflow is possible, and the dev profile's overflow checks
            // would keep the loop from vectorising)
            let l =
                c.cy.wrapping_mul((ys[i] as i32).wrapping_sub(c.y0))
                    .wrapping_add(half);
            let u = (us[i] as i32).wrapping_sub(128);
            let v = (vs[i] as i32).wrapping_sub(128);
            let rr = l.wrapping_add(c.rv.wrapping_mul(v));
            let gg = l
                .wrapping_sub(c.gu.wrapping_mul(u))
                .wrapping_sub(c.gv.wrapping_mul(v));
            let bb = l.wrapping_add(c.bu.wrapping_mul(u));
            rs[i] = (rr >> 16).clamp(0, 255) as u8;
            gs[i] = (gg >> 16).clamp(0, 255) as u8;
            bs[i] = (bb >> 16).clamp(0, 255) as u8;
        }
        if let Ok(out) = <&mut [u8; BLOCK * 3]>::try_from(&mut out[..]) {
            // A whole block: fixed size, no bounds checks, unrolled.
            for i in 0..BLOCK {
                out[3 * i] = r[i];
                out[3 * i + 1] = g[i];
                out[3 * i + 2] = b[i];
            }
            return;
        }
        for (i, px) in out[..n * 3].chunks_exact_mut(3).enumerate() {
            px[0] = r[i];
            px[1] = g[i];
            px[2] = b[i];
        }
    }
}

/// YUYV -> RGB into `rgb` (exactly `width * height * 3` bytes). Allocates nothing.
pub fn yuyv_to_rgb(f: &RawFrame, range: YuvRange, rgb: &mut [u8]) -> Result<(), ConvertError> {
    let stride = check_layout(f)?;
    let c = Coeffs::of(range);
    assert_eq!(
        rgb.len(),
        f.width as usize * f.height as usize * 3,
        "caller sizes the RGB buffer"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { yuyv_avx2(f, stride, &c, rgb) };
        return Ok(());
    }
    yuyv_impl(f, stride, &c, rgb);
    Ok(())
}

/// [`yuyv_impl`] compiled for AVX2 (x86_64's baseline is SSE2; aarch64's NEON is its
/// baseline, so the plain version vectorises there).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn yuyv_avx2(f: &RawFrame, stride: usize, c: &Coeffs, rgb: &mut [u8]) {
    yuyv_impl(f, stride, c, rgb);
}

#[inline(always)]
fn yuyv_impl(f: &RawFrame, stride: usize, c: &Coeffs, rgb: &mut [u8]) {
    let w = f.width as usize;
    let mut p = Planes::new();
    for (y, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
        let row = &f.data[y * stride..y * stride + w.div_ceil(2) * 4];
        let mut x = 0;
        while x < w {
            let n = BLOCK.min(w - x);
            let src = &row[x * 2..(x + n).div_ceil(2) * 4];
            if let Ok(src) = <&[u8; BLOCK * 2]>::try_from(src) {
                // A whole block: fixed size, no bounds checks.
                for i in 0..BLOCK / 2 {
                    p.y[2 * i] = src[4 * i];
                    p.y[2 * i + 1] = src[4 * i + 2];
                    p.u[2 * i] = src[4 * i + 1];
                    p.u[2 * i + 1] = src[4 * i + 1];
                    p.v[2 * i] = src[4 * i + 3];
                    p.v[2 * i + 1] = src[4 * i + 3];
                }
                p.emit(c, &mut out[x * 3..(x + n) * 3], n);
                x += n;
                continue;
            }
            for (i, q) in src.chunks_exact(4).enumerate() {
                p.y[2 * i] = q[0];
                p.y[2 * i + 1] = q[2];
                p.u[2 * i] = q[1];
                p.u[2 * i + 1] = q[1];
                p.v[2 * i] = q[3];
                p.v[2 * i + 1] = q[3];
            }
            p.emit(c, &mut out[x * 3..(x + n) * 3], n);
            x += n;
        }
    }
}

/// NV12 or NM12 -> RGB into `rgb` (exactly `width * height * 3` bytes). Allocates nothing.
pub fn nv12_to_rgb(f: &RawFrame, range: YuvRange, rgb: &mut [u8]) -> Result<(), ConvertError> {
    let stride = check_layout(f)?;
    let c = Coeffs::of(range);
    assert_eq!(
        rgb.len(),
        f.width as usize * f.height as usize * 3,
        "caller sizes the RGB buffer"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { nv12_avx2(f, stride, &c, rgb) };
        return Ok(());
    }
    nv12_impl(f, stride, &c, rgb);
    Ok(())
}

/// [`nv12_impl`] compiled for AVX2 (see [`yuyv_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn nv12_avx2(f: &RawFrame, stride: usize, c: &Coeffs, rgb: &mut [u8]) {
    nv12_impl(f, stride, c, rgb);
}

#[inline(always)]
fn nv12_impl(f: &RawFrame, stride: usize, c: &Coeffs, rgb: &mut [u8]) {
    let (w, h) = (f.width as usize, f.height as usize);
    let (luma, chroma) = match (f.format, f.chroma) {
        (PixelFormat::Nv12M, Some(chroma)) => (f.data, chroma),
        _ => f.data.split_at(stride * h),
    };
    let mut p = Planes::new();
    for (y, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
        let yrow = &luma[y * stride..y * stride + w];
        let uv = &chroma[(y / 2) * stride..(y / 2) * stride + w.div_ceil(2) * 2];
        let mut x = 0;
        while x < w {
            let n = BLOCK.min(w - x);
            p.y[..n].copy_from_slice(&yrow[x..x + n]);
            let src = &uv[x..(x + n).div_ceil(2) * 2];
            if let Ok(src) = <&[u8; BLOCK]>::try_from(src) {
                // A whole block: fixed size, no bounds checks.
                for i in 0..BLOCK / 2 {
                    p.u[2 * i] = src[2 * i];
                    p.u[2 * i + 1] = src[2 * i];
                    p.v[2 * i] = src[2 * i + 1];
                    p.v[2 * i + 1] = src[2 * i + 1];
                }
                p.emit(c, &mut out[x * 3..(x + n) * 3], n);
                x += n;
                continue;
            }
            for (i, q) in src.chunks_exact(2).enumerate() {
                p.u[2 * i] = q[0];
                p.u[2 * i + 1] = q[0];
                p.v[2 * i] = q[1];
                p.v[2 * i + 1] = q[1];
            }
            p.emit(c, &mut out[x * 3..(x + n) * 3], n);
            x += n;
        }
    }
}

/// A JPEG (starts with SOI) whose last KiB holds no end-of-image marker: cut off in
/// transfer. The decoder would fill the missing part with grey and report success.
fn jpeg_is_truncated(data: &[u8]) -> bool {
    let tail = &data[data.len().saturating_sub(1024)..];
    !tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

thread_local! {
    static IN_DECODE: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside the JPEG decoder (zune-jpeg). Lets an allocation
/// counter attribute the decoder's own per-frame allocations. Never allocates.
pub fn in_jpeg_decode() -> bool {
    IN_DECODE.try_with(Cell::get).unwrap_or(false)
}

/// Whether a JPEG defines Huffman tables (a DHT segment) before its first scan. Many UVC
/// cameras omit them: Motion JPEG (OpenDML) frames use the fixed tables of JPEG Annex
/// K.3, which the decoder supplies only for frames it recognises as MJPEG.
pub fn jpeg_has_huffman_tables(data: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return false;
        }
        let marker = data[i + 1];
        match marker {
            0xC4 => return true,
            0xDA | 0xD9 => return false,
            // Fill bytes, and markers without a length.
            0xFF => {
                i += 1;
                continue;
            }
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        i += 2 + len;
    }
    false
}

/// An APP0 segment with the `AVI1` tag: it tells zune-jpeg the frame is Motion JPEG, so
/// it fills in the Annex K.3 Huffman tables the frame leaves out.
const AVI1_APP0: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

/// MJPEG -> RGB into `rgb` (exactly `width * height * 3` bytes, the negotiated size).
/// A frame without Huffman tables is copied into `scratch` (reused) with an `AVI1` tag
/// inserted. Our code allocates nothing once `scratch` has grown; zune-jpeg allocates
/// its own scratch per frame.
pub fn mjpeg_to_rgb(
    f: &RawFrame,
    rgb: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options};
    if f.width == 0 || f.height == 0 {
        return Err(ConvertError::Degenerate {
            format: f.format,
            width: f.width,
            height: f.height,
        });
    }
    assert_eq!(
        rgb.len(),
        f.width as usize * f.height as usize * 3,
        "caller sizes the RGB buffer"
    );
    if f.data.is_empty() {
        return Err(ConvertError::EmptyJpeg);
    }
    if jpeg_is_truncated(f.data) {
        return Err(ConvertError::TruncatedJpeg { len: f.data.len() });
    }
    let data = if f.data.len() > 2 && !jpeg_has_huffman_tables(f.data) {
        scratch.clear();
        scratch.extend_from_slice(&f.data[..2]);
        scratch.extend_from_slice(&AVI1_APP0);
        scratch.extend_from_slice(&f.data[2..]);
        &scratch[..]
    } else {
        f.data
    };
    let opts = options::DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(f.width as usize)
        .set_max_height(f.height as usize);
    IN_DECODE.with(|c| c.set(true));
    let result = (|| {
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), opts);
        dec.decode_headers()
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        let (gw, gh) = dec
            .dimensions()
            .map(|(w, h)| (w as u32, h as u32))
            .unwrap_or((0, 0));
        if (gw, gh) != (f.width, f.height) {
            return Err(ConvertError::JpegSize {
                want_w: f.width,
                want_h: f.height,
                got_w: gw,
                got_h: gh,
            });
        }
        dec.decode_into(rgb)
            .map_err(|e| ConvertError::Jpeg(e.to_string()))
    })();
    IN_DECODE.with(|c| c.set(false));
    result
}

/// Converts frames into one RGB buffer it keeps. Build once per source.
#[derive(Debug, Default)]
pub struct Converter {
    range: YuvRange,
    rgb: Vec<u8>,
    /// MJPEG frames that need a tag inserted are copied here.
    jpeg: Vec<u8>,
}

impl Converter {
    pub fn new(range: YuvRange) -> Self {
        Converter {
            range,
            rgb: Vec::new(),
            jpeg: Vec::new(),
        }
    }

    pub fn range(&self) -> YuvRange {
        self.range
    }

    /// The last converted frame (empty before the first).
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Converts one frame and returns its RGB (`width * height * 3` bytes). Allocates only
    /// when the frame size grows (and inside the JPEG decoder). On error the buffer's
    /// content is unspecified.
    pub fn convert(&mut self, f: &RawFrame) -> Result<&[u8], ConvertError> {
        let n = f.width as usize * f.height as usize * 3;
        if self.rgb.len() != n {
            self.rgb.resize(n, 0);
        }
        match f.format {
            PixelFormat::Yuyv => yuyv_to_rgb(f, self.range, &mut self.rgb)?,
            PixelFormat::Nv12 | PixelFormat::Nv12M => nv12_to_rgb(f, self.range, &mut self.rgb)?,
            PixelFormat::Mjpeg => mjpeg_to_rgb(f, &mut self.rgb, &mut self.jpeg)?,
        }
        Ok(&self.rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(format: PixelFormat, width: u32, height: u32, data: &[u8]) -> RawFrame<'_> {
        RawFrame {
            format,
            width,
            height,
            stride: 0,
            data,
            chroma: None,
        }
    }

    #[test]
    fn layouts() {
        assert_eq!(PixelFormat::Yuyv.min_stride(5), 12);
        assert_eq!(PixelFormat::Nv12.min_stride(5), 6);
        assert_eq!(PixelFormat::Yuyv.min_len(5, 3, 12), 36);
        // 3 luma rows of 6, 2 chroma rows of 6.
        assert_eq!(PixelFormat::Nv12.min_len(5, 3, 6), 30);
        assert_eq!(PixelFormat::parse("yuy2"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::parse("MJPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("H264"), None);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let mut c = Converter::new(YuvRange::Limited);
        let e = c
            .convert(&raw(PixelFormat::Yuyv, 4, 2, &[0; 15]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::Truncated {
                    expected: 16,
                    got: 15,
                    ..
                }
            ),
            "{e}"
        );
        let e = c
            .convert(&RawFrame {
                stride: 6,
                ..raw(PixelFormat::Yuyv, 4, 2, &[0; 64])
            })
            .unwrap_err();
        assert!(matches!(e, ConvertError::Stride { min: 8, .. }), "{e}");
        let e = c
            .convert(&raw(PixelFormat::Nv12, 0, 2, &[0; 64]))
            .unwrap_err();
        assert!(matches!(e, ConvertError::Degenerate { .. }), "{e}");
        let e = c.convert(&raw(PixelFormat::Mjpeg, 4, 2, &[])).unwrap_err();
        assert_eq!(e, ConvertError::EmptyJpeg);
        let e = c
            .convert(&raw(PixelFormat::Mjpeg, 4, 2, b"\xff\xd8garbage"))
            .unwrap_err();
        assert!(matches!(e, ConvertError::TruncatedJpeg { .. }), "{e}");
        let e = c
            .convert(&raw(
                PixelFormat::Mjpeg,
                4,
                2,
                b"\xff\xd8\xff\xe0garbage\xff\xd9",
            ))
            .unwrap_err();
        assert!(matches!(e, ConvertError::Jpeg(_)), "{e}");
        // Random bytes of every length never panic.
        let mut x = 1u32;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                    (x >> 24) as u8
                })
                .collect();
            for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Mjpeg] {
                for (w, h) in [(1, 1), (3, 3), (5, 4), (8, 6)] {
                    let _ = c.convert(&raw(format, w, h, &data));
                }
            }
        }
    }
}
