//! How the operator's log lines look: whether they carry terminal colour. The subscriber
//! itself is set up in `main.rs`; nothing here logs.

use std::ffi::OsStr;

/// Whether log lines get ANSI colour: only when the stream they are written to is a
/// terminal, and not when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
/// A pod's log (a pipe to the container runtime) gets none.
pub fn use_colour(stream_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
        // no-color.org: an empty NO_COLOR does not disable colour.
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
