//! mbox files: reading an existing archive (Mailman, Google Groups, public-inbox exports)
//! and writing the monthly downloads in mboxrd.
//!
//! Hand-written: the format is a line convention, and the crates that read it either load
//! the whole file or do not un-escape mboxrd `>From ` lines. Reading streams the file, so a
//! large archive never sits in memory whole.

use std::io::BufRead;

/// One message read from an mbox: its bytes (un-escaped) and the date of its `From ` line.
#[derive(Debug)]
pub struct Entry {
    pub raw: Vec<u8>,
    pub from_line_ms: Option<i64>,
    /// 1-based line number of its `From ` line, for reports.
    pub line: u64,
}

/// Streams the messages of an mbox. A message starts at a line beginning with `From ` at
/// the start of the file or after an empty line; `>From `, `>>From ` ... lose one `>`
/// (mboxrd; for mboxo files this is the usual, unavoidable approximation).
pub struct Reader<R> {
    input: R,
    line: Vec<u8>,
    lineno: u64,
    pending: Option<(Option<i64>, u64)>,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader {
            input,
            line: Vec::new(),
            lineno: 0,
            pending: None,
            done: false,
        }
    }

    fn read_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        let n = self.input.read_until(b'\n', &mut self.line)?;
        if n > 0 {
            self.lineno += 1;
        }
        Ok(n > 0)
    }
}

fn is_from_line(l: &[u8]) -> bool {
    l.starts_with(b"From ")
}

/// `From sender Mon Jan  4 12:00:00 2010` → its time, when it has one.
pub fn from_line_date(l: &[u8]) -> Option<i64> {
    let s = String::from_utf8_lossy(l);
    let words: Vec<&str> = s.split_whitespace().collect();
    // The date is the last five words: weekday, month, day, time, year (some writers add a
    // zone after the year; try both).
    for end in [words.len(), words.len().saturating_sub(1)] {
        if end < 5 {
            continue;
        }
        let d = words[end - 5..end].join(" ");
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&d, "%a %b %d %H:%M:%S %Y") {
            let ms = t.and_utc().timestamp_millis();
            // public-inbox and others write `From mboxrd@z Thu Jan  1 00:00:00 1970`: no
            // date at all. Nothing was archived by a list before 1980.
            return (ms >= 315_532_800_000).then_some(ms);
        }
    }
    None
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = std::io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Find the first From line (skipping any junk before it).
        while self.pending.is_none() {
            match self.read_line() {
                Ok(true) => {
                    if is_from_line(&self.line) {
                        self.pending = Some((from_line_date(&self.line), self.lineno));
                    }
                }
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let (from_line_ms, line) = self.pending.take()?;
        let mut raw = Vec::new();
        let mut prev_blank = false;
        loop {
            match self.read_line() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if prev_blank && is_from_line(&self.line) {
                self.pending = Some((from_line_date(&self.line), self.lineno));
                break;
            }
            let l = &self.line;
            prev_blank = l == b"\n" || l == b"\r\n";
            let gts = l.iter().take_while(|&&b| b == b'>').count();
            if gts > 0 && l[gts..].starts_with(b"From ") {
                raw.extend_from_slice(&l[1..]);
            } else {
                raw.extend_from_slice(l);
            }
        }
        // The empty line before the next From line belongs to the format, not the message.
        if raw.ends_with(b"\r\n\r\n") {
            raw.truncate(raw.len() - 2);
        } else if raw.ends_with(b"\n\n") {
            raw.truncate(raw.len() - 1);
        }
        Some(Ok(Entry {
            raw,
            from_line_ms,
            line,
        }))
    }
}

/// Appends one message to an mboxrd buffer: a `From ` line with the date, the message with
/// `From ` lines escaped by one more `>`, and an empty line.
pub fn append(out: &mut Vec<u8>, raw: &[u8], date_ms: i64) {
    let date = chrono::DateTime::from_timestamp_millis(date_ms)
        .unwrap_or_default()
        .format("%a %b %e %H:%M:%S %Y");
    out.extend_from_slice(format!("From vraagbaak {date}\n").as_bytes());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if line[gts..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !raw.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_unescapes_mboxrd() {
        let mbox = b"From a@b Mon Jan  4 12:00:00 2010\nSubject: one\n\n>From here\n>>From there\nFrom inside a paragraph is not a separator\n\nFrom c@d Tue Jan  5 08:30:00 2010\nSubject: two\n\nbody\n";
        let v: Vec<Entry> = Reader::new(&mbox[..]).map(|e| e.unwrap()).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].raw,
            b"Subject: one\n\nFrom here\n>From there\nFrom inside a paragraph is not a separator\n"
        );
        assert_eq!(v[0].from_line_ms, Some(1_262_606_400_000));
        assert_eq!(v[1].raw, b"Subject: two\n\nbody\n");
        assert_eq!(v[1].line, 8);
    }

    #[test]
    fn placeholder_from_line_dates_are_no_dates() {
        assert_eq!(
            from_line_date(b"From mboxrd@z Thu Jan  1 00:00:00 1970"),
            None
        );
        assert_eq!(
            from_line_date(b"From x@y Fri Jan  1 02:10:35 2010"),
            Some(1_262_311_835_000)
        );
        assert_eq!(
            from_line_date(b"From x@y Fri Jan  1 02:10:35 2010 +0100"),
            Some(1_262_311_835_000)
        );
    }

    #[test]
    fn written_mbox_reads_back_the_same() {
        let msgs: [&[u8]; 2] = [
            b"Subject: a\n\nFrom me\n>From you\n",
            b"Subject: b\r\n\r\nno newline at end",
        ];
        let mut out = Vec::new();
        for m in msgs {
            append(&mut out, m, 1_262_606_400_000);
        }
        let v: Vec<Entry> = Reader::new(&out[..]).map(|e| e.unwrap()).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].raw, msgs[0]);
        assert_eq!(v[1].raw, b"Subject: b\r\n\r\nno newline at end\n");
    }
}
