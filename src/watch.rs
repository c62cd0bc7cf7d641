//! `powerhose-broker --status --watch`: the status table redrawn in place
//! every interval on a terminal (ANSI escapes on the alternate screen, put
//! back on exit), or one report after another on a pipe or with `--json`.
//! A broker that stops answering shows "no answer" and is asked again at
//! the next tick; each question waits a bounded time.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::auth::CurveClient;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::status::BrokerStatus;
use crate::sys::term;
use crate::wakeup::{self, Wakeup};

/// What to watch, and how often.
pub struct WatchOptions {
    /// The broker's client endpoint.
    pub frontend: String,
    /// Keys for a broker started with `--curve-secret`.
    pub curve: Option<CurveClient>,
    /// Time between reports.
    pub interval: Duration,
    /// The longest wait for one answer (at most the interval, at least 1 s:
    /// Ctrl-C is seen between questions).
    pub timeout: Duration,
    /// JSON lines instead of the table.
    pub json: bool,
}

/// Watches until `stop` (SIGINT, SIGTERM), `q` on a terminal, or the end of
/// stdout (a closed pipe).
pub fn watch(options: &WatchOptions, stop: &Wakeup) -> Result<()> {
    let mut asker = Asker { options, client: None };
    let on_screen = !options.json && std::io::stdout().is_terminal();
    let mut screen = if on_screen { Some(Screen::enter()?) } else { None };
    let mut last: Option<(BrokerStatus, Instant)> = None;
    loop {
        let tick = Instant::now();
        let answer = asker.ask();
        let written = match &mut screen {
            Some(screen) => {
                if let Ok(status) = &answer {
                    last = Some((status.clone(), Instant::now()));
                }
                let (rows, cols) = term::size(libc::STDOUT_FILENO).unwrap_or((24, 80));
                screen.draw(&frame(&page(options, &answer, last.as_ref()), rows, cols))
            }
            None => report(options, &answer),
        };
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            written => written.map_err(Error::io("writing the status"))?,
        }
        if wait(stop, screen.as_mut(), tick + options.interval)? {
            return Ok(());
        }
    }
}

/// Asks the broker, keeping the client while it answers: a new one after a
/// failure, so that a broker restarted on the endpoint is found again.
struct Asker<'o> {
    options: &'o WatchOptions,
    client: Option<Client>,
}

impl Asker<'_> {
    fn ask(&mut self) -> Result<BrokerStatus> {
        let o = self.options;
        let client = match self.client.take() {
            Some(client) => client,
            None => Client::connect_with(&o.frontend, o.curve.as_ref())?,
        };
        let wait = o.timeout.min(o.interval.max(Duration::from_secs(1)));
        let status = client.status(wait)?;
        self.client = Some(client);
        Ok(status)
    }
}

/// Waits until `until`; true when asked to quit (a stop, or `q`).
fn wait(stop: &Wakeup, screen: Option<&mut Screen>, until: Instant) -> Result<bool> {
    let keys = screen.and_then(|s| s.keys.as_ref());
    // One look at least, even when the question took the whole interval:
    // a Ctrl-C that came meanwhile is seen now.
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut items = vec![stop.poll_item()];
        items.extend(keys.map(|k| zmq::PollItem::from_fd(k.fd(), zmq::POLLIN)));
        wakeup::poll(&mut items, left.as_millis() as i64)?;
        if items[0].is_readable() {
            return Ok(true);
        }
        if let Some(k) = keys.filter(|_| items[1].is_readable()) {
            let mut buf = [0u8; 64];
            match k.read(&mut buf) {
                Ok(n) if buf[..n].iter().any(|b| b.eq_ignore_ascii_case(&b'q')) => return Ok(true),
                // Input closed: only signals can stop us now; sleep out the tick.
                Ok(0) => std::thread::sleep(until.saturating_duration_since(Instant::now())),
                _ => {}
            }
        }
        if Instant::now() >= until {
            return Ok(false);
        }
    }
}

/// One report on a pipe: the table then a blank line, or a JSON line
/// (`{"frontend", "status"}` or `{"frontend", "error"}`).
fn report(options: &WatchOptions, answer: &Result<BrokerStatus>) -> std::io::Result<()> {
    let text = match (options.json, answer) {
        (true, Ok(status)) => serde_json::json!({ "frontend": options.frontend, "status": status }).to_string() + "\n",
        (true, Err(e)) => {
            serde_json::json!({ "frontend": options.frontend, "error": e.to_string() }).to_string() + "\n"
        }
        (false, Ok(status)) => crate::health::format_status(status) + "\n",
        (false, Err(e)) => format!("no answer from {}: {e}\n\n", options.frontend),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// What the screen shows: a title line, then the table, or "no answer"
/// above the last table seen.
fn page(options: &WatchOptions, answer: &Result<BrokerStatus>, last: Option<&(BrokerStatus, Instant)>) -> String {
    let every = options.interval.as_secs_f64();
    let mut text = format!("{} every {every} s; q or Ctrl-C quits\n\n", options.frontend);
    match (answer, last) {
        (Ok(status), _) => text += &crate::health::format_status(status),
        (Err(e), last) => {
            text += &format!("no answer: {e}\n");
            if let Some((status, at)) = last {
                text += &format!("\nlast answer {} s ago:\n", at.elapsed().as_secs());
                text += &crate::health::format_status(status);
            }
        }
    }
    text
}

/// `text` as a screen of `rows` by `cols`, drawn over the previous one from
/// the top left: each line cut to the width and cleared to its end, lines
/// past the height left out (they would scroll the screen), and the rest of
/// the screen cleared. No newline after the last row, which would scroll.
fn frame(text: &str, rows: usize, cols: usize) -> String {
    let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    let more = lines.len().saturating_sub(rows);
    let shown = if more > 0 { rows.saturating_sub(1) } else { lines.len() };
    let mut out = String::from("\x1b[H");
    for (i, line) in lines[..shown].iter().enumerate() {
        if i > 0 {
            out += "\n";
        }
        out.extend(line.chars().take(cols));
        out += "\x1b[K";
    }
    if more > 0 {
        let note = format!("… {} more lines: a taller terminal shows them", more + 1);
        out += &format!("\n{}\x1b[K", note.chars().take(cols).collect::<String>());
    }
    out + "\x1b[J"
}

/// The alternate screen, cursor hidden, keys read one at a time; the
/// terminal as it was when dropped (also on an error's or a panic's way out).
struct Screen {
    keys: Option<term::KeysMode>,
}

impl Screen {
    fn enter() -> Result<Screen> {
        // No keys without a terminal on stdin: Ctrl-C still quits.
        let keys = term::KeysMode::enter(libc::STDIN_FILENO).ok();
        let screen = Screen { keys };
        screen.draw("\x1b[?1049h\x1b[?25l").map_err(Error::io("setting up the terminal"))?;
        Ok(screen)
    }

    fn draw(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.draw("\x1b[?25h\x1b[?1049l");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_fits_the_screen_and_clears_what_was_there() {
        assert_eq!(frame("ab\ncd\n", 5, 10), "\x1b[Hab\x1b[K\ncd\x1b[K\x1b[J");
        // Cut to the width.
        assert_eq!(frame("abcdef", 5, 3), "\x1b[Habc\x1b[K\x1b[J");
        // Too tall: the last row says what is left out.
        let text = frame("1\n2\n3\n4\n5", 3, 80);
        assert!(text.starts_with("\x1b[H1\x1b[K\n2\x1b[K\n… 3 more lines"), "{text:?}");
        assert_eq!(text.matches('\n').count(), 2, "3 rows, no newline after the last");
    }

    #[test]
    fn no_answer_keeps_the_last_table_below() {
        let options = WatchOptions {
            frontend: "unix:///x".into(),
            curve: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            json: false,
        };
        let status = BrokerStatus { pid: 7, ..Default::default() };
        let ok = page(&options, &Ok(status.clone()), None);
        assert!(ok.starts_with("unix:///x every 1 s; q or Ctrl-C quits\n\nbroker pid 7"), "{ok}");
        let gone = page(&options, &Err(Error::Timeout(Duration::from_secs(1))), Some(&(status, Instant::now())));
        assert!(gone.contains("no answer: ") && gone.contains("last answer 0 s ago:\nbroker pid 7"), "{gone}");
    }
}
