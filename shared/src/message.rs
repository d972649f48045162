//! How an error and its causes are shown to people: one line, each cause once.
//!
//! Both binaries print the error that ends a command with [`error_chain`]. Many errors
//! (ours through thiserror, and std's own wrappers) write their cause into their own
//! message *and* return it from [`std::error::Error::source`]; printing the chain naively
//! (anyhow's `{:#}`) then repeats it: "cannot write `x`: Read-only file system (os error
//! 30): Read-only file system (os error 30)". Here a cause whose text is already in the
//! line is not added again.

use std::error::Error;

/// `err` and each of its causes, joined by `: `, leaving out a cause whose text the line
/// already holds (because an outer message embedded it).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write `{path}`: {source}")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot save the report")]
    struct Wraps(#[source] Embeds);

    #[test]
    fn a_cause_embedded_in_its_wrapper_is_printed_once() {
        let ro = || std::io::Error::from_raw_os_error(30);
        let e = Embeds {
            path: "/mnt/ro/x".into(),
            source: ro(),
        };
        let once = format!("cannot write `/mnt/ro/x`: {}", ro());
        assert_eq!(error_chain(&e), once);
        let w = Wraps(Embeds {
            path: "/mnt/ro/x".into(),
            source: ro(),
        });
        assert_eq!(error_chain(&w), format!("cannot save the report: {once}"));
        // A cause that is not embedded is still shown.
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(ro())), format!("outer: {}", ro()));
    }
}
