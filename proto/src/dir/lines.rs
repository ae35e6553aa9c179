//! The strict line reader and writer under every directory document (`docs/spec.md` §5.1).
//!
//! A document is printable ASCII in lines that each end with one LF: no CR, no empty line, no
//! tab, no space at either end of a line and never two spaces in a row. Each line is a keyword
//! and its arguments separated by single spaces. [`LineReader`] checks all of that, hands out
//! lines in order by expected keyword, and must end with [`LineReader::finish`], which refuses
//! anything left over. Argument parsers accept only the one canonical text of each value
//! (decimal without leading zeros, lower-case hex, socket addresses as Rust prints them), so a
//! parsed document re-encodes to exactly its input. [`LineWriter`] is the encoding side.

use std::fmt::Display;
use std::net::SocketAddr;

use shallot_crypto::hex;
use shallot_crypto::keys::{RelayId, Signature, VerifyingKey};

use super::DocError;

/// Reads a document line by line, checking the shape of every line up front.
#[derive(Debug, Clone)]
pub struct LineReader<'a> {
    rest: &'a str,
    consumed: usize,
    line_no: usize,
}

impl<'a> LineReader<'a> {
    /// A reader over `text`, refused unless every line is well formed (see the module docs).
    pub fn new(text: &'a str) -> Result<Self, DocError> {
        if text.is_empty() {
            return Err(DocError::malformed(1, "the document is empty"));
        }
        if !text.ends_with('\n') {
            return Err(DocError::malformed(
                text.split('\n').count(),
                "the last line does not end with a newline",
            ));
        }
        for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
            check_line(line).map_err(|reason| DocError::malformed(i + 1, reason))?;
        }
        Ok(LineReader {
            rest: text,
            consumed: 0,
            line_no: 0,
        })
    }

    /// The keyword of the next line, if any.
    pub fn peek_keyword(&self) -> Option<&'a str> {
        let line = self.rest.split('\n').next()?;
        if self.rest.is_empty() {
            return None;
        }
        line.split(' ').next()
    }

    /// Bytes consumed so far: the offset at which the next line starts.
    pub fn position(&self) -> usize {
        self.consumed
    }

    /// The number of the line last read (1-based; 0 before the first).
    pub fn line_no(&self) -> usize {
        self.line_no
    }

    /// Reads the next line, which must start with `keyword`, and returns its arguments.
    pub fn expect(&mut self, keyword: &str) -> Result<Args<'a>, DocError> {
        let line_no = self.line_no + 1;
        let Some(end) = self.rest.find('\n') else {
            return Err(DocError::malformed(
                line_no,
                format!("expected a `{keyword}` line, found the end of the document"),
            ));
        };
        let line = &self.rest[..end];
        let mut words = line.split(' ');
        let found = words.next().unwrap_or_default();
        if found != keyword {
            return Err(DocError::malformed(
                line_no,
                format!("expected a `{keyword}` line, found `{found}`"),
            ));
        }
        self.rest = &self.rest[end + 1..];
        self.consumed += end + 1;
        self.line_no = line_no;
        Ok(Args {
            words,
            line: line_no,
            keyword: found,
        })
    }

    /// Reads the next line if it starts with `keyword`.
    pub fn maybe(&mut self, keyword: &str) -> Result<Option<Args<'a>>, DocError> {
        if self.peek_keyword() == Some(keyword) {
            self.expect(keyword).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Ends reading: nothing may be left.
    pub fn finish(self) -> Result<(), DocError> {
        match self.peek_keyword() {
            None => Ok(()),
            Some(k) => Err(DocError::malformed(
                self.line_no + 1,
                format!("unexpected `{k}` line"),
            )),
        }
    }
}

fn check_line(line: &str) -> Result<(), &'static str> {
    if line.is_empty() {
        return Err("empty line");
    }
    if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("a character that is not printable ASCII (tab, CR or control character)");
    }
    if line.starts_with(' ') || line.ends_with(' ') {
        return Err("space at the start or end of the line");
    }
    if line.contains("  ") {
        return Err("two spaces in a row");
    }
    Ok(())
}

/// The arguments of one line, read left to right; [`Args::end`] refuses leftovers.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    words: std::str::Split<'a, char>,
    line: usize,
    keyword: &'a str,
}

impl<'a> Args<'a> {
    /// An error about this line.
    pub fn error(&self, reason: impl Into<String>) -> DocError {
        DocError::malformed(self.line, format!("`{}`: {}", self.keyword, reason.into()))
    }

    /// The next word, required.
    pub fn word(&mut self, what: &str) -> Result<&'a str, DocError> {
        self.words
            .next()
            .ok_or_else(|| self.error(format!("missing {what}")))
    }

    /// The next word, if any.
    pub fn next_word(&mut self) -> Option<&'a str> {
        self.words.next()
    }

    /// Every word left.
    pub fn rest(&mut self) -> Vec<&'a str> {
        self.words.by_ref().collect()
    }

    /// A decimal u64 without leading zeros.
    pub fn u64(&mut self, what: &str) -> Result<u64, DocError> {
        let w = self.word(what)?;
        parse_u64(w).ok_or_else(|| self.error(format!("{what} `{w}` is not a canonical integer")))
    }

    /// 32 bytes of lower-case hex.
    pub fn hex32(&mut self, what: &str) -> Result<[u8; 32], DocError> {
        let w = self.word(what)?;
        hex::decode_array(w).map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// An ed25519 public key in hex; refused if it is not a point or has small order.
    pub fn key(&mut self, what: &str) -> Result<VerifyingKey, DocError> {
        let bytes = self.hex32(what)?;
        parse_key(&bytes).ok_or_else(|| self.error(format!("{what} is not a usable ed25519 key")))
    }

    /// An ed25519 signature in hex.
    pub fn signature(&mut self) -> Result<Signature, DocError> {
        let w = self.word("signature")?;
        let bytes: [u8; 64] = hex::decode_array(w).map_err(|e| self.error(format!("{e}")))?;
        Ok(Signature::from_bytes(&bytes))
    }

    /// A relay fingerprint in hex.
    pub fn relay_id(&mut self, what: &str) -> Result<RelayId, DocError> {
        let w = self.word(what)?;
        RelayId::from_hex(w).map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// A socket address in its canonical text (`1.2.3.4:5`, `[::1]:5`), usable as a
    /// destination: not unspecified, port not zero.
    pub fn addr(&mut self, what: &str) -> Result<SocketAddr, DocError> {
        let w = self.word(what)?;
        let addr: SocketAddr = w
            .parse()
            .map_err(|_| self.error(format!("{what} `{w}` is not a socket address")))?;
        if addr.to_string() != w {
            return Err(self.error(format!("{what} `{w}` is not in canonical form")));
        }
        check_addr(&addr).map_err(|r| self.error(format!("{what}: {r}")))?;
        Ok(addr)
    }

    /// Ends the line: no words may be left.
    pub fn end(mut self) -> Result<(), DocError> {
        match self.words.next() {
            None => Ok(()),
            Some(w) => Err(self.error(format!("unexpected `{w}`"))),
        }
    }
}

/// Parses a canonical decimal u64: digits only, no leading zero except `0` itself.
pub fn parse_u64(w: &str) -> Option<u64> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) || (w.len() > 1 && w.starts_with('0'))
    {
        return None;
    }
    w.parse().ok()
}

/// Decodes an ed25519 public key, refusing non-points and small-order (weak) keys.
pub fn parse_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes)
        .ok()
        .filter(|k| !k.is_weak())
}

/// Checks that an address can appear in a document: a destination that round-trips through
/// its text form (no IPv6 scope id or flow label, not unspecified, port not zero).
pub fn check_addr(addr: &SocketAddr) -> Result<(), &'static str> {
    if addr.port() == 0 {
        return Err("port 0");
    }
    if addr.ip().is_unspecified() {
        return Err("unspecified IP address");
    }
    if let SocketAddr::V6(v6) = addr {
        if v6.scope_id() != 0 || v6.flowinfo() != 0 {
            return Err("IPv6 scope id or flow label");
        }
    }
    Ok(())
}

/// Builds a document line by line; the encoding side of [`LineReader`].
#[derive(Debug, Default, Clone)]
pub struct LineWriter {
    out: String,
}

impl LineWriter {
    /// An empty document.
    pub fn new() -> Self {
        LineWriter::default()
    }

    /// Appends `keyword` and its arguments, separated by single spaces, and a newline.
    pub fn line<I, T>(&mut self, keyword: &str, args: I)
    where
        I: IntoIterator<Item = T>,
        T: Display,
    {
        use std::fmt::Write;
        self.out.push_str(keyword);
        for a in args {
            // Writing to a String cannot fail.
            let _ = write!(self.out, " {a}");
        }
        self.out.push('\n');
    }

    /// Appends a line that has only its keyword.
    pub fn keyword(&mut self, keyword: &str) {
        self.out.push_str(keyword);
        self.out.push('\n');
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_badly_shaped_lines() {
        for bad in [
            "",
            "a b",
            "a b\r\n",
            "a  b\n",
            "a b \n",
            " a\n",
            "a\n\nb\n",
            "a\tb\n",
            "caf\u{e9}\n",
        ] {
            assert!(LineReader::new(bad).is_err(), "{bad:?}");
        }
        assert!(LineReader::new("a b\nc\n").is_ok());
    }

    #[test]
    fn reads_keywords_in_order_and_checks_the_end() {
        let mut r = LineReader::new("a 1 2\nb\nc x\n").unwrap();
        let mut a = r.expect("a").unwrap();
        assert_eq!(a.u64("n").unwrap(), 1);
        assert_eq!(a.u64("n").unwrap(), 2);
        a.end().unwrap();
        assert!(r.maybe("x").unwrap().is_none());
        r.expect("b").unwrap().end().unwrap();
        assert_eq!(r.position(), 8);
        let err = r.clone().finish().unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(r.expect("d").is_err());
        r.expect("c").unwrap();
        r.finish().unwrap();
    }

    #[test]
    fn integers_and_addresses_are_canonical() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("10"), Some(10));
        for bad in ["", "01", "+1", "-1", "1a", "18446744073709551616"] {
            assert_eq!(parse_u64(bad), None, "{bad}");
        }
        let mut r =
            LineReader::new("a 1.2.3.4:5 [::1]:7 01.2.3.4:5 [::0001]:7 0.0.0.0:1 1.2.3.4:0\n")
                .unwrap();
        let mut a = r.expect("a").unwrap();
        assert_eq!(a.addr("x").unwrap().to_string(), "1.2.3.4:5");
        assert_eq!(a.addr("x").unwrap().to_string(), "[::1]:7");
        for _ in 0..4 {
            assert!(a.addr("x").is_err());
        }
    }

    #[test]
    fn writer_joins_with_single_spaces() {
        let mut w = LineWriter::new();
        w.line("a", [1, 2]);
        w.keyword("b");
        w.line("c", ["x"]);
        assert_eq!(w.finish(), "a 1 2\nb\nc x\n");
    }
}
