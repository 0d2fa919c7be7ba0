//! Log lines written by hand, for the one line that is written per request (the access log):
//! the same bytes tracing-subscriber's `json()` (flattened) and default text formats write, at a
//! tenth of the cost, into a per-thread buffer reused from line to line and handed to stderr in
//! one `write_all` under its lock, as tracing-subscriber does, so lines never interleave.
//!
//! Owns the line's framing (timestamp, level, target), escaping and the write. Knows nothing of
//! requests; must never be handed a secret (the caller chooses the fields).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// As a `tracing` event, through whatever subscriber is installed (a library without
    /// [`crate::proxy::access_log::init`], or the coloured text format at a terminal).
    Tracing,
    /// By hand: one JSON object, as tracing-subscriber's `json().flatten_event(true)`.
    Json,
    /// By hand: tracing-subscriber's default text format without colours.
    Text,
    /// Not at all: the filter (`log.level`, `RUST_LOG`) turns the target off.
    Off,
}

/// A field's name as each format writes it before the value, built at compile time by
/// [`log_key!`](crate::log_key) so that writing it is one copy.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// `,"name":`
    pub json: &'static str,
    /// ` name=` (the space is left out before a line's first field).
    pub text: &'static str,
}

/// The [`Key`] for a field name (a string literal of plain ASCII, which is not escaped).
#[macro_export]
macro_rules! log_key {
    ($name:literal) => {
        $crate::log_line::Key {
            json: concat!(",\"", $name, "\":"),
            text: concat!(" ", $name, "="),
        }
    };
}

/// A line's fields, appended in call order after its timestamp and level.
pub struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    json: bool,
    first: bool,
}

impl Fields<'_> {
    /// A string field: a JSON string; in text, quoted and escaped as `{:?}` does.
    pub fn str(&mut self, key: Key, value: &[u8]) {
        self.key(key);
        if self.json {
            json_str(self.buf, value);
        } else {
            debug_str(self.buf, value);
        }
    }

    /// A field recorded with `%` (Display): a JSON string; in text, bare (quoted and escaped
    /// only when it holds a byte a reader could mistake for framing).
    pub fn display(&mut self, key: Key, value: &[u8]) {
        self.key(key);
        if self.json {
            json_str(self.buf, value);
        } else if all_plain(value) && !value.contains(&b' ') {
            self.buf.extend_from_slice(value);
        } else {
            debug_str(self.buf, value);
        }
    }

    /// A socket address, as its `Display` writes it, recorded with `%`.
    pub fn addr(&mut self, key: Key, addr: &SocketAddr) {
        self.key(key);
        if self.json {
            self.buf.push(b'"');
        }
        match addr {
            SocketAddr::V4(a) => {
                let mut n = itoa::Buffer::new();
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    self.buf.extend_from_slice(n.format(octet).as_bytes());
                }
                self.buf.push(b':');
                self.buf.extend_from_slice(n.format(a.port()).as_bytes());
            }
            // Rare behind the listeners bentogate binds; the formatter's cost is acceptable.
            SocketAddr::V6(a) => {
                let _ = write!(self.buf, "{a}");
            }
        }
        if self.json {
            self.buf.push(b'"');
        }
    }

    /// An unsigned number.
    pub fn u64(&mut self, key: Key, value: u64) {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A boolean.
    pub fn bool(&mut self, key: Key, value: bool) {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn key(&mut self, key: Key) {
        let written = match (self.json, self.first) {
            (true, _) => key.json,
            (false, false) => key.text,
            (false, true) => key.text.get(1..).unwrap_or_default(),
        };
        self.buf.extend_from_slice(written.as_bytes());
        self.first = false;
    }
}

/// The current second's timestamp text, formatted once a second.
struct Stamp {
    /// The Unix second `text` was formatted for.
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS.` for `second`.
    text: [u8; 20],
}

impl Stamp {
    const NONE: Stamp = Stamp {
        second: u64::MAX,
        text: [0; 20],
    };

    /// Appends `since_epoch` as tracing-subscriber's timer writes it:
    /// `2026-12-03T16:42:30.000007Z`, UTC, microseconds.
    fn append(&mut self, buf: &mut Vec<u8>, since_epoch: Duration) {
        let second = since_epoch.as_secs();
        if second != self.second {
            self.second = second;
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
            let _ = write!(&mut self.text[..], "{whole}");
            self.text[19] = b'.';
        }
        buf.extend_from_slice(&self.text);
        let mut micros = since_epoch.subsec_micros();
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
    }
}

/// The per-thread line buffer and timestamp.
struct Scratch {
    buf: Vec<u8>,
    stamp: Stamp,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { buf: Vec::new(), stamp: Stamp::NONE })
    };
}

/// A buffer that grew past this (a long path) is given back rather than kept for the thread.
const KEEP: usize = 16 * 1024;

/// Writes one INFO line for `target` to stderr: `fields` appends the fields. `style` is
/// [`Style::Json`] or [`Style::Text`]; any other writes nothing.
pub fn write(style: Style, target: &str, fields: impl FnOnce(&mut Fields<'_>)) {
    if !matches!(style, Style::Json | Style::Text) {
        return;
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let emit = |scratch: &mut Scratch| {
        scratch.buf.clear();
        format(
            &mut scratch.buf,
            &mut scratch.stamp,
            since_epoch,
            style,
            target,
            fields,
        );
        // One write of the whole line under stderr's lock, as the subscriber writes its own.
        let _ = std::io::stderr().lock().write_all(&scratch.buf);
        if scratch.buf.capacity() > KEEP {
            scratch.buf = Vec::new();
        }
    };
    // Re-entered only if a field's formatting logs (none does): a fresh buffer then.
    let _ = SCRATCH.try_with(|s| match s.try_borrow_mut() {
        Ok(mut scratch) => emit(&mut scratch),
        Err(_) => emit(&mut Scratch {
            buf: Vec::new(),
            stamp: Stamp::NONE,
        }),
    });
}

/// The line [`write`] would write at `since_epoch`, for tests.
#[cfg(test)]
pub(crate) fn render(
    style: Style,
    target: &str,
    since_epoch: Duration,
    fields: impl FnOnce(&mut Fields<'_>),
) -> Vec<u8> {
    let (mut buf, mut stamp) = (Vec::new(), Stamp::NONE);
    format(&mut buf, &mut stamp, since_epoch, style, target, fields);
    buf
}

/// Formats the whole line, newline included, into `buf`.
fn format(
    buf: &mut Vec<u8>,
    stamp: &mut Stamp,
    since_epoch: Duration,
    style: Style,
    target: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) {
    let json = style == Style::Json;
    if json {
        buf.extend_from_slice(b"{\"timestamp\":\"");
    }
    stamp.append(buf, since_epoch);
    if json {
        buf.extend_from_slice(b"\",\"level\":\"INFO\"");
    } else {
        buf.extend_from_slice(b"  INFO ");
        buf.extend_from_slice(target.as_bytes());
        buf.extend_from_slice(b": ");
    }
    fields(&mut Fields {
        buf,
        json,
        first: true,
    });
    if json {
        buf.extend_from_slice(b",\"target\":");
        json_str(buf, target.as_bytes());
        buf.push(b'}');
    }
    buf.push(b'\n');
}

/// A byte written as itself inside a JSON or `{:?}` string.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte of `value` is [`plain`]: eight bytes at a time, as most are.
fn all_plain(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_ne_bytes(bytes);
        // A byte's high bit ends up set when it is below 0x20, or 0x80 and above, or equal to
        // `"`, `\` or DEL (its XOR is then 0, minus one wraps). A borrow can only carry into
        // the next byte from a byte that was flagged itself, so no plain word is flagged.
        let equal = |c: u8| (w ^ (ONES * u64::from(c))).wrapping_sub(ONES);
        let flagged = w | w.wrapping_sub(ONES * 0x20) | equal(b'"') | equal(b'\\') | equal(0x7f);
        if flagged & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain(b))
}

/// `value` as a JSON string, escaped as serde_json escapes; bytes that are not UTF-8 become
/// U+FFFD.
fn json_str(buf: &mut Vec<u8>, value: &[u8]) {
    if all_plain(value) {
        buf.push(b'"');
        buf.extend_from_slice(value);
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, &*String::from_utf8_lossy(value));
    }
}

/// `value` quoted and escaped as `{:?}` writes a `&str`; bytes that are not UTF-8 become U+FFFD.
fn debug_str(buf: &mut Vec<u8>, value: &[u8]) {
    if all_plain(value) {
        buf.push(b'"');
        buf.extend_from_slice(value);
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{:?}", String::from_utf8_lossy(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03T16:42:30Z plus 7 µs.
    const AT: Duration = Duration::new(1_796_316_150, 7_000);

    fn one(style: Style, value: &[u8]) -> String {
        let line = render(style, "t", AT, |f| f.str(log_key!("v"), value));
        String::from_utf8(line).expect("a line is UTF-8")
    }

    /// The hostile values every string field must survive.
    const HOSTILE: &[&[u8]] = &[
        b"plain",
        b"",
        b"a\"b",
        b"back\\slash\\",
        b"line\nbreak\r\n",
        b"\x00\x01\x08\x0c\x1b[31m\x1f\x7f\t",
        b"/caf\xc3\xa9/\xe2\x9c\x93",
        b"/bad\xff\xfe/\xc3",
        b"\"},{\"target\":\"forged\"",
        b"x\n{\"target\":\"bentogate::access\"}",
    ];

    #[test]
    fn the_timestamp_and_framing_are_the_subscribers() {
        let json = render(Style::Json, "bentogate::access", AT, |f| {
            f.u64(log_key!("n"), 1)
        });
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"timestamp\":\"2026-12-03T16:42:30.000007Z\",\"level\":\"INFO\",\"n\":1,\
             \"target\":\"bentogate::access\"}\n"
        );
        let text = render(Style::Text, "bentogate::access", AT, |f| {
            f.u64(log_key!("n"), 1);
            f.bool(log_key!("ok"), false);
        });
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2026-12-03T16:42:30.000007Z  INFO bentogate::access: n=1 ok=false\n"
        );
    }

    #[test]
    fn the_cached_second_is_refreshed_when_the_second_changes() {
        let mut stamp = Stamp::NONE;
        let mut buf = Vec::new();
        for (at, want) in [
            (AT, "2026-12-03T16:42:30.000007Z"),
            (
                AT + Duration::from_micros(999_990),
                "2026-12-03T16:42:30.999997Z",
            ),
            (
                AT + Duration::from_micros(999_993),
                "2026-12-03T16:42:31.000000Z",
            ),
            (
                Duration::new(1_798_761_599, 999_999_000),
                "2026-12-31T23:59:59.999999Z",
            ),
            (
                Duration::new(1_798_761_600, 0),
                "2027-01-01T00:00:00.000000Z",
            ),
        ] {
            buf.clear();
            stamp.append(&mut buf, at);
            assert_eq!(String::from_utf8_lossy(&buf), want);
        }
    }

    #[test]
    fn every_string_is_valid_json_and_reads_back_as_sent() {
        for value in HOSTILE {
            for key_kind in 0..2 {
                let line = render(Style::Json, "t", AT, |f| {
                    if key_kind == 0 {
                        f.str(log_key!("v"), value)
                    } else {
                        f.display(log_key!("v"), value)
                    }
                });
                let text = String::from_utf8(line).expect("UTF-8");
                assert_eq!(text.find('\n'), Some(text.len() - 1), "{text}");
                let parsed: serde_json::Value = serde_json::from_str(&text).expect(&text);
                assert_eq!(parsed["v"], *String::from_utf8_lossy(value), "{text}");
                assert_eq!(parsed["target"], "t");
            }
        }
    }

    #[test]
    fn json_escaping_is_serde_jsons_for_every_byte() {
        for b in 0u8..0x80 {
            let mut ours = Vec::new();
            json_str(&mut ours, &[b, b'x']);
            let theirs = serde_json::to_string(&format!("{}x", b as char)).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "byte {b:#x}");
        }
    }

    #[test]
    fn the_word_at_a_time_scan_agrees_with_the_byte_check() {
        for at in 0..17 {
            for b in 0..=255u8 {
                let mut v = [b'a'; 17];
                v[at] = b;
                assert_eq!(all_plain(&v), plain(b), "byte {b:#x} at {at}");
            }
        }
        // Two neighbours in one word, so that a borrow from one reaches the other.
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                let v = [b'a', b'a', b'a', x, y, b'a', b'a', b'a'];
                assert_eq!(all_plain(&v), plain(x) && plain(y), "{x:#x} {y:#x}");
            }
        }
    }

    #[test]
    fn text_strings_are_escaped_as_debug_and_stay_on_one_line() {
        for value in HOSTILE {
            let text = one(Style::Text, value);
            let want = format!("{:?}", String::from_utf8_lossy(value));
            assert!(text.ends_with(&format!(" t: v={want}\n")), "{text}");
            assert_eq!(text.find('\n'), Some(text.len() - 1), "{text}");
        }
        // A bare (Display) value is quoted as soon as it could be read as more than one field.
        let line = render(Style::Text, "t", AT, |f| {
            f.display(log_key!("m"), b"GET");
            f.display(log_key!("x"), b"a b=c");
        });
        assert!(String::from_utf8(line)
            .unwrap()
            .ends_with(" t: m=GET x=\"a b=c\"\n"));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for addr in [
            "127.0.0.1:1",
            "10.200.0.255:65535",
            "[::1]:8080",
            "[::ffff:1.2.3.4]:9",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let json = render(Style::Json, "t", AT, |f| f.addr(log_key!("client"), &addr));
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["client"], addr.to_string());
            let text = String::from_utf8(render(Style::Text, "t", AT, |f| {
                f.addr(log_key!("c"), &addr)
            }));
            assert!(text.unwrap().ends_with(&format!(" t: c={addr}\n")));
        }
    }

    #[test]
    fn only_json_and_text_are_written_by_hand() {
        // Nothing reaches stderr for the other styles (and nothing panics).
        write(Style::Off, "t", |_| unreachable!("Off formats nothing"));
        write(Style::Tracing, "t", |_| {
            unreachable!("Tracing formats nothing")
        });
    }
}
