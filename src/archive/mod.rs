//! The static HTML archive: threads, months, front page, Atom, mbox, search.
//!
//! The archive is derived from the store (`posts` and `raw`) and `archive-templates/`.
//! Each list's folder (`<archive dir>/<list local part>/`) holds:
//!
//! - `index.html`: the latest threads and the months;
//! - `YYYY-MM/index.html`, `YYYY-MM/YYYY-MM.mbox`: a month's threads, and its messages (mboxrd);
//! - `t/<thread>.html`: one page per thread, every message in tree order, anchors `#m<seq>`;
//! - `m/<seq>.eml`: each message as received (addresses removed), `a/<seq>/<n-name>`: its
//!   attachments, always served as downloads;
//! - `atom.xml`, `search.html`, `search/*.js`, `static/`.
//!
//! Links are relative, so the folder can be served from any path or opened from disk.
//!
//! [`Archive::update`] indexes the posts that arrived since the last run (in seq order, so
//! that thread ids, and with them URLs, never change) and re-renders only what they touch:
//! their threads, their months, the front page, the feed, the search files of their words.
//! Files are written only when their bytes change (to a temporary name, then renamed, so a
//! web server never serves half a page). [`Archive::rebuild`] renders everything again
//! (and, asked to, recomputes the thread index first).
//!
//! This file drives a pass (update, rebuild); `index.rs` puts posts into threads,
//! `pages.rs` renders the pages a pass touched.

mod closing;
pub mod import;
mod index;
pub mod mbox;
mod pages;
pub mod qa;
pub mod render;
pub mod search;
pub mod templates;

use index::Index;

use crate::config::{Config, Language, ListConfig};
use crate::store::{ArchMsg, ArchThread, ArchWrite, PostMark, PostMeta, Store};
use crate::threading::{self, Placed};
use anyhow::Context as _;
use chrono_tz::Tz;
use mail_parser::MessageParser;
use minijinja::context;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use templates::Templates;

/// Threads on the front page and entries in the feed.
const FRONT_THREADS: usize = 30;
const FEED_ENTRIES: usize = 20;
/// Threads of the latest months looked at for the front page's open and solved questions,
/// and how many of each it lists.
const FRONT_SCAN: usize = 500;
const FRONT_QA: usize = 10;

/// What an update or rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub messages: usize,
    pub threads: usize,
    pub pages: usize,
    pub files_written: usize,
}

/// The archive writer for every list.
pub struct Archive {
    cfg: Arc<Config>,
    store: Store,
    tpl: Arc<Templates>,
    /// One writer at a time: the daemon's archive task, `archive rebuild` through the
    /// control socket and `members forget` all write the same folder and index.
    writing: Arc<std::sync::Mutex<()>>,
    id_key: [u8; 32],
}

/// Threads of this many messages or more open with an overview of who wrote when.
const OVERVIEW_FROM: usize = 5;

/// A message date for the archive: the Date header unless it is missing or absurd (in the
/// future, or before 1980), then the time we received it.
pub fn message_date(meta: &PostMeta) -> i64 {
    let parsed = meta
        .date
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp_millis());
    match parsed {
        Some(d) if d >= 315_532_800_000 && d <= meta.received_ms + 2 * 86_400_000 => d,
        _ => meta.received_ms,
    }
}

/// A moment in the list's time zone (UTC when the moment is out of range).
fn local(ms: i64, tz: Tz) -> chrono::DateTime<Tz> {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&tz)
}

/// The month a post belongs to, by the list's local time: "2026-11".
pub fn month_of(ms: i64, tz: Tz) -> String {
    local(ms, tz).format("%Y-%m").to_string()
}

fn iso_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes a file only when its content differs, through a temporary file and a rename.
/// Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() == bytes.len() as u64 && std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// The name an attachment is stored under. Extensions a browser would run or render as a
/// page (html, svg, xml, js ...) get `.bin` added, so that even a web server that guesses
/// types from names never serves a mail's attachment as a page of the archive's origin.
/// The link's `download` attribute still offers the original name.
pub fn stored_name(file_name: &str) -> String {
    const SAFE: &[&str] = &[
        "pdf", "png", "jpg", "jpeg", "gif", "webp", "txt", "csv", "doc", "docx", "xls", "xlsx",
        "ppt", "pptx", "odt", "ods", "odp", "rtf", "zip", "gz", "7z", "eml", "ics", "vcf", "mp3",
        "mp4", "m4a", "wav", "ogg", "patch", "diff", "bin",
    ];
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if SAFE.contains(&ext.as_str()) {
        file_name.to_string()
    } else {
        format!("{file_name}.bin")
    }
}

/// The subject as shown: without the list's own prefix.
fn display_subject(list: &ListConfig, s: &str) -> String {
    let mut out = s.to_string();
    if let Some(p) = list
        .subject_prefix
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        out = out.replace(p, "");
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What one indexing pass touched.
#[derive(Default)]
struct Touched {
    threads: BTreeSet<u64>,
    months: BTreeSet<String>,
    /// Messages new to the search index (their words' term files are rewritten): new ones,
    /// and those that moved to another thread. Every touched thread's figures and result
    /// line are rewritten anyway.
    search: BTreeSet<u64>,
    /// Messages whose downloads (.eml, attachments) must be written.
    assets: BTreeSet<u64>,
    /// Threads that started or were merged away in this pass: the threads on either side
    /// of them get new previous/next links.
    neighbours: BTreeSet<u64>,
    messages: usize,
}

/// A thread's messages in display order, each with its place in the tree.
pub type Layout = Vec<(ArchMsg, Placed)>;

/// One list's folder and settings while rendering.
struct Site<'a> {
    arc: &'a Archive,
    list: &'a ListConfig,
    dir: PathBuf,
    lang: Language,
    privacy: render::Privacy,
    labels: render::Labels,
}

impl Archive {
    /// `id_key`: the key of the opaque Message-IDs in downloads (from the installation's
    /// secret, so that they stay the same across rebuilds).
    pub fn new(cfg: Arc<Config>, store: Store, id_key: [u8; 32]) -> Result<Archive, String> {
        let tpl = Templates::load(&cfg)?;
        Ok(Archive {
            cfg,
            store,
            tpl: Arc::new(tpl),
            writing: Arc::new(std::sync::Mutex::new(())),
            id_key,
        })
    }

    /// This archive for a new configuration (templates loaded again), sharing its writer
    /// lock, so that the old and the new never write the folder at the same time.
    pub fn reloaded(&self, cfg: Arc<Config>) -> Result<Archive, String> {
        let tpl = Templates::load(&cfg)?;
        Ok(Archive {
            cfg,
            store: self.store.clone(),
            tpl: Arc::new(tpl),
            writing: self.writing.clone(),
            id_key: self.id_key,
        })
    }

    /// What this list's archive takes out of what it publishes.
    fn privacy(&self, list: &ListConfig) -> render::Privacy {
        render::Privacy {
            mode: self.cfg.archive.addresses,
            redact: list.redaction(),
            lang: list.language,
            id_key: self.id_key,
        }
    }

    fn site<'a>(&'a self, list: &'a ListConfig) -> Option<Site<'a>> {
        Some(Site {
            arc: self,
            list,
            dir: self.cfg.list_archive_dir(list)?,
            lang: list.language,
            privacy: self.privacy(list),
            labels: self.tpl.labels(list.language),
        })
    }

    fn window_ms(&self) -> i64 {
        self.cfg.archive.subject_window.as_millis() as i64
    }

    /// Brings every list's archive up to date with the store.
    pub fn update_all(&self) -> anyhow::Result<Stats> {
        let mut total = Stats::default();
        for l in &self.cfg.lists {
            let s = self.update(l)?;
            total.messages += s.messages;
            total.threads += s.threads;
            total.pages += s.pages;
            total.files_written += s.files_written;
        }
        Ok(total)
    }

    /// Indexes the posts since the last update and re-renders what they touch.
    pub fn update(&self, list: &ListConfig) -> anyhow::Result<Stats> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(site) = self.site(list) else {
            return Ok(Stats::default());
        };
        let key = list.key();
        let from = self.store.archived_upto(key)?;
        let upto = self.store.last_seq(key)?;
        if from == 0 && upto > 0 {
            return self.rebuild_inner(&site, false);
        }
        let dirty = self.store.qa_dirty(key)?;
        if upto <= from
            && dirty.is_empty()
            && site.dir.join("index.html").exists()
            && search::is_current(&site.dir)
        {
            return Ok(Stats::default());
        }
        // A search index of an older format (or none): everything once, which writes it.
        if !search::is_current(&site.dir) {
            return self.rebuild_inner(&site, false);
        }
        let mut touched = Touched::default();
        let mut ix = Index::new(&self.store, key);
        self.index_range(list, from + 1, upto, &mut touched, &mut ix)?;
        // Threads an owner marked solved or reopened by mail: settled and rendered again.
        for id in &dirty {
            if let Some(mut t) = self.resolve(key, *id)? {
                t.solved = self.settle(key, &t, None, &ix)?;
                self.store.arch_put_thread(key, &t)?;
                touched.threads.insert(t.id);
                for s in &t.seqs {
                    if let Some(m) = self.store.arch_msg(key, *s)? {
                        touched.months.insert(m.month);
                    }
                }
            }
        }
        let stats = site.render(&touched, true)?;
        self.store.set_archived_upto(key, upto)?;
        for id in dirty {
            self.store.qa_settled(key, id)?;
        }
        Ok(stats)
    }

    /// Writes the list's archive anew: the old folder removed, the thread index and every
    /// file made again from the store (after posts were relabelled or deleted, so that no
    /// page, download or search file keeps what was there). Thread ids come out the same.
    pub fn rewrite(&self, list: &ListConfig) -> anyhow::Result<Stats> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(site) = self.site(list) else {
            return Ok(Stats::default());
        };
        if site.dir.exists() {
            std::fs::remove_dir_all(&site.dir)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", site.dir.display()))?;
        }
        self.rebuild_inner(&site, true)
    }

    /// Renders everything from the store. With `reindex`, the thread index is first
    /// recomputed from the posts in seq order, which gives the same thread ids (and URLs)
    /// as the incremental updates did.
    pub fn rebuild(&self, list: &ListConfig, reindex: bool) -> anyhow::Result<Stats> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(site) = self.site(list) else {
            anyhow::bail!("the archive of {} is off", list.address);
        };
        self.rebuild_inner(&site, reindex)
    }

    fn rebuild_inner(&self, site: &Site, clear: bool) -> anyhow::Result<Stats> {
        let key = site.list.key();
        if clear {
            self.store.arch_clear(key)?;
        }
        let upto = self.store.last_seq(key)?;
        let mut touched = Touched::default();
        let from = if clear {
            0
        } else {
            self.store.archived_upto(key)?
        };
        let mut ix = Index::new(&self.store, key);
        self.index_range(site.list, from + 1, upto, &mut touched, &mut ix)?;
        // Everything, not just what this pass indexed.
        let mut all = Touched {
            messages: touched.messages,
            ..Touched::default()
        };
        for t in self.store.arch_threads_rev(key) {
            let t = t?;
            all.threads.insert(t.id);
            all.search.extend(t.seqs.iter().copied());
            all.assets.extend(t.seqs.iter().copied());
        }
        for (m, _) in self.store.arch_months(key)? {
            all.months.insert(m);
        }
        let stats = site.render(&all, false)?;
        self.store.set_archived_upto(key, upto)?;
        Ok(stats)
    }
}

/// `archive threads`: every thread as an indented tree, or as a JSON array with one object
/// per message (`message_id`, `parent`: the Message-ID of its parent or null, ...).
pub fn print_threads(threads: &[(ArchThread, Vec<(ArchMsg, Placed)>)], json: bool) -> String {
    let mut out = String::new();
    if json {
        let mut all = Vec::new();
        for (t, msgs) in threads {
            let ids: HashMap<u64, &str> = msgs
                .iter()
                .map(|(m, _)| (m.seq, m.message_id.as_str()))
                .collect();
            for (m, p) in msgs {
                all.push(serde_json::json!({
                    "thread": t.id,
                    "seq": m.seq,
                    "message_id": m.message_id,
                    "parent": p.parent.and_then(|k| ids.get(&k).copied()),
                    "depth": p.depth,
                    "date": iso_date(m.date_ms),
                    "author": m.author,
                    "subject": m.subject,
                }));
            }
        }
        out = serde_json::to_string_pretty(&all).unwrap_or_default();
        out.push('\n');
        return out;
    }
    for (t, msgs) in threads {
        out.push_str(&format!("thread {} ({} messages)\n", t.id, msgs.len()));
        for (m, p) in msgs {
            out.push_str(&format!(
                "{}<{}> {} {} {}\n",
                "  ".repeat(p.depth + 1),
                m.message_id,
                local(m.date_ms, chrono_tz::UTC).format("%Y-%m-%d %H:%M UTC"),
                if m.author.is_empty() { "-" } else { &m.author },
                m.subject
            ));
        }
    }
    out
}
