//! The uncertain store: rejected and uncertain frames kept on the box for the next
//! training round, bounded in bytes and in entries, oldest evicted first.
//!
//! ```text
//! STORE/                      default ROOT/uncertain
//!   000000000042.png          the station's region as the camera saw it (before resizing)
//!   000000000042.json         its decision line (the commit marker of the entry)
//!   *.tmp                     a write in progress (removed at the next open)
//!   next-id                   the next entry number, kept when the store is emptied
//! ```
//!
//! Entry numbers never restart: when eviction or `export-uncertain --clear` empties the
//! store, `next-id` keeps the count, so a later export cannot meet an earlier one's names.
//! Exporting never overwrites: an entry whose name is taken in the destination by other
//! bytes is written under the next free name (`000000000042-2.png`), an identical copy
//! already there is kept, and the store is cleared only of entries whose copies were
//! fsynced and read back equal. Export reads the store without cleaning it, so a `run`
//! writing into it meanwhile loses nothing.
//!
//! Writes are crash-safe: each file is written under `NAME.tmp`, fsynced and renamed, the
//! image first and the record last, then the folder is fsynced. An entry exists when its
//! `.json` exists; an image without its record (a crash between the two renames, or during
//! eviction, which removes the record first) is removed at the next open. Saving encodes a
//! PNG and allocates: it is rate-limited (`min_interval`), off the per-frame path.

use image::ImageEncoder;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoreLimits {
    /// Most bytes (images + records) kept.
    pub max_bytes: u64,
    /// Most entries kept.
    pub max_entries: usize,
    /// At least this long between two saves (a part in view stays uncertain for many
    /// frames; one picture of it is enough).
    pub min_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("uncertain store `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode the image for the uncertain store: {0}")]
    Encode(String),
    #[error("entry of {bytes} bytes is larger than the store's cap of {max_bytes} bytes")]
    TooLarge { bytes: u64, max_bytes: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("cannot write the export `{path}`: {source}")]
    Export {
        path: String,
        source: std::io::Error,
    },
}

fn out_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Export {
        path: path.display().to_string(),
        source,
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: u64,
    bytes: u64,
}

/// What [`UncertainStore::save`] did.
#[derive(Debug, PartialEq)]
pub enum Saved {
    /// Saved as entry `id`; `evicted` older entries were removed to make room.
    Entry { id: u64, evicted: usize },
    /// Skipped: the last save was less than `min_interval` ago.
    RateLimited,
}

pub struct UncertainStore {
    dir: PathBuf,
    limits: StoreLimits,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_id: u64,
    last_save: Option<Instant>,
}

impl UncertainStore {
    /// Opens (creating) the store folder, removes leftovers of interrupted writes and
    /// indexes the entries. Fails when the folder cannot be created or read.
    pub fn open(dir: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut records = Vec::new();
        let mut images = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let e = e.map_err(io_at(dir))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            let Some(id) = parse_id(stem) else { continue };
            match ext {
                "json" => records.push(id),
                "png" => images.push(id),
                _ => {}
            }
        }
        records.sort_unstable();
        for id in &images {
            if records.binary_search(id).is_err() {
                let p = entry_path(dir, *id, "png");
                std::fs::remove_file(&p).map_err(io_at(&p))?;
                tracing::info!(path = %p.display(), "removed an image without its record (interrupted write)");
            }
        }
        let mut entries = VecDeque::with_capacity(records.len());
        let mut bytes = 0;
        for id in records {
            let size = |ext| std::fs::metadata(entry_path(dir, id, ext)).map_or(0, |m| m.len());
            let b = size("json") + size("png");
            bytes += b;
            entries.push_back(Entry { id, bytes: b });
        }
        let next_id = entries
            .back()
            .map_or(1, |e| e.id + 1)
            .max(read_next_id(dir));
        let mut store = UncertainStore {
            dir: dir.to_path_buf(),
            limits,
            entries,
            bytes,
            next_id,
            last_save: None,
        };
        // Caps may have shrunk since the last run.
        store.evict(0)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of entries and their total bytes.
    pub fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.bytes)
    }

    /// Entry ids, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// True when a save now would not be rate-limited.
    pub fn ready(&self, now: Instant) -> bool {
        self.last_save
            .is_none_or(|t| now.saturating_duration_since(t) >= self.limits.min_interval)
    }

    /// Saves an RGB image (`width` x `height`, HWC) with its JSON record, evicting the
    /// oldest entries to stay within the caps. Fails on IO errors and when the entry alone
    /// exceeds the byte cap.
    pub fn save(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        record_json: &[u8],
        now: Instant,
    ) -> Result<Saved, StoreError> {
        if !self.ready(now) {
            return Ok(Saved::RateLimited);
        }
        self.last_save = Some(now);
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        )
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
        let bytes = png.len() as u64 + record_json.len() as u64 + 1;
        if bytes > self.limits.max_bytes {
            return Err(StoreError::TooLarge {
                bytes,
                max_bytes: self.limits.max_bytes,
            });
        }
        let evicted = self.evict(bytes)?;
        let id = self.next_id;
        write_atomic(&entry_path(&self.dir, id, "png"), &[&png])?;
        write_atomic(&entry_path(&self.dir, id, "json"), &[record_json, b"\n"])?;
        fsync_dir(&self.dir)?;
        self.next_id += 1;
        self.entries.push_back(Entry { id, bytes });
        self.bytes += bytes;
        Ok(Saved::Entry { id, evicted })
    }

    /// Removes the oldest entries until one of `incoming` bytes fits both caps.
    fn evict(&mut self, incoming: u64) -> Result<usize, StoreError> {
        let incoming_entries = usize::from(incoming > 0);
        let mut removed = 0;
        while let Some(oldest) = self.entries.front().cloned() {
            let over_count = self.entries.len() + incoming_entries > self.limits.max_entries;
            let over_bytes = self.bytes + incoming > self.limits.max_bytes;
            if !over_count && !over_bytes {
                break;
            }
            // Record first: an image left behind by a crash here is cleaned at open.
            for ext in ["json", "png"] {
                let p = entry_path(&self.dir, oldest.id, ext);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_at(&p)(e)),
                }
            }
            self.entries.pop_front();
            self.bytes -= oldest.bytes;
            removed += 1;
        }
        if removed > 0 {
            if self.entries.is_empty() {
                remember_next_id(&self.dir, self.next_id)?;
            }
            fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// The file keeping the next entry number of an emptied store.
pub const NEXT_ID_FILE: &str = "next-id";

/// The number in `DIR/next-id` (1 when absent or unreadable: entries still number on from
/// the newest one present).
fn read_next_id(dir: &Path) -> u64 {
    let p = dir.join(NEXT_ID_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => t.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %p.display(), "ignoring a `next-id` file that holds no number");
            1
        }),
        Err(_) => 1,
    }
}

/// Records `next` in `DIR/next-id` unless it already holds a larger number.
fn remember_next_id(dir: &Path, next: u64) -> Result<(), StoreError> {
    if read_next_id(dir) >= next {
        return Ok(());
    }
    write_atomic(&dir.join(NEXT_ID_FILE), &[format!("{next}\n").as_bytes()])
}

fn parse_id(stem: &str) -> Option<u64> {
    (stem.len() == 12 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

fn entry_path(dir: &Path, id: u64, ext: &str) -> PathBuf {
    dir.join(format!("{id:012}.{ext}"))
}

/// Write `NAME.tmp`, fsync, rename to `NAME`.
fn write_atomic(path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
        for p in parts {
            f.write_all(p).map_err(io_at(&tmp))?;
        }
        f.sync_all().map_err(io_at(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

/// What `export-uncertain` copied.
#[derive(Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub store: String,
    pub out: String,
    /// Entries now in `out` (written by this export, or identical copies already there).
    pub entries: usize,
    /// Bytes written by this export.
    pub bytes: u64,
    /// Entries whose identical copy was already in `out` (an earlier export).
    pub already_there: usize,
    /// Entries written under a new name because theirs was taken in `out` by other bytes
    /// (an earlier export from another store or box): `store name -> written name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<(String, String)>,
    /// Entries removed from the store after the copy (with `--clear`).
    pub cleared: usize,
}

/// The ids of the complete entries (image and record both there) of the store at `dir`,
/// ascending, read without changing anything (a `run` may be writing into it).
fn complete_ids(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let (mut records, mut images) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let name = e.map_err(io_at(dir))?.file_name();
        let name = name.to_string_lossy();
        match name.split_once('.') {
            Some((stem, "json")) => records.extend(parse_id(stem)),
            Some((stem, "png")) => images.extend(parse_id(stem)),
            _ => {}
        }
    }
    images.sort_unstable();
    records.retain(|id| images.binary_search(id).is_ok());
    records.sort_unstable();
    Ok(records)
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`): `renameat2` with
/// `RENAME_NOREPLACE`, or, where the file system does not support it, a check and a rename
/// (export is the only writer of its destination).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
            })
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths, relative to the working directory.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// Writes `data` to `path` only if `path` does not exist: `NAME.tmp`, fsync, no-replace
/// rename; then reads it back. `Ok(false)`: the name is taken.
fn write_new(path: &Path, data: &[u8]) -> Result<bool, StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(out_at(&tmp))?;
        f.write_all(data).map_err(out_at(&tmp))?;
        f.sync_all().map_err(out_at(&tmp))?;
    }
    match rename_no_replace(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(out_at(&tmp))?;
            return Ok(false);
        }
        Err(e) => return Err(out_at(path)(e)),
    }
    let back = std::fs::read(path).map_err(out_at(path))?;
    if back != data {
        return Err(StoreError::Export {
            path: path.display().to_string(),
            source: std::io::Error::other(format!(
                "the copy reads back different from what was written ({} bytes, expected {}); the destination may be failing",
                back.len(),
                data.len()
            )),
        });
    }
    Ok(true)
}

/// Where one entry went.
enum Placed {
    /// Written under this name (`000000000042` or `000000000042-2`).
    Written(String),
    /// An identical copy was already there.
    Already,
}

/// Puts one entry (`png`, `json`) into `out` under its name `base`, or the first free
/// `base-N`; never over other bytes.
fn place(out: &Path, base: &str, png: &[u8], json: &[u8]) -> Result<Placed, StoreError> {
    for n in 1..=10_000u32 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let (p, j) = (
            out.join(format!("{name}.png")),
            out.join(format!("{name}.json")),
        );
        let (pe, je) = (p.exists(), j.exists());
        if pe && je {
            let same = |path: &Path, want: &[u8]| std::fs::read(path).is_ok_and(|b| b == want);
            if same(&p, png) && same(&j, json) {
                return Ok(Placed::Already);
            }
            continue;
        }
        if pe || je {
            continue;
        }
        // Image first, record last: a record in `out` means its image is there.
        if !write_new(&p, png)? {
            continue;
        }
        if !write_new(&j, json)? {
            // Someone took the record's name meanwhile: ours goes elsewhere, the image
            // written here is ours alone and is removed.
            std::fs::remove_file(&p).map_err(out_at(&p))?;
            continue;
        }
        return Ok(Placed::Written(name));
    }
    Err(StoreError::Export {
        path: out.display().to_string(),
        source: std::io::Error::other(format!("no free name for entry {base}")),
    })
}

/// Copies every complete entry (image + record) of the store at `dir` into `out`, never
/// over another file (see the module doc), fsynced and read back; with `clear` then
/// removes the copied entries from the store. Fails when the store cannot be read, `out`
/// is the store itself, or `out` cannot be written; the store is then left as it was.
pub fn export(dir: &Path, out: &Path, clear: bool) -> Result<ExportReport, StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no uncertain store here (nothing saved yet, or a different --store/--root)",
            ),
        });
    }
    linesight_shared::output::refuse_inputs(out, [("the uncertain store", dir)])
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    // A folder inside the store: `--clear` reported the entries removed while they stayed
    // in the store's folder, outside its caps (second adversarial pass, issue 16).
    linesight_shared::output::refuse_inside(out, "the uncertain store", dir)
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(out_at(out))?;
    let mut report = ExportReport {
        store: dir.display().to_string(),
        out: out.display().to_string(),
        ..Default::default()
    };
    let ids = complete_ids(dir)?;
    for &id in &ids {
        let read = |ext| {
            let from = entry_path(dir, id, ext);
            std::fs::read(&from).map_err(io_at(&from))
        };
        let (png, json) = (read("png")?, read("json")?);
        let base = format!("{id:012}");
        match place(out, &base, &png, &json)? {
            Placed::Already => report.already_there += 1,
            Placed::Written(name) => {
                report.bytes += (png.len() + json.len()) as u64;
                if name != base {
                    tracing::warn!(entry = %base, written = %name, "an earlier export holds other bytes under this name; written under a new name");
                    report.renamed.push((base, name));
                }
            }
        }
        report.entries += 1;
    }
    std::fs::File::open(out)
        .and_then(|f| f.sync_all())
        .map_err(out_at(out))?;
    if clear {
        // Only now, with every copy fsynced and read back: record first, then image.
        for &id in &ids {
            for ext in ["json", "png"] {
                let p = entry_path(dir, id, ext);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_at(&p)(e)),
                }
            }
            report.cleared += 1;
        }
        if let Some(last) = ids.last() {
            remember_next_id(dir, last + 1)?;
        }
        fsync_dir(dir)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_entries: usize) -> StoreLimits {
        StoreLimits {
            max_bytes,
            max_entries,
            min_interval: Duration::ZERO,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn caps_evict_the_oldest_and_a_reopen_sees_the_same() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let rgb = vec![7u8; 4 * 4 * 3];
        let mut s = UncertainStore::open(&dir, limits(1 << 20, 3)).unwrap();
        let now = Instant::now();
        for i in 0..5 {
            let r = s
                .save(&rgb, 4, 4, format!("{{\"i\":{i}}}").as_bytes(), now)
                .unwrap();
            assert!(matches!(r, Saved::Entry { id, .. } if id == i + 1));
        }
        assert_eq!(s.ids().collect::<Vec<_>>(), vec![3, 4, 5]);
        let (n, bytes) = s.usage();
        assert_eq!(n, 3);
        let s2 = UncertainStore::open(&dir, limits(1 << 20, 3)).unwrap();
        assert_eq!(s2.usage(), (3, bytes));
        // A byte cap of a bit more than one entry keeps one.
        let one = bytes / 3;
        let mut s3 = UncertainStore::open(&dir, limits(one + one / 2, 10)).unwrap();
        assert_eq!(s3.ids().collect::<Vec<_>>(), vec![5]);
        s3.save(&rgb, 4, 4, b"{\"i\":5}", now).unwrap();
        assert_eq!(s3.ids().collect::<Vec<_>>(), vec![6]);
        // Evicting entry 5 emptied the store for a moment: `next-id` kept the count.
        assert_eq!(
            names(&dir),
            vec!["000000000006.json", "000000000006.png", NEXT_ID_FILE]
        );
        let big = vec![1u8; 64 * 64 * 3];
        assert!(matches!(
            UncertainStore::open(&dir, limits(10, 10))
                .unwrap()
                .save(&big, 64, 64, b"{}", now),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn rate_limit() {
        let d = tempfile::tempdir().unwrap();
        let mut l = limits(1 << 20, 10);
        l.min_interval = Duration::from_secs(3600);
        let mut s = UncertainStore::open(d.path(), l).unwrap();
        let now = Instant::now();
        let rgb = [0u8; 3];
        assert!(matches!(
            s.save(&rgb, 1, 1, b"{}", now).unwrap(),
            Saved::Entry { .. }
        ));
        assert_eq!(s.save(&rgb, 1, 1, b"{}", now).unwrap(), Saved::RateLimited);
    }

    #[test]
    fn interrupted_writes_are_cleaned_and_export_copies_complete_entries() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let mut s = UncertainStore::open(&dir, limits(1 << 20, 10)).unwrap();
        let rgb = vec![200u8; 2 * 3 * 3];
        s.save(&rgb, 2, 3, b"{\"label\":\"reject\"}", Instant::now())
            .unwrap();
        // A crash after the image's rename, before the record's; and a torn temp file.
        std::fs::write(dir.join("000000000002.png"), b"png").unwrap();
        std::fs::write(dir.join("000000000002.json.tmp"), b"{\"la").unwrap();
        let s = UncertainStore::open(&dir, limits(1 << 20, 10)).unwrap();
        assert_eq!(s.ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(names(&dir), vec!["000000000001.json", "000000000001.png"]);
        let out = d.path().join("usb");
        let r = export(&dir, &out, true).unwrap();
        assert_eq!((r.entries, r.cleared), (1, 1));
        assert_eq!(names(&out), vec!["000000000001.json", "000000000001.png"]);
        let img = image::open(out.join("000000000001.png")).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (2, 3));
        assert_eq!(img.into_raw(), rgb);
        assert_eq!(names(&dir), vec![NEXT_ID_FILE]);
        assert!(export(&d.path().join("nope"), &out, false).is_err());
    }

    #[test]
    fn numbering_goes_on_after_the_store_is_emptied() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let rgb = [9u8; 3];
        let now = Instant::now();
        let mut s = UncertainStore::open(&dir, limits(1 << 20, 10)).unwrap();
        for _ in 0..3 {
            s.save(&rgb, 1, 1, b"{}", now).unwrap();
        }
        drop(s);
        let r = export(&dir, &d.path().join("usb"), true).unwrap();
        assert_eq!(r.cleared, 3);
        let mut s = UncertainStore::open(&dir, limits(1 << 20, 10)).unwrap();
        assert!(matches!(
            s.save(&rgb, 1, 1, b"{}", now).unwrap(),
            Saved::Entry { id: 4, .. }
        ));
        // Eviction that empties the store keeps the count too.
        drop(s);
        let s = UncertainStore::open(&dir, limits(1, 10)).unwrap();
        assert_eq!(s.usage().0, 0);
        drop(s);
        let mut s = UncertainStore::open(&dir, limits(1 << 20, 10)).unwrap();
        assert!(matches!(
            s.save(&rgb, 1, 1, b"{}", now).unwrap(),
            Saved::Entry { id: 5, .. }
        ));
    }

    #[test]
    fn export_never_overwrites_and_never_exports_onto_the_store() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let out = d.path().join("usb");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        // An earlier export (another box) holds entry 1 with other bytes.
        std::fs::write(out.join("000000000001.png"), b"other png").unwrap();
        std::fs::write(out.join("000000000001.json"), b"other json").unwrap();
        std::fs::write(dir.join("000000000001.png"), b"png").unwrap();
        std::fs::write(dir.join("000000000001.json"), b"json").unwrap();
        // A write in progress by a running `run`: not exported, not removed.
        std::fs::write(dir.join("000000000002.png"), b"half").unwrap();
        let r = export(&dir, &out, false).unwrap();
        assert_eq!(
            r.renamed,
            vec![("000000000001".to_string(), "000000000001-2".to_string())]
        );
        assert_eq!(
            std::fs::read(out.join("000000000001.png")).unwrap(),
            b"other png"
        );
        assert_eq!(
            std::fs::read(out.join("000000000001-2.json")).unwrap(),
            b"json"
        );
        assert!(dir.join("000000000002.png").exists());
        // Again: the identical copy is recognised, nothing is written twice.
        let r = export(&dir, &out, true).unwrap();
        assert_eq!((r.entries, r.already_there, r.cleared), (1, 1, 1));
        assert!(r.renamed.is_empty());
        assert_eq!(names(&out).len(), 4);
        // The store itself as the destination is refused and leaves it alone.
        std::fs::write(dir.join("000000000003.png"), b"p").unwrap();
        std::fs::write(dir.join("000000000003.json"), b"j").unwrap();
        let e = export(&dir, &dir.join("."), true).unwrap_err().to_string();
        assert!(e.contains("the uncertain store"), "{e}");
        assert!(dir.join("000000000003.json").exists());
    }
}
