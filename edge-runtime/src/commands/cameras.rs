//! `linesight-edge cameras`: the video devices of this box, their stable ids (what to put
//! in `--source camera:ID`) and, in a build with the `camera` feature, the formats each
//! offers and the mode `run` would choose. A technician's first command at a new box.

use crate::source::camera::{self, CameraOptions, DeviceInfo, Mode};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CamerasSettings {
    /// Device folder (normally `/dev`) and sysfs (normally `/sys`).
    pub dev: PathBuf,
    pub sys: PathBuf,
    /// The `[source.camera]` override, to show the mode `run` would negotiate.
    pub options: CameraOptions,
}

impl Default for CamerasSettings {
    fn default() -> Self {
        CamerasSettings {
            dev: "/dev".into(),
            sys: "/sys".into(),
            options: CameraOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraEntry {
    pub index: u32,
    pub path: PathBuf,
    pub name: Option<String>,
    /// The id to use in `camera:ID`: by-id path, else by-path, else the node.
    pub stable_id: PathBuf,
    pub by_id: Vec<PathBuf>,
    pub by_path: Vec<PathBuf>,
    /// Whether the node captures video; None when not probed.
    pub capture: Option<bool>,
    pub driver: Option<String>,
    pub bus: Option<String>,
    pub modes: Vec<Mode>,
    /// The mode `run` would choose with the given `[source.camera]`.
    pub chosen: Option<Mode>,
    /// Why the node could not be probed or no mode fits.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CamerasReport {
    /// Whether this build can capture (the `camera` feature).
    pub camera_feature: bool,
    pub cameras: Vec<CameraEntry>,
}

fn entry(d: DeviceInfo, options: &CameraOptions) -> CameraEntry {
    let mut e = CameraEntry {
        index: d.index,
        stable_id: d.stable_id().to_path_buf(),
        path: d.path,
        name: d.name,
        by_id: d.by_id,
        by_path: d.by_path,
        capture: None,
        driver: None,
        bus: None,
        modes: Vec::new(),
        chosen: None,
        error: None,
    };
    probe(&mut e, options);
    e
}

#[cfg(feature = "camera")]
fn probe(e: &mut CameraEntry, options: &CameraOptions) {
    match camera::capture::probe(&e.path) {
        Ok(p) => {
            e.capture = Some(p.capture);
            e.driver = Some(p.driver);
            e.bus = Some(p.bus);
            if e.name.is_none() {
                e.name = Some(p.card);
            }
            if p.capture {
                match camera::negotiate(&p.modes, options) {
                    Ok(m) => e.chosen = Some(m),
                    Err(why) => e.error = Some(why),
                }
            }
            e.modes = p.modes;
        }
        Err(err) => e.error = Some(format!("cannot open `{}`: {err}", e.path.display())),
    }
}

#[cfg(not(feature = "camera"))]
fn probe(_: &mut CameraEntry, _: &CameraOptions) {}

/// Lists the cameras. Never fails: a machine without cameras gives an empty list.
pub fn run(s: &CamerasSettings) -> CamerasReport {
    let devices = camera::list_devices_in(&s.dev, &s.sys);
    CamerasReport {
        camera_feature: cfg!(feature = "camera"),
        cameras: devices.into_iter().map(|d| entry(d, &s.options)).collect(),
    }
}

impl CamerasReport {
    /// The human-readable listing.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.cameras.is_empty() {
            out.push_str("no cameras: no /dev/video* device (is the camera plugged in and its driver, e.g. uvcvideo, loaded?)\n");
        }
        for c in &self.cameras {
            let _ = writeln!(
                out,
                "{}  \"{}\"{}",
                c.path.display(),
                c.name.as_deref().unwrap_or("?"),
                match c.capture {
                    Some(false) => "  (no video capture: metadata node)",
                    _ => "",
                }
            );
            let _ = writeln!(out, "  use:      --source camera:{}", c.stable_id.display());
            for p in c.by_id.iter().chain(&c.by_path) {
                if p != &c.stable_id {
                    let _ = writeln!(out, "  also:     camera:{}", p.display());
                }
            }
            if let (Some(d), Some(b)) = (&c.driver, &c.bus) {
                let _ = writeln!(out, "  driver:   {d} on {b}");
            }
            if !c.modes.is_empty() {
                let _ = writeln!(out, "  formats:  {}", summarize(&c.modes));
            }
            if let Some(m) = &c.chosen {
                let _ = writeln!(out, "  run uses: {m}");
            }
            if let Some(e) = &c.error {
                let _ = writeln!(out, "  error:    {e}");
            }
        }
        if !self.camera_feature {
            out.push_str(
                "(formats not shown: this linesight-edge was built without the `camera` feature)\n",
            );
        }
        out
    }
}

/// `YUYV 640x480@30,15 1280x720@10; MJPG ...`: one group per format.
fn summarize(modes: &[Mode]) -> String {
    let mut groups: Vec<String> = Vec::new();
    let mut formats: Vec<_> = modes.iter().map(|m| m.format).collect();
    formats.dedup();
    for f in formats {
        let mut sizes: Vec<(u32, u32)> = modes
            .iter()
            .filter(|m| m.format == f)
            .map(|m| (m.width, m.height))
            .collect();
        sizes.dedup();
        let parts: Vec<String> = sizes
            .iter()
            .map(|&(w, h)| {
                let rates: Vec<String> = modes
                    .iter()
                    .filter(|m| m.format == f && (m.width, m.height) == (w, h))
                    .map(|m| format!("{}", (m.fps * 100.0).round() / 100.0))
                    .collect();
                format!("{w}x{h}@{}", rates.join(","))
            })
            .collect();
        groups.push(format!("{f} {}", parts.join(" ")));
    }
    groups.join("; ")
}

/// For tests: the listing of a fake `/dev` + `/sys`.
pub fn run_in(dev: &Path, sys: &Path) -> CamerasReport {
    run(&CamerasSettings {
        dev: dev.into(),
        sys: sys.into(),
        ..Default::default()
    })
}
