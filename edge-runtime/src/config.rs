//! `run`'s configuration: the `edge.toml` file ([`EdgeConfig`]), the flags that override
//! it ([`Overrides`]), and the one function that resolves both into [`RunSettings`].
//!
//! Precedence: flag > environment (`LINESIGHT_ROOT`) > config file > default. Unknown keys
//! are refused by name. Relative paths in the file are relative to the file's folder.
//! Only deployment settings live here (source, stations, sink, store, health endpoint);
//! the model's settings (labels, preprocessing, thresholds, reject rule) travel in the
//! bundle's manifest, and putting one in edge.toml is refused.
//! `edge-runtime/examples/edge.toml` writes every key out with its default.

use crate::source::{SourceOptions, SourceSpec};
use crate::station::{Rect, MAX_SMOOTH};
use crate::store::StoreLimits;
use crate::trust::KeySpec;
use crate::{decide::MAX_TOPK, memory, sink::jsonl::SinkSpec, slots};
use linesight_shared::decode::ImageLimits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config `{path}`: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Keys that belong to the model (its manifest), not to the box.
const MODEL_SIDE_KEYS: [&str; 7] = [
    "min_score",
    "min_margin",
    "per_class_min_score",
    "threshold",
    "labels",
    "mean",
    "resize_shorter",
];

/// Tract threads when neither `--threads` nor `model.threads` says (measured on
/// MobileNetV2: docs/benchmarks.md, "int8 side by side").
pub const DEFAULT_THREADS: usize = 1;

/// The `edge.toml` file. Every key is optional.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub model: ModelSection,
    pub source: SourceSection,
    #[serde(rename = "station")]
    pub stations: Vec<StationSection>,
    pub decision: DecisionSection,
    pub sink: SinkSection,
    pub http: HttpSection,
    pub store: StoreSection,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A bundle file; absent: the installed `current` model under `root`.
    pub bundle: Option<PathBuf>,
    /// Models root; absent: `$LINESIGHT_ROOT`, else /var/lib/linesight.
    pub root: Option<PathBuf>,
    pub top_k: usize,
    /// Public keys bundles must be signed with: `signing.pub` files (relative to this
    /// file) or 64 hex digits inline. Used by `install` without `--trusted-key` and by the
    /// hot swap; `ROOT/trusted-keys/*.pub` are trusted too.
    pub trusted_keys: Vec<String>,
    /// Accept unsigned bundles (desktop use; `install --allow-unsigned` per install).
    pub allow_unsigned: bool,
    /// Following `current` (no bundle): look at the pointer every N ms for a hot swap;
    /// 0: only on SIGHUP.
    pub poll_current_ms: u64,
    /// Threads tract runs the model on (1..=64): 1 = the loop's own thread; N > 1 = a
    /// pool of N threads for the model's matrix products (see docs/benchmarks.md for the
    /// measured default).
    pub threads: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            bundle: None,
            root: None,
            top_k: 3,
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            poll_current_ms: 1000,
            threads: DEFAULT_THREADS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSection {
    pub spec: String,
    /// 0: as fast as the loop takes frames.
    pub fps: f64,
    #[serde(rename = "loop")]
    pub looping: bool,
    pub every_frame: bool,
    /// 0: run until stopped.
    pub max_frames: u64,
    pub stall_timeout_ms: u64,
    pub reopen_backoff_ms: u64,
    pub reopen_backoff_max_ms: u64,
    pub synthetic_size: [u32; 2],
    /// The largest image (`dir:`) or frame the source may deliver, in megapixels; a larger
    /// one is refused (a bad frame) before it is decoded.
    pub max_image_megapixels: u32,
    /// `[source.camera]`: format override and YUV range of `camera:ID`.
    pub camera: crate::source::camera::CameraOptions,
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            spec: "synthetic".into(),
            fps: 0.0,
            looping: false,
            every_frame: false,
            max_frames: 0,
            stall_timeout_ms: 5000,
            reopen_backoff_ms: 200,
            reopen_backoff_max_ms: 10_000,
            synthetic_size: [640, 480],
            max_image_megapixels: linesight_shared::decode::DEFAULT_MAX_MEGAPIXELS,
            camera: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StationSection {
    pub name: String,
    /// `[x, y, width, height]` in frame pixels; absent: the whole frame.
    #[serde(default)]
    pub rect: Option<[u32; 4]>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionSection {
    /// Average the scores over the last N frames (1: no smoothing; at most 32).
    pub smoothing_frames: usize,
    /// An accepted decision whose score or margin is within this of the rule's threshold
    /// is `uncertain` (saved to the store like a reject).
    pub uncertain_band: f32,
}

impl Default for DecisionSection {
    fn default() -> Self {
        DecisionSection {
            smoothing_frames: 1,
            uncertain_band: 0.1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    pub spec: String,
    /// Rotate a `jsonl:PATH` file above this size (0: never).
    pub rotate_bytes: u64,
    /// Rotated files kept (`PATH.1` ... `PATH.N`); at least 1 while rotating (0 would
    /// delete each rotated file).
    pub keep: usize,
}

impl Default for SinkSection {
    fn default() -> Self {
        SinkSection {
            spec: "jsonl:-".into(),
            rotate_bytes: 64 << 20,
            keep: 5,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// e.g. `127.0.0.1:9464`; absent: no endpoint.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub enabled: bool,
    /// Absent: ROOT/uncertain.
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub max_entries: usize,
    pub min_interval_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            enabled: true,
            dir: None,
            max_bytes: 256 << 20,
            max_entries: 2000,
            min_interval_ms: 1000,
        }
    }
}

impl EdgeConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let mut message = e.message().to_string();
            if MODEL_SIDE_KEYS.iter().any(|k| message.contains(&format!("`{k}`"))) {
                message.push_str(
                    "; thresholds, labels and preprocessing travel in the bundle's manifest (set them when exporting), not in edge.toml",
                );
            }
            if let Some(span) = e.span() {
                let line = text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                message = format!("line {line}: {message}");
            }
            ConfigError::Parse {
                path: origin.to_string(),
                message,
            }
        })
    }

    /// Reads a config file; relative paths in it become relative to its folder.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        rebase(&mut cfg.model.bundle);
        rebase(&mut cfg.model.root);
        for key in &mut cfg.model.trusted_keys {
            if let KeySpec::File(p) = KeySpec::parse(key, base) {
                *key = p.display().to_string();
            }
        }
        rebase(&mut cfg.store.dir);
        for prefix in ["dir:", "jsonl:"] {
            for spec in [&mut cfg.source.spec, &mut cfg.sink.spec] {
                if let Some(rest) = spec.strip_prefix(prefix) {
                    if rest != "-" && Path::new(rest).is_relative() {
                        *spec = format!("{prefix}{}", base.join(rest).display());
                    }
                }
            }
        }
        Ok(cfg)
    }
}

/// What the command line sets; `None` / `false` leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// The config file these settings were read from (`--config`), if any: `run` refuses
    /// a sink over it.
    pub config: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub source: Option<String>,
    pub fps: Option<f64>,
    pub looping: bool,
    pub every_frame: bool,
    pub max_frames: Option<u64>,
    pub sink: Option<String>,
    pub http: Option<String>,
    pub store: Option<PathBuf>,
    pub no_store: bool,
    pub smoothing_frames: Option<usize>,
    pub stall_timeout_ms: Option<u64>,
    pub top_k: Option<usize>,
    pub threads: Option<usize>,
    pub max_image_megapixels: Option<u32>,
}

/// A station as resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationSettings {
    pub name: String,
    pub rect: Option<Rect>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub limits: StoreLimits,
}

/// Everything `run` needs, resolved and validated (printed by `--show-settings`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// The config file read (`--config`), if any.
    pub config: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub root: PathBuf,
    pub top_k: usize,
    pub source: SourceSpec,
    pub source_options: SourceOptions,
    pub max_frames: Option<u64>,
    pub stall_timeout: Duration,
    pub reopen_backoff: Duration,
    pub reopen_backoff_max: Duration,
    pub stations: Vec<StationSettings>,
    pub smoothing_frames: usize,
    pub uncertain_band: f32,
    pub sink: SinkSpec,
    pub rotate_bytes: u64,
    pub keep: usize,
    pub http: Option<SocketAddr>,
    pub store: Option<StoreSettings>,
    /// edge.toml `model.trusted_keys` (for the hot swap).
    pub trusted_keys: Vec<KeySpec>,
    pub allow_unsigned: bool,
    /// Interval between looks at `current` for a hot swap; None: only on SIGHUP.
    pub poll_current: Option<Duration>,
    /// Tract threads for the running model (and a hot-swapped one).
    pub threads: usize,
    /// The largest image or frame decoded (`--max-image-megapixels`,
    /// `source.max_image_megapixels`).
    pub image_limits: ImageLimits,
    /// Test hook: the available memory to assume (not a config key).
    #[serde(skip)]
    pub mem_available: memory::Available,
}

/// The store folder: `--store` > file > ROOT/uncertain.
pub fn store_dir(flag: Option<PathBuf>, file: Option<PathBuf>, root: &Path) -> PathBuf {
    flag.or(file).unwrap_or_else(|| root.join("uncertain"))
}

/// Merges flags over the file (or the defaults) and checks the result.
/// Fails on a malformed or out-of-range value, naming the setting.
pub fn resolve(file: EdgeConfig, o: Overrides) -> Result<RunSettings, ConfigError> {
    let bad = |m: String| ConfigError::Invalid(m);
    let root = slots::resolve_root(o.root.or(file.model.root));
    let top_k = o.top_k.unwrap_or(file.model.top_k);
    if !(1..=MAX_TOPK).contains(&top_k) {
        return Err(bad(format!("top_k {top_k} is out of range 1..={MAX_TOPK}")));
    }
    let spec_text = o.source.unwrap_or(file.source.spec);
    let mut source = SourceSpec::parse(&spec_text).map_err(|e| bad(e.to_string()))?;
    file.source.camera.validate().map_err(bad)?;
    if let SourceSpec::Camera { camera, .. } = &mut source {
        *camera = file.source.camera.clone();
    }
    let file_fps = (file.source.fps != 0.0).then_some(file.source.fps);
    if let Some(f) = file_fps.filter(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(bad(format!(
            "source.fps {f} must be positive (or 0 for as fast as possible)"
        )));
    }
    if let Some(f) = o.fps.filter(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(bad(format!("--fps {f} must be positive")));
    }
    let fps = o.fps.or(source.fps()).or(file_fps);
    let image_limits = ImageLimits::megapixels(
        o.max_image_megapixels
            .unwrap_or(file.source.max_image_megapixels),
    )
    .map_err(bad)?;
    let [w, h] = file.source.synthetic_size;
    if w == 0 || h == 0 {
        return Err(bad(format!("source.synthetic_size {w}x{h} is empty")));
    }
    image_limits
        .check(w, h)
        .map_err(|e| bad(format!("source.synthetic_size: {e}")))?;
    let stall_ms = o.stall_timeout_ms.unwrap_or(file.source.stall_timeout_ms);
    if stall_ms == 0 {
        return Err(bad("the stall timeout must be at least 1 ms".into()));
    }
    let backoff = file.source.reopen_backoff_ms.max(1);
    let backoff_max = file.source.reopen_backoff_max_ms.max(backoff);
    // 0 means "until stopped", in the file and on the command line alike.
    let max_frames = o.max_frames.unwrap_or(file.source.max_frames);
    let max_frames = (max_frames > 0).then_some(max_frames);

    let mut stations = Vec::new();
    for s in &file.stations {
        if s.name.trim().is_empty() {
            return Err(bad("a [[station]] has an empty name".into()));
        }
        if stations.iter().any(|x: &StationSettings| x.name == s.name) {
            return Err(bad(format!("station `{}` is defined twice", s.name)));
        }
        let rect = match s.rect {
            None => None,
            Some([x, y, w, h]) if w > 0 && h > 0 => Some(Rect { x, y, w, h }),
            Some(r) => {
                return Err(bad(format!(
                    "station `{}`: rect {r:?} must be [x, y, width, height] with a non-zero width and height",
                    s.name
                )))
            }
        };
        // Generated frames have a known size: a region outside it is refused now, not
        // after a run that decides nothing (other sources: on their first frame).
        if let (Some(r), SourceSpec::Synthetic { .. } | SourceSpec::Fault { .. }) = (rect, &source)
        {
            r.check_fits(w, h).map_err(|e| {
                bad(format!(
                    "station `{}`: {e} (source.synthetic_size = [{w}, {h}])",
                    s.name
                ))
            })?;
        }
        stations.push(StationSettings {
            name: s.name.clone(),
            rect,
        });
    }
    if stations.is_empty() {
        stations.push(StationSettings {
            name: "frame".into(),
            rect: None,
        });
    }

    let smoothing_frames = o.smoothing_frames.unwrap_or(file.decision.smoothing_frames);
    if !(1..=MAX_SMOOTH).contains(&smoothing_frames) {
        return Err(bad(format!(
            "smoothing over {smoothing_frames} frames is out of range 1..={MAX_SMOOTH}"
        )));
    }
    let band = file.decision.uncertain_band;
    if !(0.0..=1.0).contains(&band) {
        return Err(bad(format!(
            "decision.uncertain_band {band} is out of range 0..=1"
        )));
    }
    let sink = SinkSpec::parse(&o.sink.unwrap_or(file.sink.spec)).map_err(bad)?;
    // Elsewhere in this file 0 means "never" or "unlimited"; here it would delete every
    // rotated file, i.e. decisions counted as written and then thrown away.
    if matches!(sink, SinkSpec::File { .. }) && file.sink.rotate_bytes > 0 && file.sink.keep == 0 {
        return Err(bad(format!(
            "sink.keep 0 would delete each rotated decision file as soon as it rotates (every {} bytes), losing those decisions; keep at least 1 rotated file, or set sink.rotate_bytes = 0 to never rotate",
            file.sink.rotate_bytes
        )));
    }
    let http = match o.http.or(file.http.listen) {
        None => None,
        Some(a) => {
            let addr: SocketAddr = a.parse().map_err(|_| {
                bad(format!(
                    "http address `{a}` is not IP:PORT (e.g. 127.0.0.1:9464)"
                ))
            })?;
            if !addr.ip().is_loopback() {
                return Err(bad(format!(
                    "http address `{a}`: only a loopback address (127.0.0.1, ::1) is allowed"
                )));
            }
            Some(addr)
        }
    };
    let store = (file.store.enabled && !o.no_store).then(|| StoreSettings {
        dir: store_dir(o.store, file.store.dir, &root),
        limits: StoreLimits {
            max_bytes: file.store.max_bytes,
            max_entries: file.store.max_entries,
            min_interval: Duration::from_millis(file.store.min_interval_ms),
        },
    });
    let base = Path::new(".");
    let trusted_keys = file
        .model
        .trusted_keys
        .iter()
        .map(|k| KeySpec::parse(k, base))
        .collect();
    let threads = o.threads.unwrap_or(file.model.threads);
    if !(1..=crate::engine::MAX_THREADS).contains(&threads) {
        return Err(bad(format!(
            "threads {threads} is out of range 1..={}",
            crate::engine::MAX_THREADS
        )));
    }
    let poll_current =
        (file.model.poll_current_ms > 0).then(|| Duration::from_millis(file.model.poll_current_ms));
    Ok(RunSettings {
        config: o.config,
        trusted_keys,
        allow_unsigned: file.model.allow_unsigned,
        poll_current,
        threads,
        image_limits,
        mem_available: memory::Available::Kernel,
        bundle: o.bundle.or(file.model.bundle),
        root,
        top_k,
        source,
        source_options: SourceOptions {
            fps,
            looping: o.looping || file.source.looping,
            every_frame: o.every_frame || file.source.every_frame,
            synthetic_size: (w, h),
        },
        max_frames,
        stall_timeout: Duration::from_millis(stall_ms),
        reopen_backoff: Duration::from_millis(backoff),
        reopen_backoff_max: Duration::from_millis(backoff_max),
        stations,
        smoothing_frames,
        uncertain_band: band,
        sink,
        rotate_bytes: file.sink.rotate_bytes,
        keep: file.sink.keep,
        http,
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edge.toml");
        let cfg = EdgeConfig::read(&path).unwrap();
        // The example writes out every default; its only additions are the stations.
        let expected = EdgeConfig {
            stations: cfg.stations.clone(),
            ..Default::default()
        };
        assert_eq!(cfg, expected);
        assert_eq!(cfg.stations.len(), 2);
        resolve(cfg, Overrides::default()).unwrap();
    }

    #[test]
    fn unknown_and_model_side_keys_are_refused_by_name() {
        let e = EdgeConfig::parse("[source]\nspec = \"synthetic\"\nfsp = 3\n", "edge.toml")
            .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("unknown field `fsp`") && m.contains("line 3"),
            "{m}"
        );
        let e = EdgeConfig::parse("[decision]\nmin_score = 0.5\n", "edge.toml").unwrap_err();
        assert!(
            e.to_string().contains("travel in the bundle's manifest"),
            "{e}"
        );
        let e = EdgeConfig::parse("[camera]\n", "edge.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `camera`"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let cfg = EdgeConfig::parse(
            "[source]\nspec = \"synthetic:5\"\nmax_frames = 10\n[sink]\nspec = \"none\"\n[[station]]\nname = \"a\"\nrect = [0, 0, 4, 4]\n",
            "t",
        )
        .unwrap();
        let s = resolve(cfg.clone(), Overrides::default()).unwrap();
        assert_eq!(s.source_options.fps, Some(5.0));
        assert_eq!(s.max_frames, Some(10));
        assert_eq!(s.sink, SinkSpec::None);
        assert_eq!(
            s.stations[0].rect,
            Some(Rect {
                x: 0,
                y: 0,
                w: 4,
                h: 4
            })
        );
        let s = resolve(
            cfg,
            Overrides {
                fps: Some(9.0),
                max_frames: Some(3),
                sink: Some("jsonl:-".into()),
                root: Some("/r".into()),
                every_frame: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.source_options.fps, Some(9.0));
        assert!(s.source_options.every_frame);
        assert_eq!(s.max_frames, Some(3));
        assert_eq!(s.sink, SinkSpec::Stdout);
        assert_eq!(s.store.unwrap().dir, PathBuf::from("/r/uncertain"));
        // Defaults: one whole-frame station.
        let s = resolve(EdgeConfig::default(), Overrides::default()).unwrap();
        assert_eq!(
            s.stations,
            vec![StationSettings {
                name: "frame".into(),
                rect: None
            }]
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let cases: [(&str, Overrides, &str); 10] = [
            // Second adversarial pass (issue 16): keep = 0 deleted every rotated file.
            (
                "[sink]\nspec = \"jsonl:/tmp/d.jsonl\"\nrotate_bytes = 100\nkeep = 0\n",
                Overrides::default(),
                "sink.keep 0 would delete each rotated decision file",
            ),
            (
                "",
                Overrides {
                    http: Some("0.0.0.0:80".into()),
                    ..Default::default()
                },
                "only a loopback address",
            ),
            (
                "",
                Overrides {
                    source: Some("webcam".into()),
                    ..Default::default()
                },
                "unknown source `webcam`",
            ),
            (
                "",
                Overrides {
                    sink: Some("csv:x".into()),
                    ..Default::default()
                },
                "unknown sink",
            ),
            (
                "",
                Overrides {
                    smoothing_frames: Some(99),
                    ..Default::default()
                },
                "out of range 1..=32",
            ),
            (
                "[[station]]\nname = \"a\"\n[[station]]\nname = \"a\"\n",
                Overrides::default(),
                "defined twice",
            ),
            (
                "[[station]]\nname = \"a\"\nrect = [0, 0, 0, 5]\n",
                Overrides::default(),
                "non-zero width",
            ),
            // Issue 16: sizes are bounded, regions checked against a known frame size.
            (
                "[source]\nsynthetic_size = [100000, 100000]\n",
                Overrides::default(),
                "source.synthetic_size: 100000x100000 is 10000 megapixels, more than the limit of 50 megapixels",
            ),
            (
                "[[station]]\nname = \"far\"\nrect = [600, 0, 100, 100]\n",
                Overrides::default(),
                "station `far`: region 600,0 100x100 does not fit a 640x480 frame",
            ),
            (
                "",
                Overrides {
                    max_image_megapixels: Some(0),
                    ..Default::default()
                },
                "max_image_megapixels 0 is out of range",
            ),
        ];
        for (text, o, needle) in cases {
            let e = resolve(EdgeConfig::parse(text, "t").unwrap(), o).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
