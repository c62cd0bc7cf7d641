//! The headers frame: length-prefixed name/value pairs, decoded without allocating.

use crate::error::{Error, Result};

/// Encodes headers as `u16 name len, name, u32 value len, value` repeated.
pub fn encode_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut buf = Vec::new();
    append_headers(&mut buf, headers);
    buf
}

/// Appends headers, encoded as [`encode_headers`] does, to `buf`.
pub fn append_headers<'a>(buf: &mut Vec<u8>, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in headers {
        let name_len = u16::try_from(name.len()).expect("header name under 64 KiB");
        let value_len = u32::try_from(value.len()).expect("header value under 4 GiB");
        buf.extend_from_slice(&name_len.to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(&value_len.to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
}

/// Iterates over a headers frame; yields an error (once) on malformed input.
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> HeaderIter<'a> {
    /// Iterates over the encoded headers in `frame` (a tail's headers part).
    pub fn new(frame: &'a [u8]) -> Self {
        HeaderIter { rest: frame }
    }

    /// Finds a header by name; malformed frames yield an error.
    pub fn find(frame: &'a [u8], name: &str) -> Result<Option<&'a str>> {
        for item in HeaderIter::new(frame) {
            let (n, v) = item?;
            if n == name {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            let err = Error::Protocol(format!("headers frame truncated: need {n} bytes, have {}", self.rest.len()));
            self.rest = &[];
            return Err(err);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn take_str(&mut self, n: usize) -> Result<&'a str> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| {
            self.rest = &[];
            Error::Protocol("header is not valid UTF-8".into())
        })
    }

    fn next_header(&mut self) -> Result<(&'a str, &'a str)> {
        let name_len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let name = self.take_str(name_len)?;
        let value_len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        let value = self.take_str(value_len)?;
        Ok((name, value))
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.next_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let pairs = [("op", "sign"), ("", ""), ("ünï", "côdé:::"), ("retry", "2")];
        let frame = encode_headers(pairs.iter().copied());
        let back: Vec<_> = HeaderIter::new(&frame).collect::<Result<_>>().unwrap();
        assert_eq!(back, pairs);
        assert_eq!(HeaderIter::find(&frame, "retry").unwrap(), Some("2"));
        assert_eq!(HeaderIter::find(&frame, "nope").unwrap(), None);
        assert_eq!(HeaderIter::new(&[]).count(), 0);
    }

    #[test]
    fn truncated_and_invalid_frames_error_once() {
        let frame = encode_headers([("name", "value")]);
        for cut in 1..frame.len() {
            let items: Vec<_> = HeaderIter::new(&frame[..cut]).collect();
            assert_eq!(items.len(), 1, "cut at {cut}");
            assert!(items[0].is_err());
        }
        let mut bad = frame.clone();
        bad[2] = 0xff;
        assert!(HeaderIter::new(&bad).next().unwrap().is_err());
    }
}
