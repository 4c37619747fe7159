//! Output of the CLI: aligned tables for people, JSON for scripts.

use serde_json::Value;

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// A table: a header row and data rows, rendered with aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Columns separated by two spaces, each as wide as its widest cell (the last column is
    /// not padded). Cells with newlines or tabs are shown escaped so a row stays one line.
    pub fn render(&self) -> String {
        let clean = |s: &str| s.replace('\n', "\\n").replace('\t', "\\t");
        let cols = self
            .rows
            .iter()
            .map(|r| r.len())
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut width = vec![0usize; cols];
        let all: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(self.rows.iter())
            .map(|r| r.iter().map(|c| clean(c)).collect())
            .collect();
        for r in &all {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &all {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                if i + 1 < r.len() {
                    line.extend(std::iter::repeat_n(' ', width[i] - c.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `json` or `text` depending on the format.
/// A closed stdout (`| head`) ends the output quietly instead of panicking.
pub fn emit(format: Format, json: &Value, text: impl FnOnce() -> String) {
    use std::io::Write;
    let s = match format {
        Format::Json => {
            serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string()) + "\n"
        }
        Format::Table => text(),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|_| out.flush());
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bytes shown in a table/line: UTF-8 as is, anything else as `\xNN` escapes.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    (c as char).to_string()
                } else {
                    format!("\\x{c:02x}")
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["TOPIC", "PARTITIONS"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer-name".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "TOPIC        PARTITIONS\na            1\nlonger-name  12\n"
        );
    }

    #[test]
    fn table_escapes_newlines_and_handles_ragged_rows() {
        let mut t = Table::new(&["K", "V"]);
        t.row(vec!["x\ny".into(), "v".into()]);
        t.row(vec!["only".into()]);
        let s = t.render();
        assert!(s.contains("x\\ny  v\n"), "{s:?}");
        assert!(s.ends_with("only\n"), "{s:?}");
    }

    #[test]
    fn bytes_and_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(show_bytes(b"plain"), "plain");
        assert_eq!(show_bytes(&[0x61, 0xff, 0x00]), "a\\xff\\x00");
    }
}
