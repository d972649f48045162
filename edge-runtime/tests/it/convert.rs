//! Camera-format conversion on real photo content (issue 6): photos from `models/demo`
//! (cub26 / CUB-200-2011, 227x227, see `models/demo/SOURCE.md`) are encoded here to
//! YUYV, NV12 (BT.601, both ranges) and MJPEG by test-side encoders written from the
//! standard (not from the runtime's code), converted back by `linesight_edge::convert`,
//! and compared by PSNR; solid black, white, mid-grey and pure colours are checked value
//! by value. Odd widths, padded strides and truncated frames are covered too.

use linesight_edge::convert::{
    jpeg_has_huffman_tables, ConvertError, Converter, PixelFormat, RawFrame, YuvRange,
};
use linesight_shared::preprocess::RgbImage;
use std::path::{Path, PathBuf};

/// PSNR thresholds (dB), set a few dB under what the demo photos measure (printed by
/// `cargo test -p linesight-edge --test it convert -- --nocapture`). Chroma subsampling
/// bounds them: YUYV halves chroma horizontally, NV12 both ways, MJPEG adds quantisation.
const MIN_PSNR_YUYV: f64 = 38.0;
const MIN_PSNR_NV12: f64 = 37.0;
const MIN_PSNR_MJPEG: f64 = 41.0;

fn demo_photos() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo/images");
    let mut out = Vec::new();
    let mut classes: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    for class in classes {
        let mut files: Vec<_> = std::fs::read_dir(&class)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files.into_iter().take(2));
    }
    assert!(
        out.len() >= 6,
        "demo photos missing under {}",
        root.display()
    );
    out
}

/// ITU-R BT.601 RGB -> Y'CbCr, as real numbers.
fn ycbcr(rgb: [u8; 3], range: YuvRange) -> [f64; 3] {
    let [r, g, b] = rgb.map(|v| v as f64);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = (b - y) / 1.772;
    let cr = (r - y) / 1.402;
    match range {
        YuvRange::Full => [y, 128.0 + cb, 128.0 + cr],
        YuvRange::Limited => [
            16.0 + y * 219.0 / 255.0,
            128.0 + cb * 224.0 / 255.0,
            128.0 + cr * 224.0 / 255.0,
        ],
    }
}

fn q(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn px(img: &RgbImage, x: usize, y: usize) -> [u8; 3] {
    let x = x.min(img.width as usize - 1);
    let y = y.min(img.height as usize - 1);
    let i = (y * img.width as usize + x) * 3;
    [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
}

/// Test-side YUYV encoder: each pair's chroma is the mean of its two pixels (an odd
/// width's last pair repeats its one pixel). `stride` >= 4 * ceil(w / 2).
fn encode_yuyv(img: &RgbImage, range: YuvRange, stride: usize) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = vec![0xAAu8; stride * h];
    for y in 0..h {
        for p in 0..w.div_ceil(2) {
            let a = ycbcr(px(img, 2 * p, y), range);
            let b = ycbcr(px(img, 2 * p + 1, y), range);
            let o = y * stride + p * 4;
            out[o] = q(a[0]);
            out[o + 1] = q((a[1] + b[1]) / 2.0);
            out[o + 2] = q(b[0]);
            out[o + 3] = q((a[2] + b[2]) / 2.0);
        }
    }
    out
}

/// Test-side NV12 encoder: chroma is the mean of each 2x2 block (edge blocks repeat
/// their last row / column). `stride` >= 2 * ceil(w / 2).
fn encode_nv12(img: &RgbImage, range: YuvRange, stride: usize) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = vec![0x55u8; stride * (h + h.div_ceil(2))];
    for y in 0..h {
        for x in 0..w {
            out[y * stride + x] = q(ycbcr(px(img, x, y), range)[0]);
        }
    }
    for by in 0..h.div_ceil(2) {
        for bx in 0..w.div_ceil(2) {
            let mut s = [0.0; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let c = ycbcr(px(img, 2 * bx + dx, 2 * by + dy), range);
                s.iter_mut().zip(c).for_each(|(s, c)| *s += c / 4.0);
            }
            let o = stride * h + by * stride + bx * 2;
            out[o] = q(s[1]);
            out[o + 1] = q(s[2]);
        }
    }
    out
}

/// Test-side MJPEG encoder: the `image` crate's baseline JPEG encoder (4:2:0).
fn encode_mjpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            &img.pixels,
            img.width,
            img.height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

fn crop(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h as usize {
        let s = y * img.width as usize * 3;
        pixels.extend_from_slice(&img.pixels[s..s + w as usize * 3]);
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

fn convert(
    c: &mut Converter,
    format: PixelFormat,
    img: &RgbImage,
    stride: usize,
    data: &[u8],
) -> Vec<u8> {
    c.convert(&RawFrame {
        format,
        width: img.width,
        height: img.height,
        stride,
        data,
        chroma: None,
    })
    .unwrap_or_else(|e| panic!("{format} {}x{}: {e}", img.width, img.height))
    .to_vec()
}

#[test]
fn real_photos_survive_yuyv_nv12_and_mjpeg() {
    let mut worst = [f64::INFINITY; 5];
    let mut frames = 0;
    for path in demo_photos() {
        let photo = RgbImage::open(&path).unwrap();
        // 227x227 as stored (odd sides), an even crop, and odd-by-even.
        for img in [
            photo.clone(),
            crop(&photo, 226, 170),
            crop(&photo, 227, 100),
        ] {
            let (w, h) = (img.width, img.height);
            for (i, range) in [YuvRange::Limited, YuvRange::Full].into_iter().enumerate() {
                let mut c = Converter::new(range);
                // Packed, and with padded lines as drivers deliver them.
                for pad in [0usize, 28] {
                    let stride = PixelFormat::Yuyv.min_stride(w) + pad;
                    let data = encode_yuyv(&img, range, stride);
                    let p = psnr(
                        &convert(&mut c, PixelFormat::Yuyv, &img, stride, &data),
                        &img.pixels,
                    );
                    assert!(
                        p >= MIN_PSNR_YUYV,
                        "{} YUYV {range:?} {w}x{h}+{pad}: {p:.2} dB",
                        path.display()
                    );
                    worst[i] = worst[i].min(p);
                    let stride = PixelFormat::Nv12.min_stride(w) + pad;
                    let data = encode_nv12(&img, range, stride);
                    let rgb = convert(&mut c, PixelFormat::Nv12, &img, stride, &data);
                    // NM12 (multi-planar): the same planes in two buffers, the same RGB.
                    let (luma, chroma) = data.split_at(stride * h as usize);
                    let planar = c
                        .convert(&RawFrame {
                            format: PixelFormat::Nv12M,
                            width: w,
                            height: h,
                            stride,
                            data: luma,
                            chroma: Some(chroma),
                        })
                        .unwrap_or_else(|e| panic!("NM12 {w}x{h}+{pad}: {e}"));
                    assert!(planar == &rgb[..], "NM12 {w}x{h}+{pad} differs from NV12");
                    let p = psnr(&rgb, &img.pixels);
                    assert!(
                        p >= MIN_PSNR_NV12,
                        "{} NV12 {range:?} {w}x{h}+{pad}: {p:.2} dB",
                        path.display()
                    );
                    worst[2 + i] = worst[2 + i].min(p);
                    frames += 2;
                }
            }
            let mut c = Converter::new(YuvRange::Limited);
            let data = encode_mjpeg(&img, 90);
            let p = psnr(
                &convert(&mut c, PixelFormat::Mjpeg, &img, 0, &data),
                &img.pixels,
            );
            assert!(
                p >= MIN_PSNR_MJPEG,
                "{} MJPEG {w}x{h}: {p:.2} dB",
                path.display()
            );
            worst[4] = worst[4].min(p);
            frames += 1;
        }
    }
    eprintln!(
        "convert: {frames} frames from real photos; worst PSNR: YUYV limited {:.2} dB, YUYV full {:.2} dB, NV12 limited {:.2} dB, NV12 full {:.2} dB, MJPEG q90 {:.2} dB",
        worst[0], worst[1], worst[2], worst[3], worst[4]
    );
}

/// A solid-colour frame of size `w` x `h`.
fn solid(rgb: [u8; 3], w: u32, h: u32) -> RgbImage {
    RgbImage {
        width: w,
        height: h,
        pixels: rgb.repeat((w * h) as usize),
    }
}

#[test]
fn known_pixel_values_per_format() {
    // (colour, exact result expected?) Black, white and mid-grey come back exactly; pure
    // colours within 1 (their Y'CbCr is not a whole number, and the encoder rounds it).
    let cases: [([u8; 3], bool); 8] = [
        ([0, 0, 0], true),
        ([255, 255, 255], true),
        ([128, 128, 128], true),
        ([255, 0, 0], false),
        ([0, 255, 0], false),
        ([0, 0, 255], false),
        ([255, 255, 0], false),
        ([0, 255, 255], false),
    ];
    for (colour, exact) in cases {
        let img = solid(colour, 5, 3);
        for range in [YuvRange::Limited, YuvRange::Full] {
            let mut c = Converter::new(range);
            for (format, data) in [
                (PixelFormat::Yuyv, encode_yuyv(&img, range, 12)),
                (PixelFormat::Nv12, encode_nv12(&img, range, 6)),
            ] {
                let out = convert(&mut c, format, &img, 0, &data);
                for p in out.chunks_exact(3) {
                    let diff = p
                        .iter()
                        .zip(colour)
                        .map(|(&a, b)| (a as i32 - b as i32).abs())
                        .max()
                        .unwrap();
                    let limit = if exact { 0 } else { 1 };
                    assert!(diff <= limit, "{format} {range:?} {colour:?} -> {p:?}");
                }
            }
        }
        // MJPEG: the JPEG round trip (DCT, quantisation) of a flat block.
        let img = solid(colour, 16, 16);
        let mut c = Converter::new(YuvRange::Limited);
        let out = convert(&mut c, PixelFormat::Mjpeg, &img, 0, &encode_mjpeg(&img, 95));
        for p in out.chunks_exact(3) {
            let diff = p
                .iter()
                .zip(colour)
                .map(|(&a, b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            let limit = if exact { 1 } else { 3 };
            assert!(diff <= limit, "MJPEG {colour:?} -> {p:?}");
        }
    }
    // The defining values themselves, straight from the standard.
    let mut c = Converter::new(YuvRange::Limited);
    let yuyv = |y: u8, u: u8, v: u8| [y, u, y, v];
    for (bytes, want) in [
        (yuyv(16, 128, 128), [0, 0, 0]),
        (yuyv(235, 128, 128), [255, 255, 255]),
        (yuyv(126, 128, 128), [128, 128, 128]),
        (yuyv(81, 90, 240), [254, 0, 0]),
        (yuyv(145, 54, 34), [0, 255, 1]),
        (yuyv(41, 240, 110), [0, 0, 255]),
    ] {
        let out = c
            .convert(&RawFrame {
                format: PixelFormat::Yuyv,
                width: 2,
                height: 1,
                stride: 0,
                data: &bytes,
                chroma: None,
            })
            .unwrap();
        assert_eq!(&out[..3], &want, "YUYV {bytes:?}");
    }
}

#[test]
fn truncated_and_garbage_frames_are_typed_errors() {
    let photo = RgbImage::open(&demo_photos()[0]).unwrap();
    let mut c = Converter::new(YuvRange::Limited);
    let yuyv = encode_yuyv(&photo, YuvRange::Limited, 456);
    let cut = &yuyv[..yuyv.len() - 100];
    let e = c
        .convert(&RawFrame {
            format: PixelFormat::Yuyv,
            width: 227,
            height: 227,
            stride: 456,
            data: cut,
            chroma: None,
        })
        .unwrap_err();
    assert!(matches!(e, ConvertError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    let nv12 = encode_nv12(&photo, YuvRange::Limited, 228);
    let e = c
        .convert(&RawFrame {
            format: PixelFormat::Nv12,
            width: 227,
            height: 227,
            stride: 228,
            data: &nv12[..228 * 227],
            chroma: None,
        })
        .unwrap_err();
    assert!(matches!(e, ConvertError::Truncated { .. }), "{e}");
    fn nm12<'a>(luma: &'a [u8], chroma: Option<&'a [u8]>) -> RawFrame<'a> {
        RawFrame {
            format: PixelFormat::Nv12M,
            width: 227,
            height: 227,
            stride: 228,
            data: luma,
            chroma,
        }
    }
    let whole = &nv12[228 * 227..];
    let luma = &nv12[..228 * 227];
    assert!(c.convert(&nm12(luma, Some(whole))).is_ok());
    for chroma in [None, Some(&whole[..whole.len() - 1])] {
        let e = c.convert(&nm12(luma, chroma)).unwrap_err();
        assert!(matches!(e, ConvertError::ChromaTruncated { .. }), "{e}");
        assert!(e.to_string().contains("chroma plane is truncated"), "{e}");
    }
    let jpeg = encode_mjpeg(&photo, 90);
    fn mj(data: &[u8], width: u32, height: u32) -> RawFrame<'_> {
        RawFrame {
            format: PixelFormat::Mjpeg,
            width,
            height,
            stride: 0,
            data,
            chroma: None,
        }
    }
    let e = c
        .convert(&mj(&jpeg[..jpeg.len() / 2], 227, 227))
        .unwrap_err();
    assert!(matches!(e, ConvertError::TruncatedJpeg { .. }), "{e}");
    let e = c.convert(&mj(&jpeg, 640, 480)).unwrap_err();
    assert!(
        matches!(
            e,
            ConvertError::JpegSize {
                got_w: 227,
                got_h: 227,
                ..
            }
        ),
        "{e}"
    );
    // Corrupted entropy-coded data: an error or a picture, never a panic.
    let mut bad = jpeg.clone();
    for i in (bad.len() / 3..bad.len() - 4).step_by(7) {
        bad[i] ^= 0x5A;
    }
    let _ = c.convert(&mj(&bad, 227, 227));
    // And a good frame afterwards converts as before.
    assert!(c.convert(&mj(&jpeg, 227, 227)).is_ok());
}

/// The JPEG with its DHT segments removed, as many UVC cameras send MJPEG.
fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    loop {
        assert_eq!(jpeg[i], 0xFF);
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
}

#[test]
fn mjpeg_without_huffman_tables_decodes_with_the_standard_ones() {
    let photo = RgbImage::open(&demo_photos()[3]).unwrap();
    let jpeg = encode_mjpeg(&photo, 90);
    let bare = strip_huffman_tables(&jpeg);
    assert!(jpeg_has_huffman_tables(&jpeg));
    assert!(!jpeg_has_huffman_tables(&bare));
    assert!(bare.len() < jpeg.len());
    // A plain JPEG decoder refuses it: there are no tables to decode the scan with.
    assert!(image::load_from_memory(&bare).is_err());
    let mut c = Converter::new(YuvRange::Limited);
    let with = convert(&mut c, PixelFormat::Mjpeg, &photo, 0, &jpeg);
    let without = convert(&mut c, PixelFormat::Mjpeg, &photo, 0, &bare);
    // The encoder used the standard (Annex K) tables, so both decode to the same pixels.
    assert_eq!(with, without);
}
