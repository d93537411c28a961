//! Progress bars on a terminal, silence when piped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// True when progress bars should be drawn (stderr is a terminal).
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("DPQ_NO_PROGRESS").is_none()
}

pub fn bar(show: bool, len: u64, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} ({eta})").unwrap().progress_chars("=> "));
    pb.set_message(msg.to_string());
    pb
}

pub fn bytes_bar(show: bool, len: u64, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})").unwrap().progress_chars("=> "));
    pb.set_message(msg.to_string());
    pb
}

pub fn spinner(show: bool, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
