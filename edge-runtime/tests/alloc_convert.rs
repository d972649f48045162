//! Camera-frame conversion allocates nothing per frame (issue 6), and how long it takes.
//!
//! A counting global allocator (armed on this thread only) over 1,000 frames of 640x480
//! per format, made from a real photo (`models/demo`, cub26; upscaled to the size a
//! camera sends): YUYV and NV12 -> RGB must allocate nothing after the first frame.
//! MJPEG's decoder (zune-jpeg) allocates its own scratch per frame: those allocations are
//! counted apart ([`convert::in_jpeg_decode`]), reported (`--nocapture`) and must be the
//! same every frame; ours around it must be zero. The shared preprocessing of the
//! converted frame (640x480 -> 224) is included and must allocate nothing too.
//!
//! Its own binary: the allocator must not see the other tests.

use linesight_edge::convert::{self, Converter, PixelFormat, RawFrame, YuvRange};
use linesight_shared::manifest::PreprocessSpec;
use linesight_shared::preprocess::{Preprocessor, RgbImage};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

struct Counting;

static OURS: AtomicU64 = AtomicU64::new(0);
static OURS_BYTES: AtomicU64 = AtomicU64::new(0);
static JPEG: AtomicU64 = AtomicU64::new(0);
static JPEG_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let (n, b) = if convert::in_jpeg_decode() {
            (&JPEG, &JPEG_BYTES)
        } else {
            (&OURS, &OURS_BYTES)
        };
        n.fetch_add(1, Relaxed);
        b.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        record(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        record(new);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: u64 = 1000;
const W: u32 = 640;
const H: u32 = 480;

/// A demo photo upscaled to 640x480 (content a camera might see).
fn camera_sized_photo() -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/demo/images/Belted_Kingfisher/0000.jpg");
    let img = image::open(&path).unwrap().to_rgb8();
    let img = image::imageops::resize(&img, W, H, image::imageops::FilterType::Triangle);
    RgbImage {
        width: W,
        height: H,
        pixels: img.into_raw(),
    }
}

/// Simple BT.601 limited-range encoders (the accuracy tests live in `tests/it/convert.rs`).
fn yuv(p: &[u8]) -> (u8, u8, u8) {
    let [r, g, b] = [p[0], p[1], p[2]].map(|v| v as f64);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let k = 224.0 / 255.0;
    (
        (16.0 + y * 219.0 / 255.0).round() as u8,
        (128.0 + (b - y) / 1.772 * k).round() as u8,
        (128.0 + (r - y) / 1.402 * k).round() as u8,
    )
}

fn frame_bytes(img: &RgbImage, format: PixelFormat) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    match format {
        PixelFormat::Yuyv => img
            .pixels
            .chunks_exact(6)
            .flat_map(|p| {
                let (y0, u, v) = yuv(&p[..3]);
                let (y1, _, _) = yuv(&p[3..]);
                [y0, u, y1, v]
            })
            .collect(),
        PixelFormat::Nv12 | PixelFormat::Nv12M => {
            let mut out = vec![0u8; w * h * 3 / 2];
            for (i, p) in img.pixels.chunks_exact(3).enumerate() {
                let (y, u, v) = yuv(p);
                out[i] = y;
                let (x, row) = (i % w, i / w);
                if x % 2 == 0 && row % 2 == 0 {
                    out[w * h + (row / 2) * w + x] = u;
                    out[w * h + (row / 2) * w + x + 1] = v;
                }
            }
            out
        }
        PixelFormat::Mjpeg => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
                .encode(
                    &img.pixels,
                    img.width,
                    img.height,
                    image::ExtendedColorType::Rgb8,
                )
                .unwrap();
            out
        }
    }
}

#[test]
fn conversion_and_preprocessing_allocate_nothing_per_frame() {
    let img = camera_sized_photo();
    let mut pre = Preprocessor::new(PreprocessSpec::imagenet());
    let mut tensor = vec![0.0f32; pre.tensor_len()];
    let mut report = Vec::new();
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Nv12M,
        PixelFormat::Mjpeg,
    ] {
        let data = frame_bytes(&img, format);
        // NM12: the same bytes, the chroma plane in its own buffer.
        let (data, chroma) = match format {
            PixelFormat::Nv12M => {
                let (luma, chroma) = data.split_at(W as usize * H as usize);
                (luma, Some(chroma))
            }
            _ => (&data[..], None),
        };
        let raw = RawFrame {
            format,
            width: W,
            height: H,
            stride: 0,
            data,
            chroma,
        };
        let mut conv = Converter::new(YuvRange::Limited);
        // Warm-up: the RGB buffer and the resize plan are made here.
        for _ in 0..3 {
            let rgb = conv.convert(&raw).unwrap();
            pre.run(rgb, W, H, &mut tensor).unwrap();
        }
        for c in [&OURS, &OURS_BYTES, &JPEG, &JPEG_BYTES] {
            c.store(0, Relaxed);
        }
        let mut convert_ns = 0u128;
        let mut preprocess_ns = 0u128;
        ARMED.with(|a| a.set(true));
        for _ in 0..FRAMES {
            let t = Instant::now();
            let rgb = conv.convert(&raw).unwrap();
            convert_ns += t.elapsed().as_nanos();
            let t = Instant::now();
            pre.run(rgb, W, H, &mut tensor).unwrap();
            preprocess_ns += t.elapsed().as_nanos();
        }
        ARMED.with(|a| a.set(false));
        let (ours, ours_bytes) = (OURS.load(Relaxed), OURS_BYTES.load(Relaxed));
        let (jpeg, jpeg_bytes) = (JPEG.load(Relaxed), JPEG_BYTES.load(Relaxed));
        report.push(format!(
            "{format} {W}x{H}: convert {:.0} ns/frame, preprocess {:.0} ns/frame; linesight {ours} allocations ({ours_bytes} bytes); zune-jpeg {:.1} allocations, {:.0} bytes per frame",
            convert_ns as f64 / FRAMES as f64,
            preprocess_ns as f64 / FRAMES as f64,
            jpeg as f64 / FRAMES as f64,
            jpeg_bytes as f64 / FRAMES as f64,
        ));
        assert_eq!(
            ours, 0,
            "{format}: conversion + preprocessing allocated {ours} times ({ours_bytes} bytes) over {FRAMES} frames"
        );
        if format == PixelFormat::Mjpeg {
            assert_eq!(
                jpeg % FRAMES,
                0,
                "zune-jpeg's allocations are not constant per frame"
            );
        } else {
            assert_eq!(jpeg, 0);
        }
    }
    for line in report {
        eprintln!("alloc_convert: {line}");
    }
}
