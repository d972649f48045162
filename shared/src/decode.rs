//! The one image decoder, bounded. Every image either binary decodes from a file or from
//! bytes (the edge's `classify`, `dir:` source and store; the trainer's embeddings, eval,
//! calibration and labelling) goes through [`RgbImage::open`] / [`RgbImage::decode`],
//! which call this module.
//!
//! An image's size is read from its header before anything is decoded, and an image of
//! more than [`ImageLimits::max_pixels`] is refused with a message naming the file, its
//! size and the limit: a 420 KB PNG that says 12000x12000 would otherwise take ~900 MB to
//! decode. The file itself is opened only if it is a regular file
//! ([`crate::regular_file`]), and refused unread when it is larger than an uncompressed
//! image at the limit could be ([`ImageLimits::max_file_bytes`]).
//!
//! The limit is a setting (`--max-image-megapixels` on both binaries, `source.max_image_megapixels`
//! in edge.toml; default [`DEFAULT_MAX_MEGAPIXELS`]). A binary sets it once for the process
//! with [`ImageLimits::set_process`] (like tract's knobs), so the many places that decode an
//! image do not each need it passed down; code that wants another limit calls
//! [`RgbImage::open_with`] / [`RgbImage::decode_with`].

use crate::preprocess::{PreprocessError, RgbImage};
use crate::regular_file::{self, OpenError};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// File extensions of the formats this decoder reads (case-insensitive), for folder walks.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// The default limit: 50 megapixels (an 8660x5773 photo; 150 MB as RGB). Industrial
/// cameras and phones stay below it; a larger image is refused unless the limit is raised.
pub const DEFAULT_MAX_MEGAPIXELS: u32 = 50;
/// The largest value the setting takes (3 GB as RGB).
pub const MAX_MEGAPIXELS_SETTING: u32 = 1000;
/// How the binaries name the setting in messages.
pub const SETTING_HINT: &str =
    "raise the limit with --max-image-megapixels (edge.toml: source.max_image_megapixels) if such images are expected";

/// How large an image may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ImageLimits {
    /// Width x height, at most.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_pixels: DEFAULT_MAX_MEGAPIXELS as u64 * 1_000_000,
        }
    }
}

/// 0: not set, the default applies.
static PROCESS_MAX_PIXELS: AtomicU64 = AtomicU64::new(0);

/// A size that is over the limit (a size argument, or an image's header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    pub width: u32,
    pub height: u32,
    /// The limit, in pixels.
    pub limit: u64,
}

impl std::fmt::Display for SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} is {} megapixels, more than the limit of {} megapixels; {SETTING_HINT}",
            self.width,
            self.height,
            format_megapixels(self.width as u64 * self.height as u64),
            format_megapixels(self.limit)
        )
    }
}

impl std::error::Error for SizeError {}

fn format_megapixels(pixels: u64) -> String {
    let mp = pixels as f64 / 1e6;
    if mp >= 100.0 || mp.fract() == 0.0 {
        format!("{mp:.0}")
    } else {
        format!("{mp:.1}")
    }
}

impl ImageLimits {
    /// A limit of `mp` megapixels. Fails outside `1..=MAX_MEGAPIXELS_SETTING`.
    pub fn megapixels(mp: u32) -> Result<Self, String> {
        if !(1..=MAX_MEGAPIXELS_SETTING).contains(&mp) {
            return Err(format!(
                "max_image_megapixels {mp} is out of range 1..={MAX_MEGAPIXELS_SETTING}"
            ));
        }
        Ok(ImageLimits {
            max_pixels: mp as u64 * 1_000_000,
        })
    }

    /// The limit this process decodes with: the one [`ImageLimits::set_process`] set, else
    /// the default.
    pub fn process() -> Self {
        match PROCESS_MAX_PIXELS.load(Ordering::Relaxed) {
            0 => Self::default(),
            max_pixels => ImageLimits { max_pixels },
        }
    }

    /// Sets the limit for every later decode in this process (binaries, at startup).
    pub fn set_process(self) {
        PROCESS_MAX_PIXELS.store(self.max_pixels.max(1), Ordering::Relaxed);
    }

    /// The largest file an image within the limit can be: 4 bytes a pixel (an
    /// uncompressed 32-bit BMP) plus 16 MiB of metadata (EXIF, ICC profiles, thumbnails).
    pub fn max_file_bytes(self) -> u64 {
        self.max_pixels.saturating_mul(4).saturating_add(16 << 20)
    }

    /// Checks a frame or image size (both sides at least 1 is the caller's business).
    /// Fails when width x height is over the limit.
    pub fn check(self, width: u32, height: u32) -> Result<(), SizeError> {
        if width as u64 * height as u64 > self.max_pixels {
            return Err(SizeError {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// A JPEG (starts with SOI `FF D8`) whose last KiB (`tail`) holds no end-of-image marker
/// `FF D9`. The JPEG decoder fills a cut-off scan with grey and reports success, so a file
/// truncated by a failed copy would otherwise be classified as if it were a photo. The
/// marker is looked for near the end, not exactly at it, because some writers append a
/// few bytes.
fn is_truncated_jpeg(head: &[u8], tail: &[u8]) -> bool {
    // `tail` is the whole file up to 1 KiB: under 4 bytes is no JPEG, just undecodable.
    if head.len() < 2 || head[0] != 0xFF || head[1] != 0xD8 || tail.len() < 4 {
        return false;
    }
    !tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

const TAIL: usize = 1024;

pub(crate) fn decode_bytes(
    bytes: &[u8],
    name: &str,
    limits: ImageLimits,
) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty { path: name.into() });
    }
    if is_truncated_jpeg(bytes, &bytes[bytes.len().saturating_sub(TAIL)..]) {
        return Err(PreprocessError::TruncatedJpeg { path: name.into() });
    }
    decode_reader(Cursor::new(bytes), name, limits)
}

pub(crate) fn decode_file(path: &Path, limits: ImageLimits) -> Result<RgbImage, PreprocessError> {
    let name = path.display().to_string();
    let read_err = |source| PreprocessError::Read {
        path: name.clone(),
        source,
    };
    let (file, md) = regular_file::open(path).map_err(|e| match e {
        OpenError::NotRegular { kind, .. } => PreprocessError::NotAFile {
            path: name.clone(),
            kind,
        },
        OpenError::Io { source, .. } => read_err(source),
        OpenError::TooLarge { size, .. } => PreprocessError::FileTooLarge {
            path: name.clone(),
            bytes: size,
            limit: limits.max_file_bytes(),
        },
    })?;
    let len = md.len();
    if len == 0 {
        return Err(PreprocessError::Empty { path: name });
    }
    if len > limits.max_file_bytes() {
        return Err(PreprocessError::FileTooLarge {
            path: name,
            bytes: len,
            limit: limits.max_file_bytes(),
        });
    }
    let mut head = [0u8; 2];
    let mut tail = vec![0u8; (len as usize).min(TAIL)];
    let tail_at = len - tail.len() as u64;
    file.read_exact_at(&mut head[..(len as usize).min(2)], 0)
        .and_then(|()| file.read_exact_at(&mut tail, tail_at))
        .map_err(read_err)?;
    if is_truncated_jpeg(&head[..(len as usize).min(2)], &tail) {
        return Err(PreprocessError::TruncatedJpeg { path: name });
    }
    decode_reader(BufReader::new(file), &name, limits)
}

/// Reads the header, checks the size against `limits`, then decodes to RGB8.
fn decode_reader<R: BufRead + Seek>(
    reader: R,
    name: &str,
    limits: ImageLimits,
) -> Result<RgbImage, PreprocessError> {
    let decode_err = |source| PreprocessError::Decode {
        path: name.into(),
        source,
    };
    let mut reader = ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|source| PreprocessError::Read {
            path: name.into(),
            source,
        })?;
    // A second bound inside the decoder: its allocations, output included, at most what
    // an image at the limit needs (8 bytes a pixel for 16-bit RGBA) plus working room.
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(image_limits);
    let decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PreprocessError::Degenerate { width, height });
    }
    limits
        .check(width, height)
        .map_err(|size| PreprocessError::TooLarge {
            path: name.into(),
            size,
        })?;
    let img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    // `into_rgb8`: no copy when the image is RGB8 already (most JPEGs).
    let rgb = img.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `w` x `h` black pixels, encoded row by row (never held whole).
    fn black_png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::NoFilter,
        );
        let rgb = vec![0u8; w as usize * h as usize * 3];
        image::ImageEncoder::write_image(enc, &rgb, w, h, image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    #[test]
    fn an_image_over_the_limit_is_refused_from_its_header() {
        let png = black_png(1100, 1000);
        let limits = ImageLimits::megapixels(1).unwrap();
        let e = RgbImage::decode_with(&png, "big.png", limits).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PreprocessError::TooLarge { .. }), "{msg}");
        assert!(msg.contains("`big.png`"), "{msg}");
        assert!(msg.contains("1100x1000 is 1.1 megapixels"), "{msg}");
        assert!(msg.contains("limit of 1 megapixels"), "{msg}");
        assert!(msg.contains("--max-image-megapixels"), "{msg}");
        let ok =
            RgbImage::decode_with(&png, "big.png", ImageLimits::megapixels(2).unwrap()).unwrap();
        assert_eq!((ok.width, ok.height), (1100, 1000));
    }

    #[test]
    fn files_are_checked_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ImageLimits::megapixels(1).unwrap();
        let p = dir.path().join("huge.jpg");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(limits.max_file_bytes() + 1).unwrap();
        let e = RgbImage::open_with(&p, limits).unwrap_err();
        assert!(matches!(e, PreprocessError::FileTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("huge.jpg"), "{e}");
        let png = dir.path().join("ok.png");
        std::fs::write(&png, black_png(30, 20)).unwrap();
        let img = RgbImage::open_with(&png, limits).unwrap();
        assert_eq!(img.pixels.len(), 30 * 20 * 3);
    }

    #[test]
    fn the_setting_is_bounded_and_sizes_are_checked() {
        assert!(ImageLimits::megapixels(0).is_err());
        assert!(ImageLimits::megapixels(MAX_MEGAPIXELS_SETTING + 1).is_err());
        let l = ImageLimits::default();
        assert!(l.check(8000, 6000).is_ok());
        let e = l.check(100_000, 100_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("100000x100000 is 10000 megapixels, more than the limit of 50 megapixels; {SETTING_HINT}")
        );
        assert!(l.check(u32::MAX, u32::MAX).is_err());
    }

    #[test]
    fn truncated_jpegs_are_caught_from_the_file_too() {
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::new(64, 48))
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.jpg");
        std::fs::write(&p, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
        assert!(matches!(
            RgbImage::open(&p).unwrap_err(),
            PreprocessError::TruncatedJpeg { .. }
        ));
        std::fs::write(&p, &jpeg).unwrap();
        assert!(RgbImage::open(&p).is_ok());
        std::fs::write(&p, b"\xff").unwrap();
        assert!(matches!(
            RgbImage::open(&p).unwrap_err(),
            PreprocessError::Decode { .. }
        ));
    }
}
