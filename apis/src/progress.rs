//! Progress bars on long work (testing a split, evaluating a folder).

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `len` steps, labelled `what`.
pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// [`progress_bar`] where `show` (rank 0 of a distributed run), a hidden bar elsewhere.
pub fn progress_bar_if(show: bool, len: usize, what: &str) -> ProgressBar {
    if show {
        progress_bar(len, what)
    } else {
        ProgressBar::hidden()
    }
}
