//! The images to label: found under a folder, identified by the sha256 of their bytes,
//! and sent inline as base64 data URLs.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use linesight_shared::preprocess::RgbImage;
use linesight_shared::walk::{self, WalkOptions};
use std::path::{Path, PathBuf};

/// File extensions taken as images (case-insensitive).
pub const EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif",
];

/// One image file.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Path relative to the images folder, `/`-separated: what the log records.
    pub rel: String,
    pub abs: PathBuf,
}

/// All image files under `dir` (recursively, hidden entries skipped), sorted by relative
/// path, listed by [`linesight_shared::walk`]: symbolic-link loops end, a file reached by
/// two paths is listed once, FIFOs and device nodes are skipped; each skip is logged.
/// Fails when `dir` or a folder under it cannot be read, or it holds no image.
pub fn list(dir: &Path) -> Result<Vec<ImageFile>> {
    let mut found = walk::walk(&[dir.to_path_buf()], &WalkOptions::images(&EXTENSIONS))
        .expect("a walk without a cancel hook is never cancelled");
    if !found.errors.is_empty() {
        let e = found.errors.swap_remove(0);
        return Err(anyhow::Error::new(e).context("cannot list the images folder"));
    }
    for s in &found.skipped {
        tracing::warn!("{s}");
    }
    if !found.skipped.is_empty() {
        tracing::warn!(folder = %dir.display(), skipped = %found.skipped_summary(), "entries of the images folder skipped");
    }
    let mut out: Vec<ImageFile> = found
        .files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            ImageFile { rel, abs: path }
        })
        .collect();
    if out.is_empty() {
        bail!(
            "no image files ({}) under `{}`",
            EXTENSIONS.join(", "),
            dir.display()
        );
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Whether image bytes decode with the project's one image decoder
/// ([`RgbImage::decode`]: the decoder refine, train and the edge use, with its checks and
/// size limits); `Err` says why not, naming the image as `name`. `label` sends no image
/// that fails this: the MLLM would be asked about an image nothing downstream can read.
pub fn check_decodable(bytes: &[u8], name: &str) -> Result<(), String> {
    RgbImage::decode(bytes, name)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The media type of image bytes, from their magic number, among the types that
/// OpenAI-compatible servers accept inline; `None` for any other format.
pub fn sendable_media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// A `data:` URL for image bytes. Formats that servers do not take inline (BMP, TIFF) are
/// decoded and sent as PNG; the cache still keys on the original file's hash.
/// Fails when such a file cannot be decoded.
pub fn data_url(bytes: &[u8]) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(mt) = sendable_media_type(bytes) {
        return Ok(format!("data:{mt};base64,{}", b64.encode(bytes)));
    }
    // The one bounded decoder (shared::decode): a huge BMP is refused from its header.
    let img = linesight_shared::preprocess::RgbImage::decode(bytes, "image")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &img.pixels,
        img.width,
        img.height,
        image::ExtendedColorType::Rgb8,
    )
    .context("cannot re-encode the image as PNG")?;
    Ok(format!(
        "data:image/png;base64,{}",
        b64.encode(png.into_inner())
    ))
}

/// The sha256 (hex) of each file's bytes, read on all cores; `Err` carries why a file could
/// not be read. `progress` advances per file.
pub fn hash_files(
    paths: &[PathBuf],
    progress: &indicatif::ProgressBar,
) -> Vec<Result<String, String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let mut out: Vec<Result<String, String>> = vec![Err(String::new()); paths.len()];
    std::thread::scope(|scope| {
        let chunk = paths.len().div_ceil(threads).max(1);
        for (slot, part) in out.chunks_mut(chunk).zip(paths.chunks(chunk)) {
            scope.spawn(move || {
                for (o, p) in slot.iter_mut().zip(part) {
                    // A regular file only (a FIFO would block), no larger than an image
                    // within the decode limit can be.
                    let max = linesight_shared::decode::ImageLimits::process().max_file_bytes();
                    *o = linesight_shared::regular_file::read(p, max, "an image")
                        .map(|b| super::prompt::sha256_hex(&b))
                        .map_err(|e| e.to_string());
                    progress.inc(1);
                }
            });
        }
    });
    out
}

/// Decodes a `data:...;base64,` URL's bytes; `None` for anything else.
pub fn decode_data_url(url: &str) -> Option<Vec<u8>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    if !meta.ends_with(";base64") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_by_magic() {
        assert_eq!(
            sendable_media_type(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some("image/jpeg")
        );
        assert_eq!(sendable_media_type(b"\x89PNG\r\n"), Some("image/png"));
        assert_eq!(
            sendable_media_type(b"RIFF\0\0\0\0WEBPVP8 "),
            Some("image/webp")
        );
        assert_eq!(sendable_media_type(b"BM...."), None);
    }

    #[test]
    fn data_urls_round_trip() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let url = data_url(png).unwrap();
        assert!(url.starts_with("data:image/png;base64,"));
        assert_eq!(decode_data_url(&url).unwrap(), png);
        assert!(decode_data_url("https://example.com/a.png").is_none());
    }
}
