//! Turning the paths a user gives into a sorted list of image files.

use std::path::{Path, PathBuf};

/// File extensions treated as images when walking a folder (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Files named directly are taken as they are (so a corrupt file is reported, not
/// skipped); folders are walked recursively for image extensions, in sorted order.
/// Paths that cannot be listed come back with their error.
pub fn image_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk_dir(p, &mut files, &mut errors);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            errors.push((p.clone(), format!("`{}` does not exist", p.display())));
        }
    }
    (files, errors)
}

fn walk_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((
                dir.to_path_buf(),
                format!("cannot list folder `{}`: {e}", dir.display()),
            ));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for c in children {
        if c.is_dir() {
            walk_dir(&c, files, errors);
        } else if is_image(&c) {
            files.push(c);
        }
    }
}
