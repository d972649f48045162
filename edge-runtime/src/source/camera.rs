//! `camera:ID`: a V4L2 camera (USB / UVC or CSI), addressed by a stable id, its format
//! negotiated (with an override in `[source.camera]`), its frames converted to RGB into
//! one reused buffer ([`crate::convert`]).
//!
//! What is always built (no feature, no libclang): parsing the id, listing the cameras
//! from `/dev` and `/sys` ([`list_devices`]: index, name, the stable `/dev/v4l/by-id` and
//! `/dev/v4l/by-path` names), resolving an id to a device node ([`resolve`]) and choosing
//! a mode from what a device offers ([`negotiate`]). The capture itself (ioctls, mmap
//! streaming) is [`capture`], behind the `camera` cargo feature.
//!
//! **Addressing.** `camera:ID` where ID is
//! - a path: `/dev/v4l/by-id/usb-Logitech_C920_ABCD1234-video-index0` (stable across
//!   reboots and re-plugging), `/dev/v4l/by-path/...` (stable per USB port) or
//!   `/dev/videoN`;
//! - a number: the index N of `/dev/videoN` (not stable: the kernel renumbers on re-plug);
//! - any other text: a case-insensitive substring of the device's name or of one of its
//!   stable ids (a model name, a serial number); it must pick out one capture device.
//!
//! The id is resolved again on every (re)open, so a camera that comes back under
//! another `/dev/videoN` is found by its path, name or serial.
//!
//! **Negotiation.** Among the modes the device lists (pixel format YUYV / NV12 / NM12 / MJPG,
//! size, frame rate), the ones matching every field set in `[source.camera]` (`format`,
//! `width`, `height`, `fps`; 0 or empty: any) are candidates; the chosen one has the size
//! closest to 640x480 (the models crop 224 pixels; larger frames cost conversion time and
//! USB bandwidth), then the frame rate closest to 30 (at most 30 preferred), then YUYV
//! over NV12 over NM12 over MJPG (cheaper to convert). No candidate is an open error listing what
//! the device offers.

use crate::convert::{PixelFormat, YuvRange};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[cfg(feature = "camera")]
pub mod capture;
#[cfg(feature = "camera")]
pub mod mplane;

/// How `camera:ID` names a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraId {
    /// `/dev/videoN`.
    Index(u32),
    /// A device node or a symlink to one (`/dev/v4l/by-id/...`).
    Path(PathBuf),
    /// A substring of the name or of a stable id.
    Match(String),
}

impl CameraId {
    pub fn parse(s: &str) -> CameraId {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = s.parse() {
                return CameraId::Index(n);
            }
        }
        if s.starts_with('/') {
            return CameraId::Path(s.into());
        }
        CameraId::Match(s.to_string())
    }
}

/// `[source.camera]`: the format override and conversion settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraOptions {
    /// Pixel format fourcc: `YUYV` (`YUY2`), `NV12`, `NM12` (multi-planar NV12) or `MJPG`;
    /// empty: negotiate.
    pub format: String,
    /// Frame width and height in pixels; 0: negotiate.
    pub width: u32,
    pub height: u32,
    /// Frames per second requested from the camera; 0: negotiate.
    pub fps: u32,
    /// YUV range of YUYV / NV12 frames: `limited` (16..235, what webcams send) or `full`.
    pub range: YuvRange,
    /// V4L2 capture buffers (2..=16). Few buffers keep frames fresh.
    pub buffers: u32,
}

impl Default for CameraOptions {
    fn default() -> Self {
        CameraOptions {
            format: String::new(),
            width: 0,
            height: 0,
            fps: 0,
            range: YuvRange::Limited,
            buffers: 4,
        }
    }
}

impl CameraOptions {
    /// Checks the values; returns the format override. Fails naming the key.
    pub fn validate(&self) -> Result<Option<PixelFormat>, String> {
        let format = if self.format.trim().is_empty() {
            None
        } else {
            Some(PixelFormat::parse(&self.format).ok_or_else(|| {
                format!(
                    "source.camera.format `{}` is not one of YUYV, YUY2, NV12, NM12, MJPG",
                    self.format
                )
            })?)
        };
        if (self.width == 0) != (self.height == 0) {
            return Err(format!(
                "source.camera: set both width and height or neither (got {}x{})",
                self.width, self.height
            ));
        }
        if !(2..=16).contains(&self.buffers) {
            return Err(format!(
                "source.camera.buffers {} is out of range 2..=16",
                self.buffers
            ));
        }
        Ok(format)
    }
}

/// One frame size and rate a device offers in one pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mode {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Frames per second (from the frame interval, may be fractional: 29.97).
    pub fps: f64,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{} @ {}",
            self.format,
            self.width,
            self.height,
            (self.fps * 100.0).round() / 100.0
        )
    }
}

/// Picks the mode to capture in (see the module doc). Fails with a message listing what
/// the device offers.
pub fn negotiate(modes: &[Mode], o: &CameraOptions) -> Result<Mode, String> {
    let want_format = o.validate()?;
    let candidates: Vec<&Mode> = modes
        .iter()
        .filter(|m| want_format.is_none_or(|f| m.format == f))
        .filter(|m| o.width == 0 || (m.width == o.width && m.height == o.height))
        .filter(|m| o.fps == 0 || (m.fps - o.fps as f64).abs() < 0.5)
        .collect();
    let rank = |m: &Mode| {
        let area = m.width as i64 * m.height as i64;
        let size_cost = (area - 640 * 480).abs();
        // Up to 30 fps: closer is better; above 30: worse than any rate at or below it.
        let fps_cost = if m.fps <= 30.5 {
            ((30.0 - m.fps).abs() * 100.0) as i64
        } else {
            100_000 + (m.fps * 100.0) as i64
        };
        let format_cost = match m.format {
            PixelFormat::Yuyv => 0,
            PixelFormat::Nv12 => 1,
            PixelFormat::Nv12M => 2,
            PixelFormat::Mjpeg => 3,
        };
        (size_cost, fps_cost, format_cost)
    };
    candidates
        .into_iter()
        .min_by_key(|m| rank(m))
        .copied()
        .ok_or_else(|| {
            let mut want = Vec::new();
            if let Some(f) = want_format {
                want.push(f.to_string());
            }
            if o.width > 0 {
                want.push(format!("{}x{}", o.width, o.height));
            }
            if o.fps > 0 {
                want.push(format!("{} fps", o.fps));
            }
            let offered = if modes.is_empty() {
                "none in YUYV, NV12, NM12 or MJPG".to_string()
            } else {
                modes
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if want.is_empty() {
                format!("the camera offers no mode linesight can convert (it offers: {offered})")
            } else {
                format!(
                "the camera offers no mode with {} (set in [source.camera]); it offers: {offered}",
                want.join(", ")
            )
            }
        })
}

/// A video device node found under `/dev`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// N of `/dev/videoN`.
    pub index: u32,
    /// `/dev/videoN`.
    pub path: PathBuf,
    /// The driver's name for it (`/sys/class/video4linux/videoN/name`), if readable.
    pub name: Option<String>,
    /// Its `/dev/v4l/by-id/*` names (stable: vendor, model, serial).
    pub by_id: Vec<PathBuf>,
    /// Its `/dev/v4l/by-path/*` names (stable per port).
    pub by_path: Vec<PathBuf>,
}

impl DeviceInfo {
    /// The id a technician should put in `camera:ID`: by-id, else by-path, else the node.
    pub fn stable_id(&self) -> &Path {
        self.by_id
            .first()
            .or(self.by_path.first())
            .unwrap_or(&self.path)
    }

    fn describe(&self) -> String {
        format!(
            "{} \"{}\" ({})",
            self.path.display(),
            self.name.as_deref().unwrap_or("?"),
            self.stable_id().display()
        )
    }
}

/// The video devices under `dev` (normally `/dev`) with their names from `sys`
/// (normally `/sys`), sorted by index. Never fails: what cannot be read is left out.
pub fn list_devices_in(dev: &Path, sys: &Path) -> Vec<DeviceInfo> {
    let mut out: Vec<DeviceInfo> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dev) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(index) = name
                .to_str()
                .and_then(|n| n.strip_prefix("video"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let label = std::fs::read_to_string(
                sys.join("class/video4linux")
                    .join(format!("video{index}"))
                    .join("name"),
            )
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
            out.push(DeviceInfo {
                index,
                path: e.path(),
                name: label,
                by_id: Vec::new(),
                by_path: Vec::new(),
            });
        }
    }
    for (sub, by_id) in [("v4l/by-id", true), ("v4l/by-path", false)] {
        let Ok(entries) = std::fs::read_dir(dev.join(sub)) else {
            continue;
        };
        let mut links: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        links.sort();
        for link in links {
            let Some(index) = node_index(&link) else {
                continue;
            };
            if let Some(d) = out.iter_mut().find(|d| d.index == index) {
                if by_id {
                    d.by_id.push(link);
                } else {
                    d.by_path.push(link);
                }
            }
        }
    }
    out.sort_by_key(|d| d.index);
    out
}

/// The cameras of this machine (`/dev`, `/sys`).
pub fn list_devices() -> Vec<DeviceInfo> {
    list_devices_in(Path::new("/dev"), Path::new("/sys"))
}

/// N when `path` is, or links (through any chain of symlinks) to, a `videoN` node.
fn node_index(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).ok()?;
    target
        .file_name()?
        .to_str()?
        .strip_prefix("video")?
        .parse()
        .ok()
}

/// Finds the device an id names among `devices`. Fails with a message saying what was
/// looked for and what exists.
pub fn resolve<'a>(id: &CameraId, devices: &'a [DeviceInfo]) -> Result<&'a DeviceInfo, String> {
    let present = || {
        if devices.is_empty() {
            "cameras present: none (no /dev/video* device; is the camera plugged in and its driver, e.g. uvcvideo, loaded?)".to_string()
        } else {
            format!(
                "cameras present: {} (`linesight-edge cameras` lists their formats)",
                devices
                    .iter()
                    .map(DeviceInfo::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    match id {
        CameraId::Index(n) => devices.iter().find(|d| d.index == *n).ok_or_else(|| {
            format!(
                "no camera at index {n} (looked for /dev/video{n}); {}",
                present()
            )
        }),
        CameraId::Path(p) => {
            let index = node_index(p).ok_or_else(|| {
                let why = if p.symlink_metadata().is_ok() {
                    "it does not lead to a /dev/videoN node"
                } else {
                    "it does not exist (unplugged?)"
                };
                format!("no camera at `{}`: {why}; {}", p.display(), present())
            })?;
            devices.iter().find(|d| d.index == index).ok_or_else(|| {
                format!(
                    "`{}` leads to /dev/video{index}, which is not listed; {}",
                    p.display(),
                    present()
                )
            })
        }
        CameraId::Match(needle) => {
            let n = needle.to_lowercase();
            let hits: Vec<&DeviceInfo> = devices
                .iter()
                .filter(|d| {
                    d.name
                        .as_deref()
                        .is_some_and(|s| s.to_lowercase().contains(&n))
                        || d.by_id
                            .iter()
                            .chain(&d.by_path)
                            .any(|p| p.to_string_lossy().to_lowercase().contains(&n))
                })
                .collect();
            // A UVC camera has a capture node (by-id `...-video-index0`) and a metadata
            // node (`...-index1`) with the same name: prefer the capture node.
            let capture: Vec<&DeviceInfo> = hits
                .iter()
                .copied()
                .filter(|d| {
                    d.by_id
                        .iter()
                        .any(|p| p.to_string_lossy().ends_with("index0"))
                })
                .collect();
            let hits = if capture.is_empty() { hits } else { capture };
            match hits.as_slice() {
                [one] => Ok(one),
                [] => Err(format!(
                    "no camera's name or stable id contains `{needle}`; {}",
                    present()
                )),
                many => Err(format!(
                    "`{needle}` matches {} cameras: {}; use a longer part of the name or serial, or a /dev/v4l/by-id path",
                    many.len(),
                    many.iter()
                        .map(|d| d.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// Builds the camera source, or says why this build has none.
pub fn build(
    id: &str,
    options: &CameraOptions,
    every_frame: bool,
) -> Result<Box<dyn super::FrameSource>, String> {
    options.validate()?;
    #[cfg(feature = "camera")]
    {
        Ok(Box::new(capture::CameraSource::new(
            id,
            options.clone(),
            every_frame,
        )))
    }
    #[cfg(not(feature = "camera"))]
    {
        let _ = (id, every_frame);
        Err("this linesight-edge was built without the `camera` feature (build with `--features camera`, which needs libclang-dev); use dir:PATH or synthetic[:FPS]".into())
    }
}

/// An open error of the camera source.
#[cfg(feature = "camera")]
pub(crate) fn open_error(name: &str, reason: String) -> super::SourceError {
    super::SourceError::Open {
        name: name.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(format: PixelFormat, width: u32, height: u32, fps: f64) -> Mode {
        Mode {
            format,
            width,
            height,
            fps,
        }
    }

    /// A C920-like camera: YUYV up to 30 fps only at small sizes, MJPG 30 fps up to 1080p.
    fn c920() -> Vec<Mode> {
        use PixelFormat::*;
        vec![
            mode(Yuyv, 640, 480, 30.0),
            mode(Yuyv, 640, 480, 15.0),
            mode(Yuyv, 1280, 720, 10.0),
            mode(Yuyv, 1920, 1080, 5.0),
            mode(Mjpeg, 640, 480, 30.0),
            mode(Mjpeg, 1280, 720, 30.0),
            mode(Mjpeg, 1920, 1080, 30.0),
            mode(Nv12, 640, 480, 60.0),
        ]
    }

    #[test]
    fn ids() {
        assert_eq!(CameraId::parse("0"), CameraId::Index(0));
        assert_eq!(CameraId::parse(" 12 "), CameraId::Index(12));
        assert_eq!(
            CameraId::parse("/dev/v4l/by-id/usb-x-video-index0"),
            CameraId::Path("/dev/v4l/by-id/usb-x-video-index0".into())
        );
        assert_eq!(CameraId::parse("C920"), CameraId::Match("C920".into()));
    }

    #[test]
    fn negotiation_prefers_640x480_at_30_then_uncompressed() {
        let o = CameraOptions::default();
        assert_eq!(
            negotiate(&c920(), &o).unwrap(),
            mode(PixelFormat::Yuyv, 640, 480, 30.0)
        );
        let o = CameraOptions {
            width: 1280,
            height: 720,
            ..Default::default()
        };
        // 30 fps only in MJPG at 720p: the frame rate outranks the format.
        assert_eq!(
            negotiate(&c920(), &o).unwrap(),
            mode(PixelFormat::Mjpeg, 1280, 720, 30.0)
        );
        let o = CameraOptions {
            format: "yuy2".into(),
            width: 1280,
            height: 720,
            ..Default::default()
        };
        assert_eq!(
            negotiate(&c920(), &o).unwrap(),
            mode(PixelFormat::Yuyv, 1280, 720, 10.0)
        );
        let o = CameraOptions {
            format: "NV12".into(),
            ..Default::default()
        };
        assert_eq!(negotiate(&c920(), &o).unwrap().fps, 60.0);
        let o = CameraOptions {
            format: "YUYV".into(),
            fps: 60,
            ..Default::default()
        };
        let e = negotiate(&c920(), &o).unwrap_err();
        assert!(
            e.contains("no mode with YUYV, 60 fps") && e.contains("MJPG 1920x1080 @ 30"),
            "{e}"
        );
        let e = negotiate(&[], &CameraOptions::default()).unwrap_err();
        assert!(e.contains("none in YUYV, NV12, NM12 or MJPG"), "{e}");
        for (bad, needle) in [
            (
                CameraOptions {
                    format: "H264".into(),
                    ..Default::default()
                },
                "source.camera.format `H264`",
            ),
            (
                CameraOptions {
                    width: 640,
                    ..Default::default()
                },
                "both width and height",
            ),
            (
                CameraOptions {
                    buffers: 1,
                    ..Default::default()
                },
                "buffers 1",
            ),
        ] {
            let e = negotiate(&c920(), &bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    /// A fake /dev and /sys: two UVC cameras (capture + metadata nodes each).
    fn fake_machine() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("dev");
        let sys = d.path().join("sys/class/video4linux");
        std::fs::create_dir_all(dev.join("v4l/by-id")).unwrap();
        std::fs::create_dir_all(dev.join("v4l/by-path")).unwrap();
        for (n, name) in [
            (0, "HD Pro Webcam C920"),
            (1, "HD Pro Webcam C920"),
            (2, "USB2.0 Camera"),
            (3, "USB2.0 Camera"),
        ] {
            std::fs::write(dev.join(format!("video{n}")), "").unwrap();
            std::fs::create_dir_all(sys.join(format!("video{n}"))).unwrap();
            std::fs::write(sys.join(format!("video{n}/name")), format!("{name}\n")).unwrap();
        }
        for (link, n) in [
            ("by-id/usb-046d_HD_Pro_Webcam_C920_ABCD1234-video-index0", 0),
            ("by-id/usb-046d_HD_Pro_Webcam_C920_ABCD1234-video-index1", 1),
            ("by-id/usb-Generic_USB2.0_Camera_SN0042-video-index0", 2),
            ("by-id/usb-Generic_USB2.0_Camera_SN0042-video-index1", 3),
            ("by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0", 0),
        ] {
            std::os::unix::fs::symlink(format!("../../video{n}"), dev.join("v4l").join(link))
                .unwrap();
        }
        d
    }

    #[test]
    fn devices_are_listed_and_ids_resolved() {
        let d = fake_machine();
        let (dev, sys) = (d.path().join("dev"), d.path().join("sys"));
        let devices = list_devices_in(&dev, &sys);
        assert_eq!(devices.len(), 4);
        assert_eq!(devices[0].name.as_deref(), Some("HD Pro Webcam C920"));
        assert_eq!(devices[0].by_path.len(), 1);
        assert!(devices[2]
            .stable_id()
            .ends_with("usb-Generic_USB2.0_Camera_SN0042-video-index0"));

        let r = |id: &str| resolve(&CameraId::parse(id), &devices).map(|d| d.index);
        assert_eq!(r("2"), Ok(2));
        assert_eq!(
            r("c920"),
            Ok(0),
            "capture node preferred over metadata node"
        );
        assert_eq!(r("SN0042"), Ok(2));
        let by_id = dev.join("v4l/by-id/usb-Generic_USB2.0_Camera_SN0042-video-index0");
        assert_eq!(r(by_id.to_str().unwrap()), Ok(2));
        let e = r("7").unwrap_err();
        assert!(
            e.contains("no camera at index 7 (looked for /dev/video7)")
                && e.contains("HD Pro Webcam C920")
                && e.contains("usb-Generic_USB2.0_Camera_SN0042-video-index0"),
            "{e}"
        );
        let e = r("usb").unwrap_err();
        assert!(e.contains("matches 2 cameras"), "{e}");
        let e = r("Basler").unwrap_err();
        assert!(e.contains("contains `Basler`"), "{e}");
        let gone = dev.join("v4l/by-id/usb-Other-video-index0");
        let e = r(gone.to_str().unwrap()).unwrap_err();
        assert!(e.contains("does not exist (unplugged?)"), "{e}");

        // Re-plugged: the same by-id name now leads to video5.
        std::fs::remove_file(&by_id).unwrap();
        std::fs::write(dev.join("video5"), "").unwrap();
        std::os::unix::fs::symlink("../../video5", &by_id).unwrap();
        let devices = list_devices_in(&dev, &sys);
        assert_eq!(
            resolve(&CameraId::Path(by_id), &devices).map(|d| d.index),
            Ok(5)
        );

        let e = resolve(&CameraId::Index(0), &[]).unwrap_err();
        assert!(e.contains("cameras present: none"), "{e}");
    }
}
