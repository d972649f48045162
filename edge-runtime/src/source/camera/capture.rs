//! V4L2 capture for `camera:ID` (the `camera` cargo feature): open, negotiate, mmap
//! streaming, frames converted into the converter's reused RGB buffer.
//!
//! This uses the `v4l` crate (0.14) directly rather than nokhwa 0.10.11, which wraps the
//! same crate for Linux (`nokhwa-bindings-linux` 0.1.4). Its V4L2 path does not fit an
//! unattended box: it opens devices by index only (no `/dev/v4l/by-id` path, the stable
//! id this source must reopen by), hands out the whole mmap buffer without the driver's
//! `bytesused` (so a truncated USB transfer cannot be told from a whole frame), hides the
//! line stride (`bytesperline`), the driver's frame sequence number (drops) and the
//! buffer's error flag, copies every frame into a fresh buffer in `frame()`, and drops
//! frame rates that are not whole numbers (29.97). Both need libclang-dev to build
//! (`v4l2-sys-mit` runs bindgen).
//!
//! Multi-planar devices (the V4L2 multi-planar API, `NM12` from ARM camera pipelines) are
//! captured through [`super::mplane`], since the `v4l` crate has no multi-planar support.
//!
//! Frame policy: after the first frame, a frame is dequeued only when `poll` says one is
//! ready, so a dequeue never waits past `wait`. Unless `every_frame`, buffers that are
//! already waiting are drained and only the newest is converted (the rest are counted
//! as dropped, as are gaps in the driver's sequence numbers). Errors map onto
//! [`SourceError`]: device missing / busy / no usable mode -> `Open`; a failed poll or
//! dequeue (unplugged) -> `Gone`; a truncated, corrupt or driver-flagged frame ->
//! `BadFrame`. The run loop reopens with backoff and runs the stall watchdog.

use super::mplane::{self, MplaneStream};
use super::{list_devices, negotiate, open_error, resolve, CameraId, CameraOptions, Mode};
use crate::convert::{Converter, PixelFormat, RawFrame};
use crate::source::{Frame, FrameSource, Next, SourceError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use v4l::buffer::Type;
use v4l::device::Handle;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::prelude::{Device, MmapStream};
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Format, FourCC};

/// How long `open` waits for the first frame after starting the stream.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes tried on a device that reports a range of sizes (stepwise) instead of a list.
const STEPWISE_SIZES: [(u32, u32); 6] = [
    (320, 240),
    (640, 480),
    (800, 600),
    (1280, 720),
    (1600, 1200),
    (1920, 1080),
];

/// Whether a device captures through the multi-planar API only (no single-planar capture).
fn is_multiplanar(flags: v4l::capability::Flags) -> bool {
    use v4l::capability::Flags;
    !flags.contains(Flags::VIDEO_CAPTURE) && flags.contains(Flags::VIDEO_CAPTURE_MPLANE)
}

/// The modes (format, size, rate) a device offers in the formats linesight converts. A
/// driver that enumerates no sizes (some CSI bridges) offers its current format.
pub fn modes(device: &Device, multiplanar: bool) -> std::io::Result<Vec<Mode>> {
    let mut out = Vec::new();
    let fourccs = if multiplanar {
        mplane::formats(&device.handle())?
    } else {
        device
            .enum_formats()?
            .into_iter()
            .map(|d| d.fourcc)
            .collect()
    };
    for fourcc in fourccs {
        let Some(format) = fourcc.str().ok().and_then(PixelFormat::parse) else {
            continue;
        };
        let mut sizes = Vec::new();
        for s in device.enum_framesizes(fourcc).unwrap_or_default() {
            match s.size {
                FrameSizeEnum::Discrete(d) => sizes.push((d.width, d.height)),
                FrameSizeEnum::Stepwise(s) => {
                    let fits = |v: u32, min: u32, max: u32, step: u32| {
                        v >= min && v <= max && (v - min).is_multiple_of(step.max(1))
                    };
                    sizes.extend(STEPWISE_SIZES.iter().copied().filter(|&(w, h)| {
                        fits(w, s.min_width, s.max_width, s.step_width)
                            && fits(h, s.min_height, s.max_height, s.step_height)
                    }));
                }
            }
        }
        for (width, height) in sizes {
            let mut rates = Vec::new();
            for iv in device
                .enum_frameintervals(fourcc, width, height)
                .unwrap_or_default()
            {
                let fps = |f: v4l::Fraction| {
                    (f.numerator > 0).then(|| f.denominator as f64 / f.numerator as f64)
                };
                match iv.interval {
                    FrameIntervalEnum::Discrete(f) => rates.extend(fps(f)),
                    FrameIntervalEnum::Stepwise(s) => {
                        // min interval = max rate
                        rates.extend(fps(s.min));
                        rates.extend(fps(s.max));
                    }
                }
            }
            if rates.is_empty() {
                rates.push(0.0);
            }
            for fps in rates {
                out.push(Mode {
                    format,
                    width,
                    height,
                    fps,
                });
            }
        }
    }
    if out.is_empty() && !multiplanar {
        let current = device.format()?;
        if let Some(format) = current.fourcc.str().ok().and_then(PixelFormat::parse) {
            out.push(Mode {
                format,
                width: current.width,
                height: current.height,
                fps: 0.0,
            });
        }
    }
    Ok(out)
}

/// What `cameras` reports of one device node when it can be opened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Whether the node captures video (a UVC camera's second node carries metadata).
    pub capture: bool,
    pub modes: Vec<Mode>,
}

/// Opens `path` just long enough to read its capabilities and modes.
pub fn probe(path: &Path) -> std::io::Result<Probe> {
    let device = Device::with_path(path)?;
    let caps = device.query_caps()?;
    let multiplanar = is_multiplanar(caps.capabilities);
    let capture = multiplanar
        || caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE);
    Ok(Probe {
        driver: caps.driver,
        card: caps.card,
        bus: caps.bus,
        capture,
        modes: if capture {
            modes(&device, multiplanar)?
        } else {
            Vec::new()
        },
    })
}

/// The buffers of a streaming device, in the API it speaks.
enum Stream {
    Single(MmapStream<'static>),
    Multi(MplaneStream),
}

/// One dequeued frame: its bytes (the chroma plane apart for multi-planar NV12), the
/// driver's sequence number and error flag.
struct Dequeued<'a> {
    data: &'a [u8],
    chroma: Option<&'a [u8]>,
    sequence: u32,
    error: bool,
}

impl Stream {
    fn next(&mut self, wait: Duration) -> std::io::Result<Dequeued<'_>> {
        match self {
            Stream::Single(s) => {
                s.set_timeout(wait);
                let (buf, meta) = s.next()?;
                let used = meta.bytesused as usize;
                Ok(Dequeued {
                    data: if used > 0 {
                        &buf[..used.min(buf.len())]
                    } else {
                        buf
                    },
                    chroma: None,
                    sequence: meta.sequence,
                    error: meta.flags.contains(v4l::buffer::Flags::ERROR),
                })
            }
            Stream::Multi(s) => {
                let (meta, luma, chroma) = s.next(wait)?;
                Ok(Dequeued {
                    data: luma,
                    chroma,
                    sequence: meta.sequence,
                    error: meta.error,
                })
            }
        }
    }
}

/// An open, streaming device. Field order is drop order: the stream goes first.
struct Open {
    stream: Stream,
    handle: Arc<Handle>,
    _device: Device,
    mode: Mode,
    stride: usize,
    node: PathBuf,
}

/// `camera:ID`.
pub struct CameraSource {
    name: String,
    id: CameraId,
    options: CameraOptions,
    every_frame: bool,
    conv: Converter,
    open: Option<Open>,
    last_seq: Option<u32>,
    seq: u64,
}

impl CameraSource {
    pub fn new(id: &str, options: CameraOptions, every_frame: bool) -> Self {
        CameraSource {
            name: format!("camera:{id}"),
            id: CameraId::parse(id),
            conv: Converter::new(options.range),
            options,
            every_frame,
            open: None,
            last_seq: None,
            seq: 0,
        }
    }

    /// The mode and device node in use (after a successful `open`).
    pub fn mode(&self) -> Option<(Mode, &Path)> {
        self.open.as_ref().map(|o| (o.mode, o.node.as_path()))
    }

    fn try_open(&self) -> Result<Open, String> {
        let devices = list_devices();
        let info = resolve(&self.id, &devices)?;
        let node = info.path.clone();
        let at = |what: &str, e: std::io::Error| {
            let hint = match e.raw_os_error() {
                Some(libc::EBUSY) => " (busy: another process has the camera open?)",
                Some(libc::EACCES) => " (permission denied: is the user in the `video` group?)",
                _ => "",
            };
            format!("{what} `{}`: {e}{hint}", node.display())
        };
        let device = Device::with_path(&node).map_err(|e| at("cannot open", e))?;
        let caps = device.query_caps().map_err(|e| at("cannot query", e))?;
        let multiplanar = is_multiplanar(caps.capabilities);
        if !multiplanar
            && !caps
                .capabilities
                .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            return Err(format!(
                "`{}` (\"{}\") does not capture video (a UVC metadata node?); `linesight-edge cameras` lists the capture nodes",
                node.display(),
                caps.card
            ));
        }
        let offered =
            modes(&device, multiplanar).map_err(|e| at("cannot list the formats of", e))?;
        let mode = negotiate(&offered, &self.options)?;
        let fourcc = FourCC::new(
            mode.format
                .fourcc()
                .as_bytes()
                .try_into()
                .map_err(|_| "bad fourcc".to_string())?,
        );
        let handle = device.handle();
        let (mut stream, stride) = if multiplanar {
            let got = mplane::set_format(&handle, fourcc, mode.width, mode.height)
                .map_err(|e| at(&format!("cannot set {mode} on"), e))?;
            // NM12's chroma plane is read with the luma plane's stride.
            let planes = if mode.format == PixelFormat::Nv12M {
                2
            } else {
                1
            };
            if got.fourcc != fourcc
                || got.width != mode.width
                || got.height != mode.height
                || got.planes != planes
                || (planes == 2 && got.stride[1] != got.stride[0])
            {
                return Err(format!(
                    "`{}`: asked for {mode}, the driver set {} {}x{} in {} planes (line strides {:?})",
                    node.display(),
                    got.fourcc,
                    got.width,
                    got.height,
                    got.planes,
                    got.stride
                ));
            }
            if mode.fps > 0.0 {
                if let Err(e) = mplane::set_fps(&handle, mode.fps.round() as u32) {
                    tracing::warn!(node = %node.display(), error = %e, "cannot set the frame rate; using the driver's");
                }
            }
            let stream = MplaneStream::new(handle.clone(), self.options.buffers, planes)
                .map_err(|e| at("cannot map capture buffers of", e))?;
            (Stream::Multi(stream), got.stride[0])
        } else {
            let got = device
                .set_format(&Format::new(mode.width, mode.height, fourcc))
                .map_err(|e| at(&format!("cannot set {mode} on"), e))?;
            if got.fourcc != fourcc || got.width != mode.width || got.height != mode.height {
                return Err(format!(
                    "`{}`: asked for {mode}, the driver set {} {}x{}",
                    node.display(),
                    got.fourcc,
                    got.width,
                    got.height
                ));
            }
            if mode.fps > 0.0 {
                if let Err(e) = device.set_params(&Parameters::with_fps(mode.fps.round() as u32)) {
                    tracing::warn!(node = %node.display(), error = %e, "cannot set the frame rate; using the driver's");
                }
            }
            let stream =
                MmapStream::with_buffers(&device, Type::VideoCapture, self.options.buffers)
                    .map_err(|e| at("cannot map capture buffers of", e))?;
            (Stream::Single(stream), got.stride)
        };
        // The first `next` queues every buffer and starts streaming; a camera that sends
        // nothing within the timeout did not open.
        stream.next(FIRST_FRAME_TIMEOUT).map_err(|e| {
            at(
                &format!(
                    "no first frame within {} s from",
                    FIRST_FRAME_TIMEOUT.as_secs()
                ),
                e,
            )
        })?;
        tracing::info!(node = %node.display(), mode = %mode, stride, multiplanar, "camera streaming");
        Ok(Open {
            stream,
            handle,
            _device: device,
            mode,
            stride: stride as usize,
            node,
        })
    }
}

fn ready(handle: &Handle, wait: Duration) -> std::io::Result<bool> {
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    Ok(handle.poll(libc::POLLIN, ms)? > 0)
}

impl FrameSource for CameraSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&mut self) -> Result<(), SourceError> {
        // Close first: a reopen must release the device before opening it again.
        self.open = None;
        self.last_seq = None;
        let open = self
            .try_open()
            .map_err(|reason| open_error(&self.name, reason))?;
        self.open = Some(open);
        Ok(())
    }

    fn next(&mut self, wait: Duration) -> Result<Next<'_>, SourceError> {
        let name = &self.name;
        let gone = |reason: String| SourceError::Gone {
            name: name.clone(),
            reason,
        };
        let Some(open) = self.open.as_mut() else {
            return Err(gone("not open".into()));
        };
        match ready(&open.handle, wait) {
            Ok(false) => return Ok(Next::Idle),
            Ok(true) => {}
            Err(e) => return Err(gone(format!("poll: {e}"))),
        }
        let mut drained = 0u64;
        let (seq, flagged, converted) = loop {
            let frame = open
                .stream
                .next(Duration::from_secs(1))
                .map_err(|e| gone(format!("dequeue: {e}")))?;
            let more = !self.every_frame && ready(&open.handle, Duration::ZERO).unwrap_or(false);
            if more {
                drained += 1;
                continue;
            }
            let converted = if frame.error {
                Ok(())
            } else {
                self.conv
                    .convert(&RawFrame {
                        format: open.mode.format,
                        width: open.mode.width,
                        height: open.mode.height,
                        stride: open.stride,
                        data: frame.data,
                        chroma: frame.chroma,
                    })
                    .map(|_| ())
            };
            break (frame.sequence, frame.error, converted);
        };
        // The driver's sequence numbers count what it dropped too.
        let dropped = match self.last_seq {
            Some(last) if seq > last => (seq - last - 1) as u64,
            _ => drained,
        };
        self.last_seq = Some(seq);
        self.seq += dropped;
        let this = self.seq;
        self.seq += 1;
        if flagged {
            return Err(SourceError::BadFrame {
                name: name.clone(),
                reason: "the driver flagged the frame as corrupt".into(),
            });
        }
        if let Err(e) = converted {
            return Err(SourceError::BadFrame {
                name: name.clone(),
                reason: e.to_string(),
            });
        }
        Ok(Next::Frame(Frame {
            seq: this,
            width: open.mode.width,
            height: open.mode.height,
            rgb: self.conv.rgb(),
            dropped,
        }))
    }
}
