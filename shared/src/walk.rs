//! Walking the folders a user gives (`classify DIR`, `run --source dir:`, `label --images`,
//! calibration folders): the one implementation both binaries use.
//!
//! What it guarantees, whatever the folder holds:
//! - it ends: a symbolic link back to a folder being walked (`ln -s . d/loop`) is
//!   reported, not followed;
//! - each file is listed once: files and folders are identified by device and inode, so
//!   a second path to the same file (a hard link, a link to a sibling folder) is skipped
//!   and reported;
//! - only regular files are listed: a FIFO, socket or device node whose name looks like an
//!   image is skipped and reported, never opened;
//! - it can be cancelled between two entries (a SIGTERM during a long walk).
//!
//! Inside folders, hidden entries (a name starting with `.`, such as macOS's `._x.jpg`
//! companions or rsync's temporary files) are passed over, and only files whose extension
//! is in the caller's list are taken; a path named directly is taken whatever its name. The
//! order is depth-first with each folder's entries sorted by name.
//!
//! The descent, the per-folder sort and the loop detection are `walkdir`'s (BurntSushi's,
//! already in our lockfile): it follows links and reports a link to an ancestor as an
//! error instead of descending. What walkdir leaves to its callers is here: the device and
//! inode dedupe (walkdir would visit a folder reached by two non-looping paths twice), the
//! file-type check, the hidden-entry and extension filters, cancellation, and the counts.
//!
//! ```
//! use linesight_shared::walk::{walk, WalkOptions};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("b.jpg"), b"x").unwrap();
//! std::fs::write(dir.path().join("a.PNG"), b"x").unwrap();
//! std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
//! std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
//! let w = walk(&[dir.path().to_path_buf()], &WalkOptions::images(&["jpg", "png"])).unwrap();
//! let names: Vec<_> = w.files.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
//! assert_eq!(names, ["a.PNG", "b.jpg"]);
//! assert_eq!(w.skipped.len(), 1); // the loop, reported
//! ```

use crate::regular_file::FileKind;
use std::collections::hash_map::{Entry, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How to walk.
pub struct WalkOptions<'a> {
    /// File extensions taken inside folders (case-insensitive, without the dot).
    pub extensions: &'a [&'a str],
    /// Called between entries; `true` stops the walk with [`Cancelled`].
    pub cancel: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> WalkOptions<'a> {
    /// Image files by extension, not cancellable.
    pub fn images(extensions: &'a [&'a str]) -> Self {
        WalkOptions {
            extensions,
            cancel: None,
        }
    }

    fn matches(&self, path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| self.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }
}

/// Why an entry was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// It is a FIFO, socket, device node or dangling link, not a regular file.
    NotRegular(FileKind),
    /// The same file (device and inode) was already listed under this path.
    Duplicate(PathBuf),
    /// A symbolic link to this folder, which is being walked already.
    Loop(PathBuf),
}

/// An entry passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        match &self.reason {
            SkipReason::NotRegular(kind) => {
                write!(f, "skipped `{p}`: it is {kind}, not a regular file")
            }
            SkipReason::Duplicate(of) => write!(
                f,
                "skipped `{p}`: the same file as `{}`, already listed",
                of.display()
            ),
            SkipReason::Loop(to) => write!(
                f,
                "skipped `{p}`: a link back to `{}`, which is being walked (a loop)",
                to.display()
            ),
        }
    }
}

/// A path that could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("`{path}` does not exist")]
    Missing { path: PathBuf },
    #[error("`{path}` is {kind}, not a regular file or a folder; it was not read")]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("cannot list `{path}`: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl WalkError {
    pub fn path(&self) -> &Path {
        match self {
            WalkError::Missing { path }
            | WalkError::NotRegular { path, .. }
            | WalkError::List { path, .. } => path,
        }
    }
}

/// The walk was cancelled ([`WalkOptions::cancel`]).
#[derive(Debug, thiserror::Error)]
#[error("the folder walk was cancelled")]
pub struct Cancelled;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files, each once, in walk order.
    pub files: Vec<PathBuf>,
    /// Entries passed over, with the reason (the caller says so).
    pub skipped: Vec<Skipped>,
    /// Paths that could not be used or listed (named paths that do not exist, folders
    /// without permission).
    pub errors: Vec<WalkError>,
}

impl Walk {
    /// "2 not regular files, 1 duplicate, 1 loop" (empty when nothing was skipped).
    pub fn skipped_summary(&self) -> String {
        let count =
            |f: fn(&SkipReason) -> bool| self.skipped.iter().filter(|s| f(&s.reason)).count();
        let parts = [
            (
                count(|r| matches!(r, SkipReason::NotRegular(_))),
                "not a regular file",
                "not regular files",
            ),
            (
                count(|r| matches!(r, SkipReason::Duplicate(_))),
                "duplicate",
                "duplicates",
            ),
            (
                count(|r| matches!(r, SkipReason::Loop(_))),
                "symbolic-link loop",
                "symbolic-link loops",
            ),
        ];
        parts
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Walks `paths` (files and folders). Fails only when cancelled; everything else is in
/// the returned [`Walk`].
pub fn walk(paths: &[PathBuf], opts: &WalkOptions) -> Result<Walk, Cancelled> {
    let mut out = Walk::default();
    // (device, inode) -> the path it was first met under; folders and files alike.
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // None the first time `path` (of metadata `md`) is met, else where it was met before.
    let mut met_before = |md: &std::fs::Metadata, path: &Path| -> Option<PathBuf> {
        match seen.entry((md.dev(), md.ino())) {
            Entry::Occupied(first) => Some(first.get().clone()),
            Entry::Vacant(v) => {
                v.insert(path.to_path_buf());
                None
            }
        }
    };
    let cancelled = || opts.cancel.is_some_and(|c| c());
    for root in paths {
        if cancelled() {
            return Err(Cancelled);
        }
        let md = match std::fs::metadata(root) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.errors.push(if root.is_symlink() {
                    WalkError::NotRegular {
                        path: root.clone(),
                        kind: FileKind::BrokenLink,
                    }
                } else {
                    WalkError::Missing { path: root.clone() }
                });
                continue;
            }
            Err(source) => {
                out.errors.push(WalkError::List {
                    path: root.clone(),
                    source,
                });
                continue;
            }
        };
        if md.is_file() {
            match met_before(&md, root) {
                None => out.files.push(root.clone()),
                Some(first) => out.skipped.push(Skipped {
                    path: root.clone(),
                    reason: SkipReason::Duplicate(first),
                }),
            }
            continue;
        }
        if !md.is_dir() {
            out.errors.push(WalkError::NotRegular {
                path: root.clone(),
                kind: FileKind::of(&md.file_type()).unwrap_or(FileKind::Other),
            });
            continue;
        }
        let mut it = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || !e.file_name().as_encoded_bytes().starts_with(b".")
            });
        loop {
            if cancelled() {
                return Err(Cancelled);
            }
            let entry = match it.next() {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    if let Some(ancestor) = e.loop_ancestor() {
                        out.skipped.push(Skipped {
                            path,
                            reason: SkipReason::Loop(ancestor.to_path_buf()),
                        });
                    } else if path.is_symlink() && !path.exists() {
                        if opts.matches(&path) {
                            out.skipped.push(Skipped {
                                path,
                                reason: SkipReason::NotRegular(FileKind::BrokenLink),
                            });
                        }
                    } else {
                        let source = e
                            .into_io_error()
                            .unwrap_or_else(|| std::io::Error::other("walk error"));
                        out.errors.push(WalkError::List { path, source });
                    }
                    continue;
                }
            };
            let ft = entry.file_type();
            let is_dir = ft.is_dir();
            if !is_dir && !opts.matches(entry.path()) {
                continue;
            }
            if !is_dir && !ft.is_file() {
                out.skipped.push(Skipped {
                    path: entry.into_path(),
                    reason: SkipReason::NotRegular(FileKind::of(&ft).unwrap_or(FileKind::Other)),
                });
                continue;
            }
            // With `follow_links`, this is the target's metadata.
            let md = match entry.metadata() {
                Ok(md) => md,
                Err(e) => {
                    let source = e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("stat failed"));
                    out.errors.push(WalkError::List {
                        path: entry.into_path(),
                        source,
                    });
                    continue;
                }
            };
            if let Some(first) = met_before(&md, entry.path()) {
                if is_dir {
                    it.skip_current_dir();
                }
                out.skipped.push(Skipped {
                    path: entry.into_path(),
                    reason: SkipReason::Duplicate(first),
                });
                continue;
            }
            if !is_dir {
                out.files.push(entry.into_path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regular_file::tests::mkfifo;
    use std::os::unix::fs::symlink;

    const EXT: &[&str] = &["jpg", "png"];

    fn names(root: &Path, files: &[PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn symlink_loops_end_and_every_file_is_listed_once() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("c")).unwrap();
        std::fs::write(r.join("top.jpg"), b"x").unwrap();
        std::fs::write(r.join("a/b/deep.png"), b"x").unwrap();
        std::fs::write(r.join("c/side.jpg"), b"x").unwrap();
        // The reported reproduction, plus loops further down and a link to a sibling.
        symlink(".", r.join("l1")).unwrap();
        symlink(".", r.join("l2")).unwrap();
        symlink("../..", r.join("a/b/up")).unwrap();
        symlink("../c", r.join("a/side")).unwrap();
        std::fs::hard_link(r.join("top.jpg"), r.join("c/hard.jpg")).unwrap();
        symlink("top.jpg", r.join("zz.jpg")).unwrap();
        let w = walk(&[r.to_path_buf()], &WalkOptions::images(EXT)).unwrap();
        // `c` is reached first as `a/side`; the hard link there comes before `top.jpg`.
        assert_eq!(
            names(r, &w.files),
            ["a/b/deep.png", "a/side/hard.jpg", "a/side/side.jpg"]
        );
        let loops = w
            .skipped
            .iter()
            .filter(|s| matches!(s.reason, SkipReason::Loop(_)))
            .count();
        assert_eq!(loops, 3, "{:?}", w.skipped);
        let dups: Vec<_> = w
            .skipped
            .iter()
            .filter(|s| matches!(s.reason, SkipReason::Duplicate(_)))
            .map(|s| names(r, std::slice::from_ref(&s.path))[0].clone())
            .collect();
        assert_eq!(dups, ["c", "top.jpg", "zz.jpg"]);
        assert!(w.errors.is_empty(), "{:?}", w.errors);
        assert!(
            w.skipped_summary().contains("3 symbolic-link loops"),
            "{}",
            w.skipped_summary()
        );
    }

    #[test]
    fn fifos_sockets_and_dangling_links_are_skipped_and_said() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::write(r.join("ok.jpg"), b"x").unwrap();
        mkfifo(&r.join("x.jpg"));
        mkfifo(&r.join("y.txt")); // not an image name: not our business
        let _sock = std::os::unix::net::UnixListener::bind(r.join("s.png")).unwrap();
        symlink(r.join("missing.jpg"), r.join("dangling.jpg")).unwrap();
        symlink("/dev/zero", r.join("dev.jpg")).unwrap();
        let w = walk(&[r.to_path_buf()], &WalkOptions::images(EXT)).unwrap();
        assert_eq!(names(r, &w.files), ["ok.jpg"]);
        let mut kinds: Vec<(String, FileKind)> = w
            .skipped
            .iter()
            .map(|s| match s.reason {
                SkipReason::NotRegular(k) => {
                    (names(r, std::slice::from_ref(&s.path))[0].clone(), k)
                }
                ref other => panic!("{other:?}"),
            })
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            [
                ("dangling.jpg".into(), FileKind::BrokenLink),
                ("dev.jpg".into(), FileKind::CharDevice),
                ("s.png".into(), FileKind::Socket),
                ("x.jpg".into(), FileKind::Fifo),
            ]
        );
        assert_eq!(w.skipped_summary(), "4 not regular files");
        assert!(w.skipped[0].to_string().contains("not a regular file"));
    }

    #[test]
    fn named_paths_hidden_entries_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join(".hidden")).unwrap();
        std::fs::write(r.join(".hidden/in.jpg"), b"x").unwrap();
        std::fs::write(r.join("._mac.jpg"), b"x").unwrap();
        std::fs::write(r.join("a.jpg"), b"x").unwrap();
        std::fs::write(r.join("named.bin"), b"x").unwrap();
        mkfifo(&r.join("pipe.jpg"));
        let paths = vec![
            r.join("named.bin"),
            r.to_path_buf(),
            r.join("a.jpg"),
            r.join("nope.jpg"),
            r.join("pipe.jpg"),
        ];
        let w = walk(&paths, &WalkOptions::images(EXT)).unwrap();
        // Named: taken whatever the extension; the folder's own a.jpg once.
        assert_eq!(names(r, &w.files), ["named.bin", "a.jpg"]);
        assert_eq!(w.errors.len(), 2);
        assert!(matches!(w.errors[0], WalkError::Missing { .. }));
        assert!(matches!(
            w.errors[1],
            WalkError::NotRegular {
                kind: FileKind::Fifo,
                ..
            }
        ));
        assert!(w.errors[1].to_string().contains("FIFO"));
    }

    #[test]
    fn a_walk_can_be_cancelled() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(d.path().join(format!("{i}.jpg")), b"x").unwrap();
        }
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let cancel = || calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 3;
        let opts = WalkOptions {
            extensions: EXT,
            cancel: Some(&cancel),
        };
        assert!(walk(&[d.path().to_path_buf()], &opts).is_err());
    }
}
