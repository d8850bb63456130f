//! `vraagbaak archive import-mbox`: loading an existing archive (a Mailman or Google Groups
//! export, a public-inbox mbox) into a list's store, without sending anything.

use super::mbox;
use crate::clock::now_ms;
use crate::config::{Config, ListConfig};
use crate::store::{PostMeta, Store};
use mail_parser::MessageParser;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub read: usize,
    pub imported: usize,
    /// Why messages were not imported, with how many and the mbox line of the first.
    pub skipped: BTreeMap<String, (usize, u64)>,
    /// Messages that had no Message-ID and were given one.
    pub ids_given: usize,
}

impl Report {
    fn skip(&mut self, why: &str, line: u64) {
        let e = self.skipped.entry(why.to_string()).or_insert((0, line));
        e.0 += 1;
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "read {} messages, imported {}, skipped {}\n",
            self.read,
            self.imported,
            self.read - self.imported
        );
        if self.ids_given > 0 {
            s.push_str(&format!(
                "  {} without a Message-ID were given one\n",
                self.ids_given
            ));
        }
        for (why, (n, line)) in &self.skipped {
            s.push_str(&format!("  skipped {n}: {why} (first at line {line})\n"));
        }
        s
    }
}

/// Imports every message of the mbox at `path` into `list`. `progress` is told the bytes
/// read. Messages keep their bytes; one without a Message-ID gets a header with an id made
/// from its content, so that importing the same file twice adds nothing.
pub fn import(
    cfg: &Config,
    store: &Store,
    list: &ListConfig,
    path: &Path,
    progress: &dyn Fn(u64),
) -> anyhow::Result<Report> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let counted = Counting {
        inner: file,
        n: 0,
        tick: progress,
    };
    let mut report = Report::default();
    for entry in mbox::Reader::new(BufReader::with_capacity(1 << 20, counted)) {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        report.read += 1;
        if entry.raw.iter().all(|b| b.is_ascii_whitespace()) {
            report.skip("empty message", entry.line);
            continue;
        }
        let mut raw = entry.raw;
        let lean = crate::archive::render::without_trace(&raw);
        let parsed = MessageParser::default().parse_headers(&lean[..]);
        let (mut message_id, from_addr, from_name, subject, date) = match &parsed {
            Some(m) => {
                let from = m.from().and_then(|a| a.first());
                (
                    m.message_id().map(str::to_string),
                    from.and_then(|a| a.address()).unwrap_or("").to_string(),
                    from.and_then(|a| a.name()).map(str::to_string),
                    m.subject()
                        .unwrap_or("")
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect::<String>(),
                    m.date().map(|d| d.to_rfc3339()),
                )
            }
            None => (None, String::new(), None, String::new(), None),
        };
        message_id = message_id.filter(|id| !id.trim().is_empty());
        let message_id = match message_id {
            Some(id) => id,
            None => {
                let h = Sha256::digest(&raw);
                let id = format!(
                    "import.{}@{}",
                    data_encoding::HEXLOWER.encode(&h[..12]),
                    cfg.smtp.hostname
                );
                let mut with = format!("Message-ID: <{id}>\n").into_bytes();
                with.extend_from_slice(&raw);
                raw = with;
                report.ids_given += 1;
                id
            }
        };
        let date_ms = date
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.timestamp_millis());
        let received_ms = entry.from_line_ms.or(date_ms).unwrap_or_else(now_ms);
        let meta = PostMeta {
            list: list.key().to_string(),
            seq: 0,
            message_id,
            from_addr,
            from_name,
            subject,
            date,
            received_ms,
            recipients: 0,
            from_rewrite: false,
        };
        match store.import_post(meta, &raw)? {
            Some(_) => report.imported += 1,
            None => report.skip("its Message-ID is already in the archive", entry.line),
        }
    }
    store.flush()?;
    Ok(report)
}

struct Counting<'a, R> {
    inner: R,
    n: u64,
    tick: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        (self.tick)(self.n);
        Ok(k)
    }
}
