//! The one preprocessing implementation, used by the trainer (embeddings, calibration,
//! parity checks) and by the edge runtime (every frame).
//!
//! RGB u8 image -> resize the shorter side to `resize_shorter` -> center crop `crop` ->
//! `(x / 255 - mean) / std` -> NCHW f32.
//!
//! The resize and the crop are done in one step: the crop window is mapped back into the
//! source image and only that window is resampled (PIL's `resize(box=...)`), which gives
//! the same pixels as resizing the whole image and then cropping, with less work and a
//! destination buffer of fixed size. [`Preprocessor`] owns that buffer, the resize
//! coefficients and the resizer's scratch (all kept while the source size stays the
//! same), so after the first frame of a size it allocates nothing.
//!
//! The resampling is fast_image_resize 6.1's convolution (`ResizeAlg::Convolution`,
//! bilinear or Catmull-Rom), reproduced bit for bit in `resize.rs` so that its
//! coefficients can be kept between calls; tests compare the two.

mod resize;

pub use crate::decode::ImageLimits;
use crate::decode::SizeError;
use crate::manifest::{PreprocessSpec, ResizeFilter};
use crate::regular_file::FileKind;
use resize::{Filter, PlanKey, ResizePlan};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot read image `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("image `{path}` is empty (0 bytes)")]
    Empty { path: String },
    #[error("cannot decode image `{path}`: {source}")]
    Decode {
        path: String,
        source: image::ImageError,
    },
    #[error("cannot decode image `{path}`: the JPEG data ends without its end-of-image marker; the file is truncated")]
    TruncatedJpeg { path: String },
    #[error("image `{path}`: {size}")]
    TooLarge { path: String, size: SizeError },
    #[error("image `{path}` is {bytes} bytes, more than an image within the limit can be ({limit} bytes); {}", crate::decode::SETTING_HINT)]
    FileTooLarge {
        path: String,
        bytes: u64,
        limit: u64,
    },
    #[error("`{path}` is {kind}, not an image file; it was not read")]
    NotAFile { path: String, kind: FileKind },
    #[error("image is {width}x{height}; both sides must be at least 1 pixel")]
    Degenerate { width: u32, height: u32 },
    #[error("rgb buffer holds {got} bytes but a {width}x{height} image needs {expected}")]
    BufferSize {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("output tensor holds {got} floats but the spec needs {expected}")]
    OutputSize { expected: usize, got: usize },
    #[error("resize failed: {0}")]
    Resize(String),
}

/// A decoded RGB image (HWC, u8).
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Decodes JPEG / PNG / BMP / WebP bytes within the process's [`ImageLimits`]; `name`
    /// only labels errors. Fails on empty, truncated, undecodable or too large images.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self, PreprocessError> {
        Self::decode_with(bytes, name, ImageLimits::process())
    }

    /// [`RgbImage::decode`] within `limits`.
    pub fn decode_with(
        bytes: &[u8],
        name: &str,
        limits: ImageLimits,
    ) -> Result<Self, PreprocessError> {
        crate::decode::decode_bytes(bytes, name, limits)
    }

    /// Reads and decodes an image file within the process's [`ImageLimits`]; errors name
    /// the file. Fails as [`RgbImage::decode`] does, and when the path is not a regular
    /// file (a FIFO or device is never opened) or is larger than an image within the
    /// limit can be.
    pub fn open(path: &Path) -> Result<Self, PreprocessError> {
        Self::open_with(path, ImageLimits::process())
    }

    /// [`RgbImage::open`] within `limits`.
    pub fn open_with(path: &Path, limits: ImageLimits) -> Result<Self, PreprocessError> {
        crate::decode::decode_file(path, limits)
    }
}

/// Where the center crop of the resized image falls in the source image, as torchvision
/// computes it: the long side is `floor(resize_shorter * long / short)`, the crop offset is
/// `round((resized - crop) / 2)` with ties to even. Returns (left, top, width, height) in source pixels.
pub fn crop_window(spec: &PreprocessSpec, width: u32, height: u32) -> (f64, f64, f64, f64) {
    let (w, h) = (width as f64, height as f64);
    let s = spec.resize_shorter as f64;
    let (rw, rh) = if width <= height {
        (s, (s * h / w).floor())
    } else {
        ((s * w / h).floor(), s)
    };
    let c = spec.crop as f64;
    // Python's round() (ties to even), as torchvision's CenterCrop uses it.
    let left = ((rw - c) / 2.0).round_ties_even();
    let top = ((rh - c) / 2.0).round_ties_even();
    let (sx, sy) = (w / rw, h / rh);
    (left * sx, top * sy, c * sx, c * sy)
}

/// Turns RGB images into normalized NCHW tensors. Build once, call many times: the
/// resizer's scratch and the crop buffer are reused.
pub struct Preprocessor {
    spec: PreprocessSpec,
    /// The coefficients and scratch of the last source size seen.
    plan: Option<ResizePlan>,
    crop: Vec<u8>,
    scale: [f32; 3],
    offset: [f32; 3],
}

impl Preprocessor {
    pub fn new(spec: PreprocessSpec) -> Self {
        let c = spec.crop as usize;
        let scale = std::array::from_fn(|i| 1.0 / (255.0 * spec.std[i]));
        let offset = std::array::from_fn(|i| -spec.mean[i] / spec.std[i]);
        Preprocessor {
            spec,
            plan: None,
            crop: vec![0; c * c * 3],
            scale,
            offset,
        }
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Number of f32 values in one image's tensor (3 * crop * crop).
    pub fn tensor_len(&self) -> usize {
        3 * self.spec.crop as usize * self.spec.crop as usize
    }

    /// Resizes and crops an RGB buffer (HWC, u8) into the internal crop buffer and returns
    /// it (`crop` x `crop` x 3). This is the RGB form the self-test vectors store.
    pub fn crop_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<&[u8], PreprocessError> {
        let window = crop_window(&self.spec, width.max(1), height.max(1));
        self.crop_window_rgb(rgb, width, height, window)
    }

    /// Resamples `window` (left, top, width, height in source pixels, as [`crop_window`]
    /// returns) of an RGB buffer into the `crop` x `crop` buffer with the same filter as
    /// [`Preprocessor::crop_rgb`]: the trainer's augmentation takes random windows through
    /// the one resampler the edge uses. Fails when the window is not inside the image.
    pub fn crop_window_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        window: (f64, f64, f64, f64),
    ) -> Result<&[u8], PreprocessError> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::Degenerate { width, height });
        }
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(PreprocessError::BufferSize {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        let c = self.spec.crop;
        let key = PlanKey {
            src: (width, height),
            window,
            dst: (c, c),
            filter: match self.spec.filter {
                ResizeFilter::Bilinear => Filter::Bilinear,
                ResizeFilter::Bicubic => Filter::CatmullRom,
            },
        };
        let plan = match self.plan.take() {
            Some(plan) if *plan.key() == key => plan,
            _ => ResizePlan::new(key).map_err(|e| PreprocessError::Resize(e.to_string()))?,
        };
        let plan = self.plan.insert(plan);
        plan.run(rgb, &mut self.crop);
        Ok(&self.crop)
    }

    /// Writes the normalized NCHW tensor of an already cropped RGB buffer
    /// (`crop` x `crop` x 3) into `out`.
    pub fn normalize_crop(&self, crop: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
        let n = self.tensor_len();
        if out.len() != n {
            return Err(PreprocessError::OutputSize {
                expected: n,
                got: out.len(),
            });
        }
        if crop.len() != n {
            return Err(PreprocessError::BufferSize {
                width: self.spec.crop,
                height: self.spec.crop,
                expected: n,
                got: crop.len(),
            });
        }
        let plane = n / 3;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in crop.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * self.scale[0] + self.offset[0];
            g[i] = px[1] as f32 * self.scale[1] + self.offset[1];
            b[i] = px[2] as f32 * self.scale[2] + self.offset[2];
        }
        Ok(())
    }

    /// The whole transform: RGB (HWC, u8) of any size -> NCHW f32 written into `out`.
    /// Allocates nothing when the previous call had a source of the same size.
    pub fn run(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        self.crop_rgb(rgb, width, height)?;
        let crop = std::mem::take(&mut self.crop);
        let result = self.normalize_crop(&crop, out);
        self.crop = crop;
        result
    }

    /// Convenience for one decoded image: returns a fresh tensor.
    pub fn tensor(&mut self, img: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        let mut out = vec![0.0; self.tensor_len()];
        self.run(&img.pixels, img.width, img.height, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fast_image_resize::{
        images::{Image, ImageRef},
        FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    };

    /// fast_image_resize 6.1 doing what `crop_rgb` did before it kept its coefficients.
    fn reference_crop(spec: &PreprocessSpec, rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
        let c = spec.crop;
        let mut out = vec![0u8; (c * c * 3) as usize];
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3).unwrap();
        let mut dst = Image::from_slice_u8(c, c, &mut out, PixelType::U8x3).unwrap();
        let (left, top, w, h) = crop_window(spec, width, height);
        let filter = match spec.filter {
            ResizeFilter::Bilinear => FilterType::Bilinear,
            ResizeFilter::Bicubic => FilterType::CatmullRom,
        };
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(filter))
            .crop(left, top, w, h);
        Resizer::new().resize(&src, &mut dst, &options).unwrap();
        out
    }

    /// A deterministic noisy picture (edges and texture exercise negative lobes).
    fn noise(w: u32, h: u32, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..w * h * 3)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if (i / 3 / w) % 7 < 3 {
                    (x >> 24) as u8
                } else {
                    ((i / 3 % w) * 255 / w) as u8
                }
            })
            .collect()
    }

    #[test]
    fn resize_is_bit_identical_to_fast_image_resize() {
        let mut specs = vec![PreprocessSpec::imagenet()];
        for (resize_shorter, crop, filter) in [
            (224, 224, ResizeFilter::Bilinear),
            (232, 224, ResizeFilter::Bicubic),
            (256, 224, ResizeFilter::Bicubic),
            (8, 8, ResizeFilter::Bilinear),
            (9, 5, ResizeFilter::Bicubic),
        ] {
            specs.push(PreprocessSpec {
                resize_shorter,
                crop,
                filter,
                ..PreprocessSpec::imagenet()
            });
        }
        let mut images: Vec<(u32, u32, Vec<u8>)> = Vec::new();
        for (i, (w, h)) in [
            (640, 480),
            (480, 640),
            (500, 375),
            (227, 227),
            (224, 224),
            (256, 300),
            (224, 500),
            (301, 224),
            (64, 48),
            (7, 5),
            (1, 1),
            (3, 200),
            (1920, 1080),
        ]
        .into_iter()
        .enumerate()
        {
            images.push((w, h, noise(w, h, i as u32)));
            images.push((w, h, gradient(w, h)));
        }
        // Real photos (models/demo, cub26; see models/demo/SOURCE.md).
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo/images");
        let mut photos = 0;
        for class in std::fs::read_dir(&demo).unwrap() {
            let class = class.unwrap().path();
            let mut files: Vec<_> = std::fs::read_dir(&class)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let img = RgbImage::open(&files[0]).unwrap();
            images.push((img.width, img.height, img.pixels));
            photos += 1;
        }
        assert!(photos >= 3, "{photos} demo photos");
        let mut compared = 0;
        for spec in &specs {
            let mut p = Preprocessor::new(*spec);
            for (w, h, rgb) in &images {
                let ours = p.crop_rgb(rgb, *w, *h).unwrap().to_vec();
                let theirs = reference_crop(spec, rgb, *w, *h);
                assert!(
                    ours == theirs,
                    "{w}x{h} with {spec:?}: {} of {} bytes differ",
                    ours.iter().zip(&theirs).filter(|(a, b)| a != b).count(),
                    ours.len()
                );
                // The kept plan gives the same pixels on the next call.
                assert_eq!(p.crop_rgb(rgb, *w, *h).unwrap(), &ours[..]);
                compared += 1;
            }
        }
        assert_eq!(compared, specs.len() * images.len());
    }

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        v
    }

    #[test]
    fn crop_window_matches_torchvision_arithmetic() {
        let spec = PreprocessSpec::imagenet();
        // 227x227 (cub26): resized to 256x256, crop offset 16 -> 16 * 227/256 in source.
        let (l, t, w, h) = crop_window(&spec, 227, 227);
        assert!((l - 16.0 * 227.0 / 256.0).abs() < 1e-9);
        assert!((t - l).abs() < 1e-9);
        assert!((w - 224.0 * 227.0 / 256.0).abs() < 1e-9 && (h - w).abs() < 1e-9);
        // 500x375 landscape: resized to floor(256*500/375)=341 x 256, crop left
        // round(58.5)=58 (ties to even, as Python rounds); x scale is 500/341.
        let (l, t, w, h) = crop_window(&spec, 500, 375);
        assert!((l - 58.0 * 500.0 / 341.0).abs() < 1e-9, "{l}");
        assert!((t - 16.0 * 375.0 / 256.0).abs() < 1e-9, "{t}");
        assert!((w - 224.0 * 500.0 / 341.0).abs() < 1e-9);
        assert!((h - 224.0 * 375.0 / 256.0).abs() < 1e-9);
    }

    #[test]
    fn normalization_arithmetic() {
        let spec = PreprocessSpec {
            resize_shorter: 2,
            crop: 2,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
            filter: ResizeFilter::Bilinear,
        };
        let p = Preprocessor::new(spec);
        let crop = [255u8, 0, 255, 0, 255, 0, 51, 51, 51, 0, 0, 0];
        let mut out = vec![0.0; 12];
        p.normalize_crop(&crop, &mut out).unwrap();
        // R plane: (1 - .5)/.5 = 1, (0 - .5)/.5 = -1, (.2-.5)/.5 = -.6, -1
        let expect_r = [1.0, -1.0, -0.6, -1.0];
        let expect_g = [-1.0, 3.0, -0.2, -1.0];
        let expect_b = [1.0, 0.0, 0.2, 0.0];
        for i in 0..4 {
            assert!((out[i] - expect_r[i]).abs() < 1e-5, "r{i} {}", out[i]);
            assert!(
                (out[4 + i] - expect_g[i]).abs() < 1e-5,
                "g{i} {}",
                out[4 + i]
            );
            assert!(
                (out[8 + i] - expect_b[i]).abs() < 1e-5,
                "b{i} {}",
                out[8 + i]
            );
        }
    }

    #[test]
    fn one_step_crop_equals_resize_then_crop() {
        // Resizing the whole image and cropping must give the same pixels as resampling
        // only the crop window (up to rounding of the u8 result).
        let (w, h) = (300u32, 200u32);
        let src = gradient(w, h);
        let spec = PreprocessSpec::imagenet();
        let mut p = Preprocessor::new(spec);
        let one_step = p.crop_rgb(&src, w, h).unwrap().to_vec();

        let rw = (256.0 * 300.0f64 / 200.0).floor() as u32; // 384
        let mut full = vec![0u8; (rw * 256 * 3) as usize];
        let srcimg = ImageRef::new(w, h, &src, PixelType::U8x3).unwrap();
        let mut dst = Image::from_slice_u8(rw, 256, &mut full, PixelType::U8x3).unwrap();
        Resizer::new()
            .resize(
                &srcimg,
                &mut dst,
                &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            )
            .unwrap();
        let left = ((rw - 224) as f64 / 2.0).round_ties_even() as usize;
        let top = 16usize;
        let mut max_diff = 0i32;
        for y in 0..224 {
            for x in 0..224 {
                for c in 0..3 {
                    let a = one_step[(y * 224 + x) * 3 + c] as i32;
                    let b = full[((top + y) * rw as usize + left + x) * 3 + c] as i32;
                    max_diff = max_diff.max((a - b).abs());
                }
            }
        }
        assert!(max_diff <= 1, "max pixel difference {max_diff}");
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let mut p = Preprocessor::new(PreprocessSpec::imagenet());
        let mut out = vec![0.0; p.tensor_len()];
        assert!(matches!(
            p.run(&[0; 10], 4, 4, &mut out),
            Err(PreprocessError::BufferSize { .. })
        ));
        assert!(matches!(
            p.run(&[], 0, 4, &mut out),
            Err(PreprocessError::Degenerate { .. })
        ));
        let mut short = vec![0.0; 5];
        assert!(matches!(
            p.run(&gradient(8, 8), 8, 8, &mut short),
            Err(PreprocessError::OutputSize { .. })
        ));
        assert!(matches!(
            RgbImage::decode(&[], "x.jpg"),
            Err(PreprocessError::Empty { .. })
        ));
        assert!(matches!(
            RgbImage::decode(b"\xff\xd8\xff\xe0garbage\xff\xd9", "x.jpg"),
            Err(PreprocessError::Decode { .. })
        ));
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let mut jpeg = Vec::new();
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 128]));
        image::DynamicImage::ImageRgb8(img)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert!(RgbImage::decode(&jpeg, "ok.jpg").is_ok());
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        let err = RgbImage::decode(cut, "cut.jpg").unwrap_err();
        assert!(
            matches!(err, PreprocessError::TruncatedJpeg { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`cut.jpg`"));
    }
}
