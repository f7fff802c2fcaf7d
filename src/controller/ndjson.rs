//! The controller's streamed answers: one JSON object per line, flushed as the handshake goes.
//!
//! Chunks from the network do not respect line boundaries, so [`LineSplitter`] buffers partial
//! lines across chunks. [`parse_line`] understands the three line forms: `{"data":…}` (progress
//! or a shown object), `{"result":{"message":…,"code":…}}` (an error, always the last line),
//! and, leniently, a bare object (treated as data).

/// Lines longer than this are not something the controller sends; refuse rather than buffer
/// without bound.
pub(crate) const MAX_LINE: usize = 4 * 1024 * 1024;

/// Splits a byte stream into lines, keeping an incomplete last line for the next chunk.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

/// A line grew past [`MAX_LINE`] without a newline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk and returns the complete, non-blank lines it finished (without `\n` or
    /// `\r`).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            self.buf.extend_from_slice(head);
            let line = std::mem::take(&mut self.buf);
            if let Some(line) = non_blank(line) {
                lines.push(line);
            }
            rest = tail.get(1..).unwrap_or_default();
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(lines)
    }

    /// The last line, if the stream ended without a final newline.
    pub fn finish(self) -> Option<Vec<u8>> {
        non_blank(self.buf)
    }

    /// Bytes of an incomplete line held so far.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn non_blank(mut line: Vec<u8>) -> Option<Vec<u8>> {
    while line.last().is_some_and(|b| b.is_ascii_whitespace()) {
        line.pop();
    }
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    line.drain(..start);
    Some(line)
}

/// One parsed line of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// `{"data": …}` or a bare object.
    Data(serde_json::Value),
    /// `{"result": {"message": …, "code": …}}`: the request failed.
    Result { message: String, code: Option<u16> },
}

/// Parses one line; `None` when it is not a JSON object.
pub(crate) fn parse_line(line: &[u8]) -> Option<Line> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let serde_json::Value::Object(mut obj) = value else {
        return None;
    };
    if let Some(result) = obj.remove("result") {
        let message = result
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| result.to_string());
        let code = result
            .get("code")
            .and_then(|c| c.as_u64())
            .and_then(|c| u16::try_from(c).ok());
        return Some(Line::Result { message, code });
    }
    if let Some(data) = obj.remove("data") {
        return Some(Line::Data(data));
    }
    Some(Line::Data(serde_json::Value::Object(obj)))
}

/// The progress message of a data line (`{"message": …}`), if it has one.
pub(crate) fn data_message(data: &serde_json::Value) -> Option<&str> {
    data.get("message").and_then(|m| m.as_str())
}

/// The `message` of an error body such as `{"message":"Forbidden"}`.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("message") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => match value.get("result").and_then(|r| r.get("message")) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c).unwrap());
        }
        out.extend(s.finish());
        out.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_split_across_chunks() {
        let text = b"{\"data\":{\"message\":\"Starting CRM maintenance\"}}\n{\"data\":{\"message\":\"CRM maintenance started\"}}\n{\"data\":{\"message\":\"Cloudlet is in maintenance\"}}\n";
        let whole = split_all(&[text]);
        assert_eq!(whole.len(), 3);
        // Every possible split point, and byte-by-byte.
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(split_all(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(split_all(&bytes), whole);
    }

    #[test]
    fn partial_line_is_held_until_its_newline() {
        let mut s = LineSplitter::new();
        assert!(s.push(b"{\"data\":{\"mess").unwrap().is_empty());
        assert_eq!(s.pending(), 14);
        let lines = s.push(b"age\":\"x\"}}\n{\"da").unwrap();
        assert_eq!(lines, vec![b"{\"data\":{\"message\":\"x\"}}".to_vec()]);
        assert_eq!(s.finish(), Some(b"{\"da".to_vec()));
    }

    #[test]
    fn blank_lines_and_crlf_are_skipped() {
        assert_eq!(
            split_all(&[b"\r\n\n  {\"a\":1}\r\n\n", b"  \n"]),
            vec!["{\"a\":1}"]
        );
        assert_eq!(split_all(&[b"{\"a\":1}"]), vec!["{\"a\":1}"]);
        assert!(split_all(&[b""]).is_empty());
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut s = LineSplitter::new();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..4 {
            assert!(s.push(&chunk).is_ok());
        }
        assert_eq!(s.push(b"x"), Err(LineTooLong));
    }

    #[test]
    fn line_forms() {
        assert_eq!(
            parse_line(br#"{"data":{"message":"Starting AutoProv failover"}}"#),
            Some(Line::Data(
                serde_json::json!({"message":"Starting AutoProv failover"})
            ))
        );
        assert_eq!(
            parse_line(br#"{"result":{"message":"Timed out waiting for CloudletInfo maintenance state","code":400}}"#),
            Some(Line::Result {
                message: "Timed out waiting for CloudletInfo maintenance state".into(),
                code: Some(400)
            })
        );
        assert_eq!(
            parse_line(br#"{"key":{"organization":"o","name":"n"}}"#),
            Some(Line::Data(
                serde_json::json!({"key":{"organization":"o","name":"n"}})
            ))
        );
        assert_eq!(parse_line(b"<html>"), None);
        assert_eq!(parse_line(b"[1,2]"), None);
        assert_eq!(
            data_message(&serde_json::json!({"message":"hi"})),
            Some("hi")
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"message":"Forbidden"}"#).as_deref(),
            Some("Forbidden")
        );
        assert_eq!(
            error_message(br#"{"result":{"message":"x","code":400}}"#).as_deref(),
            Some("x")
        );
        assert_eq!(error_message(b"<html>502</html>"), None);
        assert_eq!(error_message(br#"{"token":"abc"}"#), None);
    }
}
