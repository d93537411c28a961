//! Progress bars on a terminal, silence when piped.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// True when progress bars should be drawn (stderr is a terminal).
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("DPQ_NO_PROGRESS").is_none()
}

/// indicatif bars for the library's progress reports.
struct Bars;

struct Bar(ProgressBar);

impl dpq::progress::Progress for Bars {
    fn start(&self, len: u64, bytes: bool, label: &str) -> Box<dyn dpq::progress::Bar> {
        let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = if bytes { "{msg:24} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})" } else { "{msg:24} [{bar:30}] {pos}/{len} ({eta})" };
        pb.set_style(ProgressStyle::with_template(template).unwrap().progress_chars("=> "));
        pb.set_message(label.to_string());
        Box::new(Bar(pb))
    }
}

impl dpq::progress::Bar for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn set_position(&self, pos: u64) {
        self.0.set_position(pos)
    }
    fn finish(&self) {
        self.0.finish_and_clear()
    }
}

/// Bars on a terminal, else silence.
pub fn reporter() -> Arc<dyn dpq::progress::Progress> {
    if wanted() { Arc::new(Bars) } else { dpq::progress::silent() }
}

pub fn spinner(msg: &str) -> ProgressBar {
    if !wanted() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
