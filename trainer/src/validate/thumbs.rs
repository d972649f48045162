//! Thumbnails for the report: small JPEGs inlined as `data:` URIs, so the page needs no
//! file beside it. Each image is decoded (by the shared decoder) and encoded once.

use base64::Engine as _;
use linesight_shared::preprocess::RgbImage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Longest side of a thumbnail, in pixels (shown at this size, so a 780-image report
/// stays a few MB).
pub const MAX_SIDE: u32 = 112;
/// JPEG quality of a thumbnail.
pub const QUALITY: u8 = 70;

/// Thumbnails made so far, by path.
#[derive(Default)]
pub struct Thumbs {
    made: HashMap<PathBuf, Option<String>>,
}

impl Thumbs {
    /// The `data:image/jpeg;base64,...` URI of `path`'s thumbnail; None when the image
    /// cannot be read (the report then shows its name only).
    pub fn uri(&mut self, path: &Path) -> Option<String> {
        self.made
            .entry(path.to_path_buf())
            .or_insert_with(|| match thumbnail(path) {
                Ok(uri) => Some(uri),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "no thumbnail");
                    None
                }
            })
            .clone()
    }

    /// Bytes of every thumbnail made (as inlined, base64).
    pub fn bytes(&self) -> usize {
        self.made.values().flatten().map(String::len).sum()
    }
}

/// Decodes, shrinks to at most [`MAX_SIDE`] and encodes one image.
pub fn thumbnail(path: &Path) -> anyhow::Result<String> {
    let img = RgbImage::open(path)?;
    let scale = MAX_SIDE as f64 / img.width.max(img.height) as f64;
    let (w, h) = if scale < 1.0 {
        (
            ((img.width as f64 * scale).round() as u32).max(1),
            ((img.height as f64 * scale).round() as u32).max(1),
        )
    } else {
        (img.width, img.height)
    };
    let buf = image::RgbImage::from_raw(img.width, img.height, img.pixels)
        .ok_or_else(|| anyhow::anyhow!("decoded image has the wrong size"))?;
    let small = image::imageops::thumbnail(&buf, w, h);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, QUALITY).encode(
        small.as_raw(),
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_is_a_small_jpeg_of_the_right_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let img = image::RgbImage::from_fn(448, 224, |x, _| image::Rgb([(x % 256) as u8, 40, 200]));
        img.save(&p).unwrap();
        let uri = thumbnail(&p).unwrap();
        let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (MAX_SIDE, MAX_SIDE / 2));
        assert!(jpeg.len() < 8000, "{} bytes", jpeg.len());
        let mut t = Thumbs::default();
        assert!(t.uri(&dir.path().join("missing.jpg")).is_none());
        assert_eq!(t.uri(&p), Some(uri));
    }
}
