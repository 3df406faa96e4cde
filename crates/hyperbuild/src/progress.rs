//! Transfer progress on the terminal: a bar per blob with totals and speed when stderr is a
//! terminal, one plain line per finished blob otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use image_transfer::{Progress, Task};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use oci_core::units::human_bytes as human;

/// How progress is shown.
pub enum Display {
    /// Bars (terminal).
    Bars(MultiProgress),
    /// Plain lines on stderr.
    Plain,
    /// Nothing.
    Quiet,
}

/// Chooses the display from `--quiet` and whether stderr is a terminal.
pub fn display(quiet: bool) -> Display {
    if quiet {
        Display::Quiet
    } else if std::io::stderr().is_terminal() {
        Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    } else {
        Display::Plain
    }
}

struct BarTask(ProgressBar);

impl Task for BarTask {
    fn advance(&self, n: u64) {
        self.0.inc(n)
    }
    fn reset(&self, pos: u64) {
        self.0.set_position(pos)
    }
    fn done(&self, note: &str) {
        self.0.finish_with_message(note.to_string())
    }
    fn fail(&self, message: &str) {
        self.0.abandon_with_message(format!("failed: {message}"))
    }
}

struct PlainTask {
    label: String,
    total: u64,
    started: Instant,
    moved: std::sync::atomic::AtomicU64,
}

impl Task for PlainTask {
    fn advance(&self, n: u64) {
        self.moved
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn reset(&self, pos: u64) {
        self.moved.store(pos, std::sync::atomic::Ordering::Relaxed);
    }
    fn done(&self, note: &str) {
        let moved = self.moved.load(std::sync::atomic::Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        if moved > 0 {
            eprintln!(
                "{}: {note} ({} in {secs:.1}s, {}/s)",
                self.label,
                human(moved),
                human((moved as f64 / secs) as u64)
            );
        } else {
            eprintln!("{}: {note} ({})", self.label, human(self.total));
        }
    }
    fn fail(&self, message: &str) {
        eprintln!("{}: failed: {message}", self.label);
    }
}

struct QuietTask;

impl Task for QuietTask {
    fn advance(&self, _: u64) {}
    fn reset(&self, _: u64) {}
    fn done(&self, _: &str) {}
    fn fail(&self, _: &str) {}
}

impl Progress for Display {
    fn begin(&self, label: &str, total: u64) -> Arc<dyn Task> {
        match self {
            Display::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(label.to_string());
                Arc::new(BarTask(bar))
            }
            Display::Plain => Arc::new(PlainTask {
                label: label.to_string(),
                total,
                started: Instant::now(),
                moved: Default::default(),
            }),
            Display::Quiet => Arc::new(QuietTask),
        }
    }

    fn message(&self, line: &str) {
        match self {
            Display::Bars(multi) => {
                let _ = multi.println(line);
            }
            Display::Plain => eprintln!("{line}"),
            Display::Quiet => {}
        }
    }
}
