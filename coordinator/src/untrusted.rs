//! Client-supplied text in log lines.
//!
//! Topic names, group ids, member ids, client ids and transactional ids arrive from the
//! network; before they are validated they may hold anything: newlines, NUL, terminal escape
//! sequences, tens of kilobytes. Written raw into a log line, a newline lets a client write a
//! line of its own (a well-formed `ERROR` line, say) and an escape sequence rewrites what an
//! operator's terminal shows. So every log field that carries such text goes through
//! [`Untrusted`]: its `Display` writes the text quoted, escapes what could end or restyle a
//! line, and stops after [`MAX_LOGGED_CHARS`] characters with a marker saying how long the
//! text was. Quoting keeps a value from passing for more fields (`topic="a error=b"` stays
//! one field). The same output works for the text and the JSON log formats (JSON escapes it
//! once more, losslessly).
//!
//! This lives in the coordinator crate because it is the lowest crate both the server and the
//! coordinator (group and member ids) log from.

use std::fmt::{self, Write};

/// At most this many characters of a client's string are logged.
pub const MAX_LOGGED_CHARS: usize = 200;

/// Client-supplied text as a log field value: `tracing::info!(topic = %Untrusted(&name), ..)`.
#[derive(Clone, Copy, Debug)]
pub struct Untrusted<'a>(pub &'a str);

impl Untrusted<'_> {
    /// Bytes of the underlying string (the marker's count).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `c` must not appear as itself in a log line: control characters (C0, DEL, C1),
/// the Unicode line and paragraph separators, and the bidirectional and zero-width format
/// characters that make a terminal show text other than what the line holds.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for (shown, (i, c)) in self.0.char_indices().enumerate() {
            if shown == MAX_LOGGED_CHARS {
                return write!(f, "\"...({} bytes, {} cut)", self.0.len(), self.0.len() - i);
            }
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        Untrusted(s).to_string()
    }

    #[test]
    fn plain_text_is_quoted_as_is() {
        assert_eq!(show("orders"), "\"orders\"");
        assert_eq!(show("é-ü.ok_1"), "\"é-ü.ok_1\"");
        assert_eq!(show(""), "\"\"");
    }

    #[test]
    fn line_breaks_nul_and_escape_sequences_are_escaped() {
        let s = show("a\nb\r\0\x1b[31mred\u{7f}\u{85}\u{2028}\u{202e}\t\"q\"\\");
        assert_eq!(
            s,
            "\"a\\nb\\r\\u{0}\\u{1b}[31mred\\u{7f}\\u{85}\\u{2028}\\u{202e}\\t\\\"q\\\"\\\\\""
        );
        assert!(s.chars().all(|c| !c.is_control()));
    }

    #[test]
    fn a_forged_line_stays_inside_one_field() {
        let s = show("x\n2026-01-01T00:00:00Z ERROR shardlog: disk failed\n");
        assert!(!s.contains('\n'));
        assert!(s.starts_with('"') && s.ends_with('"'));
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let long = "x".repeat(30_000);
        let s = show(&long);
        assert!(s.len() < MAX_LOGGED_CHARS + 40, "{}", s.len());
        assert!(s.ends_with("\"...(30000 bytes, 29800 cut)"), "{s}");
        // Exactly the limit is not cut.
        let exact = "y".repeat(MAX_LOGGED_CHARS);
        assert_eq!(show(&exact), format!("\"{exact}\""));
    }

    #[test]
    fn escaped_output_is_bounded_too() {
        // Every character escaped (6 bytes each at most for C0): still bounded.
        let nuls = "\0".repeat(10_000);
        assert!(show(&nuls).len() < MAX_LOGGED_CHARS * 10 + 40);
        // Multi-byte characters are cut at a character boundary.
        let wide = "€".repeat(1000);
        assert!(show(&wide).contains("\"...(3000 bytes, 2400 cut)"));
    }
}
