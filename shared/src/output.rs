//! Output paths that must not destroy what a command reads.
//!
//! Every command that writes a file checks, before it starts work, that none of its
//! output files is one of its input files: the same file by device and inode, so a
//! symlink, a hard link or a `../` path to an input is caught as well as the same name.
//! (`refine --out labels.jsonl` once replaced the MLLM answer log it was reading;
//! `inspect --extract-onnx model.lsb` replaced the bundle.) A folder input counts too: an
//! output may not be the folder itself.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write `{out}`: it is {what} `{input}` that this command reads, and writing would destroy it; choose another output path")]
    IsInput {
        out: String,
        what: String,
        input: String,
    },
    #[error("refusing to write into `{out}`: it is inside {what} `{input}` that this command reads and empties, so what it writes would be left in there; choose a folder outside it")]
    Inside {
        out: String,
        what: String,
        input: String,
    },
}

/// The identity of an existing file or folder (device and inode), following symlinks.
#[cfg(unix)]
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(p: &Path) -> Option<std::path::PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Fails when `out` is one of `inputs` (each given with what it is, e.g. `the answer
/// log`). An output that does not exist yet is no input; an input that does not exist is
/// skipped (the command reports it when it reads it).
pub fn refuse_inputs<'a>(
    out: &Path,
    inputs: impl IntoIterator<Item = (&'a str, &'a Path)>,
) -> Result<(), OutputError> {
    let Some(out_id) = identity(out) else {
        return Ok(());
    };
    for (what, input) in inputs {
        if identity(input).as_ref() == Some(&out_id) {
            return Err(OutputError::IsInput {
                out: out.display().to_string(),
                what: what.to_string(),
                input: input.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Fails when the folder `out` (existing or not) would lie inside the folder `dir` (or be
/// it), by any path: the deepest part of `out` that exists is resolved (symlinks, `..`)
/// and compared with `dir` resolved.
pub fn refuse_inside(out: &Path, what: &str, dir: &Path) -> Result<(), OutputError> {
    let Ok(dir_real) = std::fs::canonicalize(dir) else {
        return Ok(());
    };
    let mut existing = out;
    let mut rest = Vec::new();
    let real = loop {
        if let Ok(r) = std::fs::canonicalize(existing) {
            break Some(r);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => break None,
        }
    };
    let Some(mut real) = real else {
        return Ok(());
    };
    real.extend(rest.iter().rev());
    if real.starts_with(&dir_real) {
        return Err(OutputError::Inside {
            out: out.display().to_string(),
            what: what.to_string(),
            input: dir.display().to_string(),
        });
    }
    Ok(())
}

/// [`refuse_inputs`] for each of `outputs`.
pub fn refuse_each(outputs: &[&Path], inputs: &[(&str, &Path)]) -> Result<(), OutputError> {
    for out in outputs {
        refuse_inputs(out, inputs.iter().copied())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_refused_by_any_name_and_others_pass() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("labels.jsonl");
        std::fs::write(&log, "{}\n").unwrap();
        let other = d.path().join("refined.json");
        let inputs = [("the answer log", log.as_path())];
        assert!(refuse_inputs(&other, inputs).is_ok(), "absent output");
        std::fs::write(&other, "x").unwrap();
        assert!(refuse_inputs(&other, inputs).is_ok(), "another file");
        let e = refuse_inputs(&log, inputs).unwrap_err().to_string();
        assert!(
            e.contains("the answer log") && e.contains("labels.jsonl"),
            "{e}"
        );
        let dotted = d.path().join(".").join("labels.jsonl");
        assert!(refuse_inputs(&dotted, inputs).is_err());
        #[cfg(unix)]
        {
            let link = d.path().join("link.jsonl");
            std::os::unix::fs::symlink(&log, &link).unwrap();
            assert!(refuse_inputs(&link, inputs).is_err(), "symlink");
            let hard = d.path().join("hard.jsonl");
            std::fs::hard_link(&log, &hard).unwrap();
            assert!(refuse_inputs(&hard, inputs).is_err(), "hard link");
        }
        assert!(refuse_inputs(d.path(), [("the images folder", d.path())]).is_err());
        assert!(refuse_inputs(&other, [("missing", Path::new("/nope/x"))]).is_ok());
    }

    #[test]
    fn a_folder_inside_another_is_refused_by_any_path() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir_all(store.join("old")).unwrap();
        let inside = |p: &Path| refuse_inside(p, "the store", &store).is_err();
        assert!(inside(&store));
        assert!(inside(&store.join("old")));
        assert!(inside(&store.join("new/deeper")));
        assert!(inside(&d.path().join("store/old/../../store/new")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&store, d.path().join("link")).unwrap();
            assert!(inside(&d.path().join("link/new")));
        }
        assert!(!inside(&d.path().join("usb")));
        assert!(!inside(&d.path().join("store-copy")));
        assert!(!inside(d.path()));
    }
}
