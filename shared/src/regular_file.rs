//! Opening the files a user points us at (images, bundles, key files) without trusting
//! what they are: only a regular file is ever opened for reading, a FIFO or a device node
//! is refused before it is opened (opening a FIFO blocks until a writer comes; reading a
//! device never ends), and a read is bounded before it starts.
//!
//! The type is checked twice: with `stat` before the open, so a FIFO or a device is never
//! opened, and with `fstat` on the opened descriptor, so a file swapped for a FIFO in
//! between is caught too; the open itself is non-blocking (`O_NONBLOCK`, which changes
//! nothing for a regular file), so even that race cannot hang the process.
//!
//! ```
//! use linesight_shared::regular_file;
//! let dir = tempfile::tempdir().unwrap();
//! let p = dir.path().join("a.txt");
//! std::fs::write(&p, b"hello").unwrap();
//! assert_eq!(regular_file::read(&p, 1 << 10, "a test file").unwrap(), b"hello");
//! let e = regular_file::read(&p, 3, "a test file").unwrap_err();
//! assert!(e.to_string().contains("5 bytes"), "{e}");
//! ```

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Folder,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    /// A symbolic link whose target does not exist.
    BrokenLink,
    Other,
}

impl FileKind {
    /// None for a regular file.
    pub fn of(ft: &FileType) -> Option<FileKind> {
        if ft.is_file() {
            return None;
        }
        Some(if ft.is_dir() {
            FileKind::Folder
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_symlink() {
            FileKind::BrokenLink
        } else {
            FileKind::Other
        })
    }

    /// How messages name it ("a FIFO (named pipe)").
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Folder => "a folder",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::BlockDevice => "a block device",
            FileKind::CharDevice => "a character device",
            FileKind::BrokenLink => "a symbolic link to nothing",
            FileKind::Other => "not a regular file",
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` is {kind}, not a regular file; it was not read")]
    NotRegular { path: String, kind: FileKind },
    #[error("`{path}` is {size} bytes, more than the {limit} bytes allowed for {what}")]
    TooLarge {
        path: String,
        size: u64,
        limit: u64,
        what: &'static str,
    },
}

impl OpenError {
    /// The underlying IO error, if that is what it was (e.g. to tell "not found" apart).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            OpenError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Opens `path` for reading if, and only if, it is a regular file (symbolic links are
/// followed); returns the file and its metadata. Never blocks on a FIFO and never opens a
/// device. Fails on anything else, naming the path and what it is.
pub fn open(path: &Path) -> Result<(File, Metadata), OpenError> {
    let shown = || path.display().to_string();
    let io = |source| OpenError::Io {
        path: shown(),
        source,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        // A dangling symbolic link: say so rather than "not found" for a name that is there.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_symlink() => {
            return Err(OpenError::NotRegular {
                path: shown(),
                kind: FileKind::BrokenLink,
            })
        }
        Err(e) => return Err(io(e)),
    };
    if let Some(kind) = FileKind::of(&md.file_type()) {
        return Err(OpenError::NotRegular {
            path: shown(),
            kind,
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    // The path may have been replaced between the stat and the open.
    let md = file.metadata().map_err(io)?;
    if let Some(kind) = FileKind::of(&md.file_type()) {
        return Err(OpenError::NotRegular {
            path: shown(),
            kind,
        });
    }
    Ok((file, md))
}

/// Reads a whole regular file of at most `max_bytes` (checked before reading; `what`
/// names the kind of file in the error). Fails as [`open`] does, or when it is larger.
pub fn read(path: &Path, max_bytes: u64, what: &'static str) -> Result<Vec<u8>, OpenError> {
    let (file, md) = open(path)?;
    if md.len() > max_bytes {
        return Err(OpenError::TooLarge {
            path: path.display().to_string(),
            size: md.len(),
            limit: max_bytes,
            what,
        });
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    // `take`: a file that grows while it is read still stops at the bound.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| OpenError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(OpenError::TooLarge {
            path: path.display().to_string(),
            size: bytes.len() as u64,
            limit: max_bytes,
            what,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Makes a FIFO at `p` (the unit tests of the modules that must never open one).
    pub(crate) fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.jpg");
        mkfifo(&fifo);
        let t = Instant::now();
        let e = read(&fifo, 100, "an image").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                e,
                OpenError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("FIFO"), "{e}");
        // Through a symbolic link too.
        let link = dir.path().join("y.jpg");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(matches!(
            open(&link).unwrap_err(),
            OpenError::NotRegular {
                kind: FileKind::Fifo,
                ..
            }
        ));
    }

    #[test]
    fn devices_folders_and_dangling_links_are_refused() {
        let e = open(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(
            e,
            OpenError::NotRegular {
                kind: FileKind::CharDevice,
                ..
            }
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            open(dir.path()).unwrap_err(),
            OpenError::NotRegular {
                kind: FileKind::Folder,
                ..
            }
        ));
        let link = dir.path().join("gone.jpg");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &link).unwrap();
        let e = open(&link).unwrap_err();
        assert!(
            matches!(
                e,
                OpenError::NotRegular {
                    kind: FileKind::BrokenLink,
                    ..
                }
            ),
            "{e}"
        );
        let e = open(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    }

    #[test]
    fn the_size_bound_is_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let f = File::create(&p).unwrap();
        // Sparse: 1 TiB on paper, nothing on disk; a read of it would never finish.
        f.set_len(1 << 40).unwrap();
        let t = Instant::now();
        let e = read(&p, 1 << 20, "a key file").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("1099511627776 bytes"), "{e}");
        assert!(e.to_string().contains("a key file"), "{e}");
    }
}
