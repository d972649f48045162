//! A reader that went away (`linesight-edge classify DIR | head -1`) is not an error: both
//! binaries write their output with fallible writes (never `println!`, which panics on a
//! closed pipe) and end quietly with exit 0 when a write failed because the pipe was
//! closed, as ripgrep does. Rust ignores SIGPIPE, so such a write fails with `EPIPE`.
//!
//! ```
//! use linesight_shared::closed_pipe::is_closed_pipe;
//! let e = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
//! assert!(is_closed_pipe(&e));
//! assert!(!is_closed_pipe(&std::io::Error::other("disk full")));
//! ```

/// True when `err`, or any error in its `source()` chain, is an IO error of kind
/// `BrokenPipe`.
pub fn is_closed_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(err);
    while let Some(cur) = e {
        if cur
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        e = cur.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the report")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn found_anywhere_in_the_chain() {
        let e = Outer(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_closed_pipe(&e));
        let e = Outer(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!is_closed_pipe(&e));
    }
}
