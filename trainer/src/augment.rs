//! Training-time augmentation: random resized crop, horizontal flip and colour jitter on
//! the decoded RGB image, then the shared preprocessing's resampler and normalisation.
//!
//! Used only by fine-tuning ([`crate::finetune`]); evaluation, embedding caches, export,
//! its parity check and the edge never see it. A view is a function of (settings, seed,
//! image key, view index) alone, so a run is reproducible and a view computed once can
//! be cached by content (the image key is taken from the image's sha256).
//!
//! Choices, for fine-grained birds (cub26):
//! - **Random resized crop**: a window covering `crop_scale` of the image's area
//!   (default 0.35-1) with a width/height ratio in `crop_ratio` (default 3/4-4/3, drawn
//!   log-uniformly) at a uniform position, resampled straight to the model's crop size
//!   by the shared resampler (the edge's filter). torchvision's default lower bound of
//!   0.08 is meant for ImageNet objects that fill the frame; a bird photo of cub26 often
//!   shows the bird on a third of the frame, and an 8 % window would cut away the very
//!   marks (crown, wing bars) that separate sibling species. The evaluation crop is the
//!   central (224/256)^2 = 77 % of the short-side square, so 0.35-1 zooms in by up to
//!   1.5x and out a little. As torchvision does, after 10 windows that do not fit the
//!   image the largest centred window of the nearest allowed ratio is taken.
//! - **Horizontal flip** with probability 1/2: birds face either way.
//! - **Colour jitter**: brightness, contrast and saturation factors drawn uniformly in
//!   `[1 - a, 1 + a]` (default a = 0.2), applied in that fixed order on u8 pixels as
//!   PIL's `ImageEnhance` does (brightness: scale; contrast: blend with the mean grey
//!   level of the crop; saturation: blend with each pixel's grey level; ITU-R 601 luma,
//!   rounding and clamping to 0..=255 after each). No hue jitter: plumage colour is a
//!   class mark.
//!
//! With `random_crop = false`, `flip = false` and no jitter a view is exactly the
//! evaluation tensor (`Preprocessor::run`): the window is the evaluation's centre crop.

use crate::bounds::{Bound, BoundError, Checker};
use linesight_shared::manifest::PreprocessSpec;
use linesight_shared::preprocess::{crop_window, PreprocessError, Preprocessor, RgbImage};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Augmentation settings (`[train.augment]` in a pipeline or training settings file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSettings {
    /// Random resized crop; false: the evaluation's centre crop.
    pub random_crop: bool,
    /// Share of the image's area a random crop covers, [min, max].
    pub crop_scale: [f64; 2],
    /// Width / height of a random crop, [min, max] (drawn log-uniformly).
    pub crop_ratio: [f64; 2],
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
    /// Brightness factor drawn in [1 - a, 1 + a]; 0: off.
    pub brightness: f32,
    /// Contrast factor drawn in [1 - a, 1 + a]; 0: off.
    pub contrast: f32,
    /// Saturation factor drawn in [1 - a, 1 + a]; 0: off.
    pub saturation: f32,
    /// Seed of the views (independent of the training seed, so runs with other training
    /// seeds reuse the cached views).
    pub seed: u64,
}

impl Default for AugmentSettings {
    fn default() -> Self {
        AugmentSettings {
            random_crop: true,
            crop_scale: [0.35, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            flip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            seed: 0,
        }
    }
}

impl AugmentSettings {
    /// Settings whose views are the evaluation tensor.
    pub fn identity() -> Self {
        AugmentSettings {
            random_crop: false,
            flip: false,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            ..Self::default()
        }
    }

    /// Checks every number against its range (`{prefix}augment.crop_scale`, ...).
    pub fn validate(&self, prefix: &str) -> Result<(), BoundError> {
        let p = format!("{prefix}augment.");
        let mut c = Checker::new(&p);
        c.check(
            "crop_scale[0]",
            self.crop_scale[0],
            Bound::between(0.01, 1.0),
        )
        .check(
            "crop_scale[1]",
            self.crop_scale[1],
            Bound::between(self.crop_scale[0].clamp(0.01, 1.0), 1.0),
        )
        .check(
            "crop_ratio[0]",
            self.crop_ratio[0],
            Bound::between(0.1, 1.0),
        )
        .check(
            "crop_ratio[1]",
            self.crop_ratio[1],
            Bound::between(1.0, 10.0),
        )
        .check("brightness", self.brightness, Bound::between(0.0, 0.9))
        .check("contrast", self.contrast, Bound::between(0.0, 0.9))
        .check("saturation", self.saturation, Bound::between(0.0, 0.9));
        c.finish()
    }
}

/// What one view drew (recorded for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewDraw {
    /// (left, top, width, height) in source pixels.
    pub window: (f64, f64, f64, f64),
    pub flip: bool,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

/// Makes augmented views of decoded images. Build once per backbone, call per view.
pub struct Augmenter {
    settings: AugmentSettings,
    pre: Preprocessor,
    crop: Vec<u8>,
}

impl Augmenter {
    /// Fails when a setting is out of range.
    pub fn new(spec: PreprocessSpec, settings: AugmentSettings) -> Result<Self, BoundError> {
        settings.validate("")?;
        Ok(Augmenter {
            settings,
            pre: Preprocessor::new(spec),
            crop: Vec::new(),
        })
    }

    pub fn settings(&self) -> &AugmentSettings {
        &self.settings
    }

    /// Floats in one view's tensor (3 * crop * crop).
    pub fn tensor_len(&self) -> usize {
        self.pre.tensor_len()
    }

    /// The image's key for [`Augmenter::view`]: the first 8 bytes of its sha256 (hex).
    pub fn image_key(sha256_hex: &str) -> u64 {
        let bytes = hex::decode(sha256_hex.get(..16).unwrap_or(sha256_hex)).unwrap_or_default();
        let mut k = [0u8; 8];
        k[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        u64::from_le_bytes(k)
    }

    /// The random draws of view `view` of the image with key `image_key` (`width` x
    /// `height` pixels).
    pub fn draw(&self, image_key: u64, view: u64, width: u32, height: u32) -> ViewDraw {
        let s = &self.settings;
        let mut h = Sha256::new();
        h.update(b"linesight-augment-v1");
        h.update(s.seed.to_le_bytes());
        h.update(image_key.to_le_bytes());
        h.update(view.to_le_bytes());
        let digest = h.finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest);
        let mut rng = StdRng::from_seed(seed);
        let window = if s.random_crop {
            random_window(&mut rng, width, height, s.crop_scale, s.crop_ratio)
        } else {
            crop_window(self.pre.spec(), width, height)
        };
        let flip = s.flip && rng.random_bool(0.5);
        let mut factor = |a: f32| {
            if a > 0.0 {
                rng.random_range(1.0 - a..=1.0 + a)
            } else {
                1.0
            }
        };
        let brightness = factor(s.brightness);
        let contrast = factor(s.contrast);
        let saturation = factor(s.saturation);
        ViewDraw {
            window,
            flip,
            brightness,
            contrast,
            saturation,
        }
    }

    /// Writes view `view` of `img` (normalized NCHW, the model's crop size) into `out`;
    /// returns what it drew.
    pub fn view(
        &mut self,
        img: &RgbImage,
        image_key: u64,
        view: u64,
        out: &mut [f32],
    ) -> Result<ViewDraw, PreprocessError> {
        let d = self.draw(image_key, view, img.width.max(1), img.height.max(1));
        let crop = self
            .pre
            .crop_window_rgb(&img.pixels, img.width, img.height, d.window)?;
        self.crop.clear();
        self.crop.extend_from_slice(crop);
        let side = self.pre.spec().crop as usize;
        if d.flip {
            flip_rows(&mut self.crop, side);
        }
        jitter(&mut self.crop, d.brightness, d.contrast, d.saturation);
        self.pre.normalize_crop(&self.crop, out)?;
        Ok(d)
    }
}

/// A random window (torchvision's RandomResizedCrop sampling, reimplemented here: the
/// scale and ratio ranges are ours and the window must stay in the shared resampler's
/// f64 coordinates).
fn random_window(
    rng: &mut StdRng,
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> (f64, f64, f64, f64) {
    let (w, h) = (width as f64, height as f64);
    let area = w * h;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let r = if lr1 > lr0 {
            rng.random_range(lr0..=lr1).exp()
        } else {
            ratio[0]
        };
        let cw = (target * r).sqrt().round();
        let ch = (target / r).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let left = rng.random_range(0..=(w - cw) as u32) as f64;
            let top = rng.random_range(0..=(h - ch) as u32) as f64;
            return (left, top, cw, ch);
        }
    }
    // Fallback: the largest centred window whose ratio is the nearest allowed one.
    let r = (w / h).clamp(ratio[0], ratio[1]);
    let (cw, ch) = if w / h > r {
        ((h * r).round().clamp(1.0, w), h)
    } else {
        (w, (w / r).round().clamp(1.0, h))
    };
    (((w - cw) / 2.0).floor(), ((h - ch) / 2.0).floor(), cw, ch)
}

/// Mirrors a `side` x `side` RGB (HWC) buffer left-right.
fn flip_rows(rgb: &mut [u8], side: usize) {
    for row in rgb.chunks_exact_mut(side * 3) {
        for x in 0..side / 2 {
            let (a, b) = (x * 3, (side - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// ITU-R 601-2 luma, as PIL's `convert("L")`.
fn luma(px: &[u8]) -> f32 {
    (px[0] as f32 * 299.0 + px[1] as f32 * 587.0 + px[2] as f32 * 114.0) / 1000.0
}

/// Brightness, contrast, saturation (factors; 1 = unchanged), in that order.
fn jitter(rgb: &mut [u8], brightness: f32, contrast: f32, saturation: f32) {
    if brightness != 1.0 {
        rgb.iter_mut()
            .for_each(|v| *v = to_u8(*v as f32 * brightness));
    }
    if contrast != 1.0 {
        let n = (rgb.len() / 3).max(1) as f32;
        let mean = (rgb.chunks_exact(3).map(luma).sum::<f32>() / n).round();
        rgb.iter_mut()
            .for_each(|v| *v = to_u8(mean + contrast * (*v as f32 - mean)));
    }
    if saturation != 1.0 {
        for px in rgb.chunks_exact_mut(3) {
            let g = luma(px);
            for v in px.iter_mut() {
                *v = to_u8(g + saturation * (*v as f32 - g));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A photo-like image: gradients in every channel, no symmetry.
    fn image(width: u32, height: u32) -> RgbImage {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                pixels.push(((x * 7 + y * 3) % 256) as u8);
                pixels.push(((x * x / 5 + y * 11) % 256) as u8);
                pixels.push(((x * 13 + y * y / 3) % 256) as u8);
            }
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    fn aug(s: AugmentSettings) -> Augmenter {
        Augmenter::new(PreprocessSpec::imagenet(), s).unwrap()
    }

    fn view(a: &mut Augmenter, img: &RgbImage, key: u64, v: u64) -> (Vec<f32>, ViewDraw) {
        let mut out = vec![0.0; a.tensor_len()];
        let d = a.view(img, key, v, &mut out).unwrap();
        (out, d)
    }

    #[test]
    fn identity_settings_give_the_evaluation_tensor() {
        let img = image(300, 257);
        let mut pre = Preprocessor::new(PreprocessSpec::imagenet());
        let eval = pre.tensor(&img).unwrap();
        let mut a = aug(AugmentSettings::identity());
        for v in 0..3 {
            assert_eq!(view(&mut a, &img, 42, v).0, eval, "view {v}");
        }
    }

    #[test]
    fn views_are_a_function_of_seed_image_and_view() {
        let img = image(320, 240);
        let mut a = aug(AugmentSettings::default());
        let mut b = aug(AugmentSettings::default());
        let (x, dx) = view(&mut a, &img, 7, 3);
        let (y, dy) = view(&mut b, &img, 7, 3);
        assert_eq!(x, y);
        assert_eq!(dx, dy);
        assert_ne!(view(&mut a, &img, 7, 4).0, x, "another view");
        assert_ne!(view(&mut a, &img, 8, 3).0, x, "another image");
        let mut c = aug(AugmentSettings {
            seed: 1,
            ..AugmentSettings::default()
        });
        assert_ne!(view(&mut c, &img, 7, 3).0, x, "another seed");
    }

    #[test]
    fn random_crops_stay_inside_the_image_and_the_ranges() {
        let a = aug(AugmentSettings::default());
        let s = AugmentSettings::default();
        // The last two cannot hold a window of 35 % of their area with a ratio in 3/4-4/3:
        // every draw is the centred fallback there, none on ordinary photos.
        for &(w, h, extreme) in &[
            (500, 375, false),
            (375, 500, false),
            (224, 224, false),
            (1000, 120, true),
            (17, 900, true),
        ] {
            let mut fallbacks = 0;
            for v in 0..200 {
                let d = a.draw(99, v, w, h);
                let (l, t, cw, ch) = d.window;
                assert!(
                    l >= 0.0 && t >= 0.0 && cw >= 1.0 && ch >= 1.0,
                    "{w}x{h}: {:?}",
                    d.window
                );
                assert!(
                    l + cw <= w as f64 && t + ch <= h as f64,
                    "{w}x{h}: {:?}",
                    d.window
                );
                let share = cw * ch / (w as f64 * h as f64);
                let ratio = cw / ch;
                let in_range = share >= s.crop_scale[0] * 0.97
                    && share <= s.crop_scale[1] * 1.03
                    && ratio >= s.crop_ratio[0] * 0.97
                    && ratio <= s.crop_ratio[1] * 1.03;
                if !in_range {
                    fallbacks += 1;
                    assert!(
                        (l - (w as f64 - cw) / 2.0).abs() <= 1.0,
                        "{w}x{h}: {:?}",
                        d.window
                    );
                    assert!(
                        (t - (h as f64 - ch) / 2.0).abs() <= 1.0,
                        "{w}x{h}: {:?}",
                        d.window
                    );
                }
            }
            assert_eq!(fallbacks, if extreme { 200 } else { 0 }, "{w}x{h}");
        }
    }

    #[test]
    fn a_flip_mirrors_the_unflipped_view() {
        let img = image(300, 260);
        let mut flip = aug(AugmentSettings {
            flip: true,
            ..AugmentSettings::identity()
        });
        let mut plain = aug(AugmentSettings::identity());
        let reference = view(&mut plain, &img, 5, 0).0;
        let side = 224;
        let (mut flipped, mut kept) = (0, 0);
        for v in 0..40 {
            let (x, d) = view(&mut flip, &img, 5, v);
            if !d.flip {
                assert_eq!(x, reference);
                kept += 1;
                continue;
            }
            flipped += 1;
            for c in 0..3 {
                for y in 0..side {
                    for col in 0..side {
                        let i = c * side * side + y * side;
                        assert_eq!(x[i + col], reference[i + side - 1 - col]);
                    }
                }
            }
        }
        assert!(
            flipped > 5 && kept > 5,
            "flip about half the time: {flipped} of 40"
        );
    }

    #[test]
    fn jitter_factors_stay_in_their_ranges_and_act_as_documented() {
        let a = aug(AugmentSettings {
            brightness: 0.3,
            contrast: 0.1,
            saturation: 0.5,
            ..AugmentSettings::identity()
        });
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for v in 0..500 {
            let d = a.draw(1, v, 100, 100);
            assert!((0.7..=1.3).contains(&d.brightness), "{d:?}");
            assert!((0.9..=1.1).contains(&d.contrast), "{d:?}");
            assert!((0.5..=1.5).contains(&d.saturation), "{d:?}");
            lo = lo.min(d.brightness);
            hi = hi.max(d.brightness);
        }
        assert!(lo < 0.75 && hi > 1.25, "the range is used: {lo}..{hi}");
        // Brightness scales; contrast blends with the mean grey; saturation with luma.
        let mut px = vec![100u8, 50, 200];
        jitter(&mut px, 1.5, 1.0, 1.0);
        assert_eq!(px, vec![150, 75, 255]);
        let mut two = vec![0u8, 0, 0, 200, 200, 200];
        jitter(&mut two, 1.0, 0.5, 1.0);
        assert_eq!(two, vec![50, 50, 50, 150, 150, 150]);
        let mut px = vec![100u8, 50, 200];
        jitter(&mut px, 1.0, 1.0, 0.0);
        let g = to_u8(luma(&[100, 50, 200]));
        assert_eq!(px, vec![g, g, g]);
    }

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        let e = Augmenter::new(
            PreprocessSpec::imagenet(),
            AugmentSettings {
                crop_scale: [0.5, 0.2],
                ..AugmentSettings::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("augment.crop_scale[1]"), "{e}");
    }
}
