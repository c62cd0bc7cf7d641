//! The certificate text, line by line: which lines are comments, sections
//! and properties, and the two keys' values, checked as Z85.

/// The keys a certificate's `curve` section holds.
pub(super) struct Keys {
    pub public: [u8; 32],
    /// The secret key and the line it is on.
    pub secret: Option<([u8; 32], usize)>,
}

/// A fault: the 1-based line it is on (none for the file as a whole) and
/// what is wrong, for [`crate::Error::BadCertificate`].
pub(super) type Fault = (Option<usize>, String);

/// Z85's 85 characters, in digit order (ZeroMQ RFC 32).
const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

pub(super) fn parse(text: &[u8]) -> Result<Keys, Fault> {
    let mut section: Option<&str> = None;
    let mut public: Option<([u8; 32], usize)> = None;
    let mut secret: Option<([u8; 32], usize)> = None;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let n = index + 1;
        let fault = |reason: String| (Some(n), reason);
        let line = std::str::from_utf8(raw).map_err(|_| fault("not UTF-8 text".into()))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            // A section name, alone on its line (a trailing comment aside).
            let name = without_comment(trimmed);
            if !is_name(name) {
                return Err(fault(format!("expected a section name (such as curve), found {trimmed:?}")));
            }
            section = Some(name);
            continue;
        }
        let (name, value) = trimmed
            .split_once('=')
            .ok_or_else(|| fault(format!("expected an indented `name = value`, found {trimmed:?}")))?;
        let name = name.trim();
        if !is_name(name) {
            return Err(fault(format!("{name:?} is not a property name")));
        }
        let Some(section) = section else {
            return Err(fault(format!("{name} comes before any section")));
        };
        let value = property_value(value.trim()).map_err(fault)?;
        let slot = match (section, name) {
            ("curve", "public-key") => &mut public,
            ("curve", "secret-key") => &mut secret,
            _ => continue,
        };
        if let Some((_, first)) = slot {
            return Err(fault(format!("a second {name} (the first is on line {first})")));
        }
        *slot = Some((decode_key(value).map_err(|reason| fault(format!("{name}: {reason}")))?, n));
    }
    let Some((public, _)) = public else {
        return Err((None, "no public-key in a curve section".into()));
    };
    Ok(Keys { public, secret })
}

/// ZPL's name characters: letters, digits and `$-_@.&+/`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"$-_@.&+/".contains(&b))
}

/// The text before a `#` comment, trimmed.
fn without_comment(s: &str) -> &str {
    s.split_once('#').map_or(s, |(before, _)| before).trim_end()
}

/// A property's value: quoted with `"` or `'` (a comment may follow), or
/// bare up to a comment.
fn property_value(s: &str) -> Result<&str, String> {
    let Some(quote) = s.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(without_comment(s));
    };
    let rest = &s[1..];
    let end = rest.find(quote).ok_or_else(|| format!("the value's closing {quote} is missing"))?;
    let after = rest[end + 1..].trim_start();
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!("{after:?} after the quoted value"));
    }
    Ok(&rest[..end])
}

/// A 32-byte key from its 40 Z85 characters. libzmq's decoder takes any
/// character, so the alphabet is checked here.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!("{} characters, where a Z85 key has 40", text.chars().count()));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii() || !Z85_ALPHABET.contains(&(*c as u8))) {
        return Err(format!("{c:?} is not a Z85 character"));
    }
    let bytes = zmq::z85_decode(text).map_err(|e| format!("not Z85: {e}"))?;
    // 40 Z85 characters each worth 85 values make up to 85^5 > 2^32 per
    // group of 5: a group above 2^32 - 1 is no key libzmq would write.
    if zmq::z85_encode(&bytes).ok().as_deref() != Some(text) {
        return Err("a Z85 group out of range".into());
    }
    bytes.try_into().map_err(|_| "not 32 bytes once decoded".to_string())
}
