//! Progress of a long backup, restore or verify: a bar (indicatif) with
//! bytes, spans done, rate and ETA on a terminal; plain lines at most every
//! `LINE_EVERY` otherwise (logs, CI). Never a steady tick: that would start
//! a thread; the bar redraws as work is reported.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is printed at most.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    spans: u64,
    started: Instant,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    /// `total`: the bytes expected (an estimate is fine: it grows if
    /// passed). `quiet` (JSON output): nothing is printed.
    pub fn new(what: &'static str, total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(what);
            b
        });
        let now = Instant::now();
        Progress {
            what,
            bar,
            total,
            done: 0,
            spans: 0,
            started: now,
            last_line: now,
            quiet,
        }
    }

    /// `bytes` more are done.
    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.done > self.total {
            self.total = self.done;
        }
        if let Some(b) = &self.bar {
            b.set_length(self.total);
            b.set_position(self.done);
        } else {
            self.line(false);
        }
    }

    /// One more span is done.
    pub fn span_done(&mut self) {
        self.spans += 1;
        if let Some(b) = &self.bar {
            b.set_message(format!("{} spans", self.spans));
        } else {
            self.line(false);
        }
    }

    fn line(&mut self, force: bool) {
        if self.quiet || (!force && self.last_line.elapsed() < LINE_EVERY) {
            return;
        }
        self.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 && self.total > self.done {
            format!(", ETA {:.0}s", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        eprintln!(
            "{}: {} of ~{}, {} spans done, {}/s{eta}",
            self.what,
            HumanBytes(self.done),
            HumanBytes(self.total),
            self.spans,
            HumanBytes(rate as u64),
        );
    }

    /// Ends the bar (or prints a last line).
    pub fn finish(mut self) -> Duration {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        } else {
            self.line(true);
        }
        self.started.elapsed()
    }
}
