//! Warnings caused by what peers send, rate-limited: a stranger's flood of
//! garbage must not become a flood of log lines (50,000 one-byte messages
//! once wrote 5.2 MB of them). Each kind logs at most [`PER_WINDOW`] lines
//! per [`WINDOW`]; the rest are counted and reported in one "suppressed"
//! line when the window ends. The counting is pure (time is passed in);
//! the broker loop calls [`Warnings::flush`] so a count is reported even
//! when no further warning comes.

use std::time::{Duration, Instant};

/// Lines a kind may log per window.
pub const PER_WINDOW: u32 = 10;

/// The window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The kinds of warning peers can cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A client's message the broker cannot answer.
    Client,
    /// A worker's malformed message.
    Worker,
    /// A refused handshake or a message from a revoked key.
    Auth,
}

/// One kind's window.
#[derive(Default, Debug)]
struct Window {
    started: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

impl Window {
    /// Whether a warning at `now` may be logged; closes a window that ended
    /// first, returning how many it suppressed.
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let ended = self.close_if_over(now);
        let started = *self.started.get_or_insert(now);
        debug_assert!(now >= started);
        if self.shown < PER_WINDOW {
            self.shown += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }

    /// Ends the window if it is over; returns what it suppressed.
    fn close_if_over(&mut self, now: Instant) -> u64 {
        match self.started {
            Some(started) if now >= started + WINDOW => {
                let suppressed = self.suppressed;
                *self = Window::default();
                suppressed
            }
            _ => 0,
        }
    }
}

/// The rate limits of every kind.
#[derive(Default, Debug)]
pub(super) struct Warnings {
    client: Window,
    worker: Window,
    auth: Window,
}

impl Warnings {
    fn window(&mut self, kind: Kind) -> &mut Window {
        match kind {
            Kind::Client => &mut self.client,
            Kind::Worker => &mut self.worker,
            Kind::Auth => &mut self.auth,
        }
    }

    /// Logs `message` unless its kind has logged enough in this window.
    pub fn warn(&mut self, now: Instant, kind: Kind, message: std::fmt::Arguments<'_>) {
        let (show, suppressed) = self.window(kind).admit(now);
        report(kind, suppressed);
        if show {
            tracing::warn!("{message}");
        }
    }

    /// Reports the windows that ended with warnings suppressed.
    pub fn flush(&mut self, now: Instant) {
        for kind in [Kind::Client, Kind::Worker, Kind::Auth] {
            let suppressed = self.window(kind).close_if_over(now);
            report(kind, suppressed);
        }
    }
}

fn report(kind: Kind, suppressed: u64) {
    if suppressed > 0 {
        let who = match kind {
            Kind::Client => "clients' messages",
            Kind::Worker => "workers' messages",
            Kind::Auth => "refused peers",
        };
        tracing::warn!("suppressed {suppressed} similar warnings about {who} in the last {WINDOW:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_logs_its_share_then_counts_and_reports_when_it_ends() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for _ in 0..PER_WINDOW {
            assert_eq!(w.admit(t0), (true, 0));
        }
        for _ in 0..5 {
            assert_eq!(w.admit(t0 + Duration::from_millis(500)), (false, 0));
        }
        // The next window: the count of the last one comes with the first line.
        assert_eq!(w.admit(t0 + WINDOW), (true, 5));
        assert_eq!(w.close_if_over(t0 + WINDOW + Duration::from_millis(999)), 0);
        // A window with nothing suppressed reports nothing.
        assert_eq!(w.close_if_over(t0 + WINDOW * 2), 0);
    }

    #[test]
    fn kinds_are_limited_apart() {
        let t0 = Instant::now();
        let mut warnings = Warnings::default();
        for _ in 0..PER_WINDOW + 3 {
            warnings.warn(t0, Kind::Client, format_args!("garbage"));
        }
        assert_eq!(warnings.client.suppressed, 3);
        assert_eq!(warnings.worker.admit(t0), (true, 0), "workers' warnings have their own share");
        warnings.flush(t0 + WINDOW);
        assert_eq!(warnings.client.suppressed, 0, "reported and reset");
    }
}
