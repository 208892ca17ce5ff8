//! An incremental Server-Sent Events decoder over a raw byte stream (WHATWG HTML §9.2.6).
//!
//! Bytes arrive in arbitrary network chunks, so a `data:` line, a UTF-8 character or even a CRLF
//! pair may be split across two chunks; the decoder buffers the unfinished line and never decodes
//! text before its line ends. Lines end in LF, CRLF or a lone CR. `:` lines are comments (keep-alive
//! pings). Several `data:` lines of one event are joined with `\n`; a blank line dispatches the event.
//! `finish()` flushes an event whose terminating blank line never came (lenient: some servers close
//! right after `data: [DONE]\n`).

/// One dispatched event. `event` is `None` for the default type (`message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Vec<String>,
    /// At least one field line has been seen since the last dispatch.
    pending: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one network chunk; returns the events it completed, in order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    self.end_line(&mut out);
                    i += 1;
                }
                b'\r' => {
                    self.end_line(&mut out);
                    match bytes.get(i + 1) {
                        Some(b'\n') => i += 2,
                        Some(_) => i += 1,
                        None => {
                            self.after_cr = true;
                            i += 1;
                        }
                    }
                }
                _ => {
                    let end = bytes[i..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .map_or(bytes.len(), |p| i + p);
                    self.line.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
            }
        }
        out
    }

    /// The stream ended: dispatch what is pending (a final line without its newline included).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out.pop()
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.find(':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "data" => {
                self.data.push(value.to_string());
                self.pending = true;
            }
            "event" => {
                self.event = Some(value.to_string());
                self.pending = true;
            }
            _ => {} // id, retry and unknown fields do not matter to a benchmark
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        // Per the spec an event with no data lines is not dispatched; an `event: error` without
        // data still matters to us, so keep it.
        if data.is_empty() && event.is_none() {
            return;
        }
        out.push(SseEvent {
            event,
            data: data.join("\n"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: s.to_string(),
        }
    }

    fn decode_in_pieces(input: &[u8], cut: &[usize]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cut.iter().chain(std::iter::once(&input.len())) {
            out.extend(d.push(&input[start..c]));
            start = c;
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn lf_crlf_and_cr_line_endings() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("data: a{sep}{sep}data: b{sep}{sep}data: [DONE]{sep}{sep}");
            let got = decode_in_pieces(text.as_bytes(), &[]);
            assert_eq!(
                got,
                vec![data("a"), data("b"), data("[DONE]")],
                "sep {sep:?}"
            );
        }
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text = "data: {\"x\":\"é中\"}\r\n\r\n: ping\r\n\r\nevent: error\r\ndata: boom\r\n\r\ndata:[DONE]\r\n\r\n";
        let bytes = text.as_bytes();
        let want = vec![
            data("{\"x\":\"é中\"}"),
            SseEvent {
                event: Some("error".into()),
                data: "boom".into(),
            },
            data("[DONE]"),
        ];
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                assert_eq!(decode_in_pieces(bytes, &[a, b]), want, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn multi_line_data_comments_and_unterminated_tail() {
        let got = decode_in_pieces(b": hello\ndata: one\ndata: two\nid: 7\n\ndata: tail", &[]);
        assert_eq!(got, vec![data("one\ntwo"), data("tail")]);
    }

    #[test]
    fn field_without_colon_and_no_space() {
        let got = decode_in_pieces(b"data\n\ndata:x\n\n", &[]);
        assert_eq!(got, vec![data(""), data("x")]);
    }
}
