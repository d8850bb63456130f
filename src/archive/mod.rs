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
//! web server never serves half a page). [`Archive::rebuild`] renders everything again (and, asked to, recomputes the
//! thread index first).

mod closing;
pub mod import;
pub mod mbox;
pub mod qa;
pub mod render;
pub mod search;
pub mod templates;

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

/// schema.org `QAPage` markup (JSON-LD) for a solved thread of a public archive: the
/// question, its accepted answer and the other answers. `msgs`: (seq, author, date, text).
fn qa_page_json(
    subject: &str,
    thread: u64,
    accepted: Option<u64>,
    msgs: &[(u64, String, i64, String)],
) -> String {
    let person = |name: &str| serde_json::json!({ "@type": "Person", "name": if name.is_empty() { "?" } else { name } });
    let short = |text: &str| text.chars().take(2000).collect::<String>();
    let Some(((_, q_author, q_date, q_text), answers)) = msgs.split_first() else {
        return String::new();
    };
    let answer = |(seq, author, date, text): &(u64, String, i64, String)| {
        serde_json::json!({
            "@type": "Answer",
            "text": short(text),
            "author": person(author),
            "dateCreated": iso_date(*date),
            "url": format!("{thread}.html#m{seq}"),
        })
    };
    let mut question = serde_json::json!({
        "@type": "Question",
        "name": subject,
        "text": short(q_text),
        "author": person(q_author),
        "dateCreated": iso_date(*q_date),
        "answerCount": answers.len(),
    });
    if let Some(a) = answers.iter().find(|m| Some(m.0) == accepted) {
        question["acceptedAnswer"] = answer(a);
    }
    let others: Vec<serde_json::Value> = answers
        .iter()
        .filter(|m| Some(m.0) != accepted)
        .map(answer)
        .collect();
    if !others.is_empty() {
        question["suggestedAnswer"] = serde_json::Value::Array(others);
    }
    let page = serde_json::json!({ "@context": "https://schema.org", "@type": "QAPage", "mainEntity": question });
    // Inside <script>: no "</" may end it early.
    page.to_string().replace("</", "<\\/")
}

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
fn month_of(ms: i64, tz: Tz) -> String {
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

/// The thread index while posts are being indexed: reads go to what this pass wrote, then
/// to the store; writes are kept here and written in one transaction per
/// [`Index::BATCH`] posts (and at the end). A crash between batches loses only index rows
/// of posts whose pages were not rendered yet; the next update indexes them again.
struct Index<'a> {
    store: &'a Store,
    key: &'a str,
    msgs: HashMap<u64, ArchMsg>,
    threads: HashMap<u64, ArchThread>,
    ids: HashMap<String, u64>,
    subjects: HashMap<String, u64>,
    months: HashMap<(String, u64), u32>,
    pending: usize,
}

impl<'a> Index<'a> {
    const BATCH: usize = 1000;

    fn new(store: &'a Store, key: &'a str) -> Self {
        Index {
            store,
            key,
            msgs: HashMap::new(),
            threads: HashMap::new(),
            ids: HashMap::new(),
            subjects: HashMap::new(),
            months: HashMap::new(),
            pending: 0,
        }
    }

    fn msg(&self, seq: u64) -> anyhow::Result<Option<ArchMsg>> {
        match self.msgs.get(&seq) {
            Some(m) => Ok(Some(m.clone())),
            None => Ok(self.store.arch_msg(self.key, seq)?),
        }
    }

    fn thread(&self, id: u64) -> anyhow::Result<Option<ArchThread>> {
        match self.threads.get(&id) {
            Some(t) => Ok(Some(t.clone())),
            None => Ok(self.store.arch_thread(self.key, id)?),
        }
    }

    /// The thread a chain of merges ends in.
    fn resolve(&self, mut id: u64) -> anyhow::Result<Option<ArchThread>> {
        for _ in 0..64 {
            match self.thread(id)? {
                Some(t) => match t.merged_into {
                    Some(next) if next != id => id = next,
                    _ => return Ok(Some(t)),
                },
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn id(&self, message_id: &str) -> anyhow::Result<Option<u64>> {
        match self.ids.get(message_id) {
            Some(t) => Ok(Some(*t)),
            None => Ok(self.store.arch_id(self.key, message_id)?),
        }
    }

    fn subject(&self, base: &str) -> anyhow::Result<Option<u64>> {
        match self.subjects.get(base) {
            Some(t) => Ok(Some(*t)),
            None => Ok(self.store.arch_subject(self.key, base)?),
        }
    }

    fn month_count(&self, month: &str, thread: u64) -> anyhow::Result<u32> {
        match self.months.get(&(month.to_string(), thread)) {
            Some(n) => Ok(*n),
            None => Ok(self.store.arch_month_count(self.key, month, thread)?),
        }
    }

    fn apply(&mut self, w: ArchWrite) -> anyhow::Result<()> {
        for m in w.msgs {
            self.msgs.insert(m.seq, m);
        }
        for t in w.threads {
            self.threads.insert(t.id, t);
        }
        self.ids.extend(w.ids);
        self.subjects.extend(w.subjects);
        for (m, t, n) in w.months {
            self.months.insert((m, t), n);
        }
        self.pending += 1;
        if self.pending >= Self::BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let w = ArchWrite {
            msgs: self.msgs.drain().map(|(_, m)| m).collect(),
            threads: self.threads.drain().map(|(_, t)| t).collect(),
            ids: self.ids.drain().collect(),
            subjects: self.subjects.drain().collect(),
            months: self.months.drain().map(|((m, t), n)| (m, t, n)).collect(),
        };
        self.store.arch_write(self.key, &w)?;
        self.pending = 0;
        Ok(())
    }
}

/// A post read and parsed for indexing.
struct Prepared {
    meta: PostMeta,
    msg: ArchMsg,
    /// What the post says about its thread (`[opgelost]`, `#heropend`), not yet checked
    /// against who may say it.
    mark: Option<qa::Mark>,
    /// For a post that may start a thread (no references): its question's terms.
    terms: (Vec<String>, Vec<String>),
}

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

    /// The thread a chain of merges ends in, as stored.
    fn resolve(&self, list: &str, id: u64) -> anyhow::Result<Option<ArchThread>> {
        Index::new(&self.store, list).resolve(id)
    }

    /// Puts one post into the thread index.
    /// Reads and parses posts for indexing, in parallel (the expensive part of indexing;
    /// the thread assignment that follows must go in seq order).
    fn prepare(&self, key: &str, seqs: &[u64]) -> anyhow::Result<Vec<Option<Prepared>>> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = seqs.len().div_ceil(workers).max(1);
        let parts: Vec<anyhow::Result<Vec<Option<Prepared>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = seqs
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|seq| self.prepare_one(key, *seq))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an indexing thread panicked")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(seqs.len());
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    fn prepare_one(&self, key: &str, seq: u64) -> anyhow::Result<Option<Prepared>> {
        let Some(mut meta) = self.store.post(key, seq)? else {
            return Ok(None);
        };
        // Everything the index keeps of a post is published somewhere (pages, Atom, search,
        // similar-questions mails): its subject without addresses and clients' numbers.
        let (privacy, tz) = match self.cfg.lists.iter().find(|l| l.key() == key) {
            Some(list) => (self.privacy(list), list.timezone),
            None => (render::Privacy::hidden(), chrono_tz::Europe::Brussels),
        };
        meta.subject = privacy.text(&meta.subject).into_owned();
        let raw = self.store.raw(key, seq)?.unwrap_or_default();
        let raw = render::without_trace(&raw);
        let parsed = MessageParser::default().parse_headers(&raw[..]);
        let (refs, author) = match &parsed {
            Some(m) => (
                threading::references(m),
                render::author_name(m, privacy).unwrap_or_default(),
            ),
            None => (Vec::new(), String::new()),
        };
        let message_id = threading::normalize_id(&meta.message_id);
        let date_ms = message_date(&meta);
        // Only a message that can hold a body mark, or start a question, is parsed whole.
        let question = refs.is_empty() && !threading::is_reply_subject(&meta.subject);
        let body = if question || qa::may_have_body_mark(&raw) {
            MessageParser::default()
                .parse(&raw[..])
                .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        } else {
            None
        };
        let mark =
            qa::subject_mark(&meta.subject).or_else(|| body.as_deref().and_then(qa::body_mark));
        let terms = match (&body, question) {
            (Some(b), true) => qa::terms_of_question(&meta.subject, &privacy.text(b)),
            _ => (Vec::new(), Vec::new()),
        };
        let msg = ArchMsg {
            seq,
            thread: 0,
            message_id: message_id.clone(),
            refs: refs.into_iter().filter(|r| *r != message_id).collect(),
            subject: meta.subject.clone(),
            author,
            date_ms,
            month: month_of(date_ms, tz),
            qa: None,
        };
        Ok(Some(Prepared {
            meta,
            msg,
            mark,
            terms,
        }))
    }

    /// Indexes posts `from..=upto` (those not indexed yet), in seq order.
    fn index_range(
        &self,
        list: &ListConfig,
        from: u64,
        upto: u64,
        touched: &mut Touched,
        ix: &mut Index,
    ) -> anyhow::Result<()> {
        let key = list.key();
        let mut seq = from;
        while seq <= upto {
            let end = upto.min(seq.saturating_add(Index::BATCH as u64 - 1));
            let mut todo = Vec::new();
            for s in seq..=end {
                if let Some(m) = ix.msg(s)? {
                    // Indexed by an update that did not finish rendering (or by `archive
                    // threads`, which indexes without rendering): render again, and the
                    // threads beside one it started or merged away.
                    if let Some(t) = ix.resolve(m.thread)? {
                        touched.threads.insert(t.id);
                        if m.thread == s || t.id != m.thread {
                            touched.neighbours.insert(m.thread);
                        }
                    }
                    touched.months.insert(m.month);
                    touched.search.insert(s);
                    touched.assets.insert(s);
                    touched.messages += 1;
                } else {
                    todo.push(s);
                }
            }
            for p in self.prepare(key, &todo)?.into_iter().flatten() {
                self.index_post(p, touched, ix)?;
            }
            if end == u64::MAX {
                break;
            }
            seq = end + 1;
        }
        ix.flush()
    }

    /// Puts one post into the thread index.
    fn index_post(
        &self,
        prepared: Prepared,
        touched: &mut Touched,
        ix: &mut Index,
    ) -> anyhow::Result<()> {
        let Prepared {
            meta,
            mut msg,
            mark,
            terms: (subject_terms, body_terms),
        } = prepared;
        let seq = msg.seq;
        let date_ms = msg.date_ms;
        let base = threading::base_subject(&meta.subject);
        let is_reply = threading::is_reply_subject(&meta.subject);

        // The threads this post's id and references already belong to.
        let mut found: BTreeMap<u64, ArchThread> = BTreeMap::new();
        for id in std::iter::once(&msg.message_id).chain(msg.refs.iter()) {
            if id.is_empty() {
                continue;
            }
            if let Some(t) = ix.id(id)? {
                if let Some(t) = ix.resolve(t)? {
                    found.insert(t.id, t);
                }
            }
        }
        // No links: the subject fallback, for clients that drop References (Outlook),
        // only within the window, and only when one side says it is a reply.
        if found.is_empty() && !base.is_empty() {
            if let Some(t) = ix.subject(&base)? {
                if let Some(t) = ix.resolve(t)? {
                    let near = (date_ms - t.last_ms).abs() <= self.window_ms()
                        || (date_ms - t.first_ms).abs() <= self.window_ms();
                    if near && (is_reply || t.root_is_reply) && t.base == base {
                        found.insert(t.id, t);
                    }
                }
            }
        }
        let mut w = ArchWrite::default();
        let mut month_counts: BTreeMap<(String, u64), i64> = BTreeMap::new();
        let mut threads = found.into_values();
        let mut thread = match threads.next() {
            Some(t) => t,
            None => ArchThread {
                id: seq,
                subject: meta.subject.clone(),
                base: base.clone(),
                root_is_reply: is_reply,
                first_ms: date_ms,
                last_ms: date_ms,
                seqs: Vec::new(),
                merged_into: None,
                // An owner may have marked it before a `--reindex`.
                solved: qa::fold(&[], &self.store.qa_owner_marks(&meta.list, seq)?),
                first_answer_ms: None,
                tags: Vec::new(),
                subject_terms: Vec::new(),
                body_terms: Vec::new(),
            },
        };
        let mut settle = false;
        // A post that links two threads merges the younger into the older.
        for mut other in threads {
            for s in std::mem::take(&mut other.seqs) {
                if let Some(mut m) = ix.msg(s)? {
                    *month_counts.entry((m.month.clone(), other.id)).or_default() -= 1;
                    *month_counts
                        .entry((m.month.clone(), thread.id))
                        .or_default() += 1;
                    touched.months.insert(m.month.clone());
                    m.thread = thread.id;
                    w.msgs.push(m);
                }
                thread.seqs.push(s);
                touched.search.insert(s);
            }
            // The later of the two questions is now an answer in the merged thread.
            let answer = [
                thread.first_answer_ms,
                other.first_answer_ms,
                Some(other.first_ms.max(thread.first_ms)),
            ];
            thread.first_answer_ms = answer.into_iter().flatten().min();
            if other.first_ms < thread.first_ms {
                thread.first_ms = other.first_ms;
                thread.subject = other.subject.clone();
                thread.root_is_reply = other.root_is_reply;
            }
            thread.last_ms = thread.last_ms.max(other.last_ms);
            other.merged_into = Some(thread.id);
            settle |= other.solved.is_some();
            touched.threads.insert(other.id);
            touched.neighbours.insert(other.id);
            w.threads.push(other);
        }
        if !thread.seqs.is_empty() {
            // This message, or the question it now precedes, is an answer.
            let answer = date_ms.max(thread.first_ms);
            thread.first_answer_ms = Some(thread.first_answer_ms.map_or(answer, |a| a.min(answer)));
        }
        if date_ms < thread.first_ms || thread.seqs.is_empty() {
            thread.subject_terms = subject_terms;
            thread.body_terms = body_terms;
            thread.first_ms = date_ms;
            thread.subject = meta.subject.clone();
            thread.root_is_reply = is_reply;
            thread.base = base.clone();
        }
        thread.last_ms = thread.last_ms.max(date_ms);
        // A mark counts from the asker (the thread's first author) or an owner, in a reply.
        if let (Some(mark), false) = (mark, thread.seqs.is_empty()) {
            let root = thread.seqs.iter().copied().min().unwrap_or(thread.id);
            let asker = self.store.post(&meta.list, root)?.map(|p| p.from_addr);
            let by_owner = self.cfg.list(&meta.list).is_some_and(|l| {
                l.owners
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(&meta.from_addr))
            });
            if by_owner || asker.is_some_and(|a| a.eq_ignore_ascii_case(&meta.from_addr)) {
                let accepted = match (mark, msg.refs.last()) {
                    (qa::Mark::Solved, Some(parent)) => {
                        let mut found = None;
                        for s in &thread.seqs {
                            if ix.msg(*s)?.is_some_and(|m| &m.message_id == parent) {
                                found = Some(*s);
                            }
                        }
                        found.filter(|s| *s != root)
                    }
                    _ => None,
                };
                msg.qa = Some(PostMark {
                    solved: mark == qa::Mark::Solved,
                    accepted,
                });
                settle = true;
            }
        }
        if settle {
            thread.solved = self.settle(&meta.list, &thread, Some(&msg), ix)?;
        }
        let keywords = self.cfg.list(&meta.list).map_or(&[][..], |l| &l.tags[..]);
        thread.tags = qa::tags_of(&thread.subject, keywords);
        thread.seqs.push(seq);
        *month_counts
            .entry((msg.month.clone(), thread.id))
            .or_default() += 1;
        for id in std::iter::once(&msg.message_id).chain(msg.refs.iter()) {
            if !id.is_empty() && ix.id(id)? != Some(thread.id) {
                w.ids.push((id.clone(), thread.id));
            }
        }
        if !base.is_empty() {
            w.subjects.push((base, thread.id));
        }
        for ((month, t), delta) in month_counts {
            let old = i64::from(ix.month_count(&month, t)?);
            w.months.push((month, t, (old + delta).max(0) as u32));
        }
        if thread.seqs.len() == 1 {
            touched.neighbours.insert(thread.id);
        }
        touched.threads.insert(thread.id);
        touched.months.insert(msg.month.clone());
        touched.search.insert(seq);
        touched.assets.insert(seq);
        touched.messages += 1;
        msg.thread = thread.id;
        w.msgs.push(msg);
        w.threads.push(thread);
        ix.apply(w)?;
        Ok(())
    }

    /// An owner marks a thread solved or reopens it: `thread` is its number or an archive
    /// URL (`t/12.html`, or `t/12.html#m15` to name the accepted answer). Stored as an owner
    /// mark and rendered at once.
    pub fn owner_mark(
        &self,
        list: &ListConfig,
        thread: &str,
        answer: Option<u64>,
        solved: bool,
    ) -> anyhow::Result<String> {
        let key = list.key();
        let (t, accepted) = qa::owner_target(&self.store, key, thread, answer)?
            .map_err(|why| anyhow::anyhow!("{}: {why}: {thread}", list.address))?;
        let mark = crate::store::QaOwnerMark {
            at_ms: crate::clock::now_ms(),
            solved,
            accepted: accepted.filter(|_| solved),
        };
        self.store.add_qa_owner_mark(key, t.id, mark)?;
        self.update(list)?;
        Ok(match (solved, accepted) {
            (true, Some(a)) => format!(
                "thread {} marked solved, message {a} the accepted answer\n",
                t.id
            ),
            (true, None) => format!("thread {} marked solved\n", t.id),
            (false, _) => format!("thread {} reopened\n", t.id),
        })
    }

    /// A thread's solved state from the marks of its messages (and `extra`, one not stored
    /// yet) and its owners' marks.
    fn settle(
        &self,
        key: &str,
        t: &ArchThread,
        extra: Option<&ArchMsg>,
        ix: &Index,
    ) -> anyhow::Result<Option<crate::store::Solved>> {
        let mut marks = Vec::new();
        for s in &t.seqs {
            if let Some(m) = ix.msg(*s)? {
                if let Some(q) = &m.qa {
                    marks.push((m.date_ms, q.solved, q.accepted));
                }
            }
        }
        if let Some(q) = extra.and_then(|m| m.qa.as_ref().map(|q| (m.date_ms, q))) {
            marks.push((q.0, q.1.solved, q.1.accepted));
        }
        let owner = self.store.qa_owner_marks(key, t.id)?;
        Ok(qa::fold(&marks, &owner))
    }

    /// Every thread of a list as laid out on its page: (thread, [(message, placement)]).
    pub fn threads(&self, list: &ListConfig) -> anyhow::Result<Vec<(ArchThread, Layout)>> {
        let key = list.key();
        // Index what is not indexed yet (without rendering: this is for inspection), as
        // the one writer: an update indexing the same posts at the same time would add
        // them to their threads twice.
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.store.archived_upto(key)?;
        let upto = self.store.last_seq(key)?;
        let mut touched = Touched::default();
        let start = if from == 0 { 1 } else { from + 1 };
        let mut ix = Index::new(&self.store, key);
        self.index_range(list, start, upto, &mut touched, &mut ix)?;
        let mut out = Vec::new();
        let mut all: Vec<ArchThread> =
            self.store.arch_threads_rev(key).collect::<Result<_, _>>()?;
        all.reverse();
        for t in all {
            if t.merged_into.is_some() {
                continue;
            }
            let laid = self.layout(key, &t)?;
            out.push((t, laid));
        }
        Ok(out)
    }

    /// A thread's messages in display order, with their parents.
    fn layout(&self, key: &str, t: &ArchThread) -> anyhow::Result<Vec<(ArchMsg, Placed)>> {
        let mut msgs: HashMap<u64, ArchMsg> = HashMap::new();
        for s in &t.seqs {
            if let Some(m) = self.store.arch_msg(key, *s)? {
                msgs.insert(*s, m);
            }
        }
        let input: Vec<threading::Msg> = msgs
            .values()
            .map(|m| threading::Msg {
                key: m.seq,
                message_id: m.message_id.clone(),
                references: m.refs.clone(),
                subject: m.subject.clone(),
                date_ms: m.date_ms,
            })
            .collect();
        let opts = threading::Options {
            subject_window_ms: Some(self.window_ms()),
        };
        let mut out = Vec::with_capacity(input.len());
        for group in threading::thread(&input, &opts) {
            for p in group {
                if let Some(m) = msgs.remove(&p.key) {
                    out.push((m, p));
                }
            }
        }
        Ok(out)
    }
}

/// One rendered message of a thread page, and what the search index keeps of it.
struct MessageView {
    ctx: minijinja::Value,
    text: String,
}

impl Site<'_> {
    fn key(&self) -> &str {
        self.list.key()
    }

    /// A date as readers see it: in the list's time zone and language.
    fn date(&self, ms: i64) -> String {
        self.arc
            .tpl
            .date_label(self.lang, local(ms, self.list.timezone))
    }

    fn base_ctx(&self) -> (minijinja::Value, minijinja::Value, &'static str) {
        let list = context! {
            name => self.list.name.clone(),
            description => self.list.description.clone(),
        };
        (list, self.arc.tpl.texts(self.lang), self.lang.code())
    }

    fn write(&self, rel: &str, bytes: &[u8], stats: &mut Stats) -> anyhow::Result<()> {
        let p = self.dir.join(rel);
        if write_if_changed(&p, bytes).with_context(|| format!("cannot write {}", p.display()))? {
            stats.files_written += 1;
        }
        Ok(())
    }

    fn page(
        &self,
        rel: &str,
        tpl: &str,
        root: &str,
        extra: minijinja::Value,
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
        let (list, t, lang) = self.base_ctx();
        let ctx = context! { list, t, lang, root, ..extra };
        let html = self.arc.tpl.render(tpl, ctx).map_err(anyhow::Error::msg)?;
        stats.pages += 1;
        self.write(rel, html.as_bytes(), stats)
    }

    /// Renders what an indexing pass touched. `merge`: extend the search files (an
    /// incremental update) rather than replace them (a rebuild).
    fn render(&self, touched: &Touched, merge: bool) -> anyhow::Result<Stats> {
        let mut stats = Stats {
            messages: touched.messages,
            threads: touched.threads.len(),
            ..Stats::default()
        };
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        for (name, bytes) in &self.arc.tpl.statics {
            self.write(name, bytes, &mut stats)?;
        }
        self.page("search.html", "search.html", "", context! {}, &mut stats)?;

        // Thread pages, in parallel: each parses and renders its own messages. The threads
        // beside a new or merged one are rendered again for their previous/next links.
        let mut ids = touched.threads.clone();
        for id in &touched.neighbours {
            for later in [false, true] {
                if let Some(t) = self.arc.store.arch_thread_beside(self.key(), *id, later)? {
                    ids.insert(t.id);
                }
            }
        }
        let ids: Vec<u64> = ids.into_iter().collect();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = ids.len().div_ceil(workers).max(1);
        let results: Vec<anyhow::Result<(Stats, search::Batch)>> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> anyhow::Result<(Stats, search::Batch)> {
                        let mut st = Stats::default();
                        let mut batch = search::Batch::default();
                        for id in part {
                            self.render_thread(*id, touched, &mut batch, &mut st)?;
                        }
                        Ok((st, batch))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a rendering thread panicked")))
                })
                .collect()
        });
        let mut batch = search::Batch::default();
        for r in results {
            let (st, b) = r?;
            stats.pages += st.pages;
            stats.files_written += st.files_written;
            batch.extend(b);
        }
        let w = |p: &Path, b: &[u8]| write_if_changed(p, b);
        stats.files_written += batch
            .write(&self.dir, merge, &w)
            .with_context(|| format!("cannot write the search index in {}", self.dir.display()))?;

        let months = self.arc.store.arch_months(self.key())?;
        let names: Vec<&str> = months.iter().map(|(m, _)| m.as_str()).collect();
        for m in &touched.months {
            self.render_month(m, &names, &mut stats)?;
        }
        self.render_front(&months, &mut stats)?;
        self.render_feed(&mut stats)?;
        if !touched.threads.is_empty() || !merge {
            self.render_tags_and_figures(touched, merge, &mut stats)?;
        }
        Ok(stats)
    }

    fn thread_url(id: u64) -> String {
        format!("t/{id}.html")
    }

    fn render_thread(
        &self,
        id: u64,
        touched: &Touched,
        batch: &mut search::Batch,
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
        let key = self.key();
        let Some(t) = self.arc.store.arch_thread(key, id)? else {
            return Ok(());
        };
        let rel = format!("t/{id}.html");
        if let Some(target) = t.merged_into {
            batch.remove_thread(id);
            let target_t = self.arc.resolve(key, target)?;
            let (tid, subj) = match &target_t {
                Some(tt) => (tt.id, display_subject(self.list, &tt.subject)),
                None => (target, String::new()),
            };
            let extra = context! { target => format!("{tid}.html"), target_subject => subj };
            return self.page(&rel, "moved.html", "../", extra, stats);
        }
        let laid = self.arc.layout(key, &t)?;
        let thread_subject = display_subject(self.list, &t.subject);
        let anchors: HashMap<u64, (String, String)> = laid
            .iter()
            .map(|(m, _)| (m.seq, (format!("m{}", m.seq), m.author.clone())))
            .collect();
        let accepted = t.solved.as_ref().and_then(|s| s.accepted);
        let mut views = Vec::with_capacity(laid.len());
        let mut json_ld = None;
        // For the search index: each message's own words, and its subject when it differs
        // from the question's (searched, not shown), addresses hidden as on the page.
        let plain = |s: &str| {
            self.privacy
                .text(&threading::strip_reply_markers(&display_subject(
                    self.list, s,
                )))
                .into_owned()
        };
        let question = plain(&t.subject);
        let mut texts: Vec<(String, String, bool)> = Vec::with_capacity(laid.len());
        // "Digitally signed, signature not published" is said once per thread.
        let mut signed_noted = false;
        for (m, p) in &laid {
            let v = self.render_message(
                m,
                p,
                &anchors,
                (&thread_subject, accepted, &mut signed_noted),
                touched,
                stats,
            )?;
            let own = plain(&m.subject);
            let extra = if own.to_lowercase() == question.to_lowercase() {
                String::new()
            } else {
                own
            };
            if self.list.archive == crate::config::ArchiveMode::Public && t.solved.is_some() {
                json_ld.get_or_insert_with(Vec::new).push((
                    m.seq,
                    m.author.clone(),
                    m.date_ms,
                    v.text.clone(),
                ));
            }
            texts.push((v.text, extra, touched.search.contains(&m.seq)));
            views.push(v.ctx);
        }
        let question_ld = json_ld.map(|msgs| qa_page_json(&thread_subject, t.id, accepted, &msgs));
        batch.add_thread(search::ThreadInput {
            id,
            subject: &question,
            messages: texts
                .iter()
                .map(|(text, extra, new)| search::MessageInput {
                    text,
                    extra,
                    new: *new,
                })
                .collect(),
            state: search::thread_state(&t),
            date: self
                .arc
                .tpl
                .day_label(self.lang, local(t.first_ms, self.list.timezone)),
            url: Site::thread_url(id),
            tags: &t.tags,
        });
        // Previous and next thread (in the order they started), by their question.
        let beside = |later: bool| -> anyhow::Result<Option<minijinja::Value>> {
            Ok(self.arc.store.arch_thread_beside(key, id, later)?.map(|n| {
                context! {
                    url => format!("{}.html", n.id),
                    subject => display_subject(self.list, &n.subject),
                }
            }))
        };
        // A long thread opens with who wrote when, each a link to the message.
        let overview: Vec<minijinja::Value> = laid
            .iter()
            .map(|(m, p)| {
                context! {
                    anchor => format!("m{}", m.seq),
                    author => m.author.clone(),
                    date => self.date(m.date_ms),
                    date_iso => iso_date(m.date_ms),
                    depth => p.depth.min(6),
                    accepted => accepted == Some(m.seq),
                }
            })
            .collect();
        let month = laid
            .first()
            .map(|(m, _)| m.month.clone())
            .unwrap_or_else(|| month_of(t.first_ms, self.list.timezone));
        let extra = context! {
            thread => context! {
                subject => thread_subject,
                count => laid.len(),
                state => qa::state(&t),
                answers => qa::answers(&t),
                tags => t.tags.clone(),
                accepted => accepted.and_then(|a| anchors.get(&a)).map(|(anchor, author)| {
                    context! { anchor => anchor.clone(), author => author.clone() }
                }),
                json_ld => question_ld,
                month_url => format!("../{month}/index.html"),
                month_label => self.arc.tpl.month_label(self.lang, &month),
                prev => beside(false)?,
                next => beside(true)?,
                overview => (laid.len() >= OVERVIEW_FROM).then_some(overview),
            },
            messages => views,
        };
        self.page(&rel, "thread.html", "../", extra, stats)
    }

    fn render_message(
        &self,
        m: &ArchMsg,
        p: &Placed,
        anchors: &HashMap<u64, (String, String)>,
        (thread_subject, accepted, signed_noted): (&str, Option<u64>, &mut bool),
        touched: &Touched,
        stats: &mut Stats,
    ) -> anyhow::Result<MessageView> {
        let key = self.key();
        let raw = self.arc.store.raw(key, m.seq)?.unwrap_or_default();
        let seq = m.seq;
        let href = move |_i: usize, name: &str| format!("../a/{seq}/{}", stored_name(name));
        let lean = render::without_trace(&raw);
        let parsed = MessageParser::default().parse(&lean[..]);
        let (body, text, problems, attachments) = match &parsed {
            Some(msg) => {
                let r = render::render(msg, self.privacy, &self.labels, &href);
                (r.html, r.text, r.problems, r.attachments)
            }
            None => (
                String::new(),
                String::new(),
                vec![self.labels.problem_unreadable.clone()],
                Vec::new(),
            ),
        };
        if touched.assets.contains(&seq) {
            let scrubbed = render::scrub_parsed(&lean, parsed.as_ref(), self.privacy);
            self.write(&format!("m/{seq}.eml"), &scrubbed, stats)?;
            for a in &attachments {
                self.write(
                    &format!("a/{seq}/{}", stored_name(&a.file_name)),
                    &a.bytes,
                    stats,
                )?;
            }
        }
        let problems: Vec<String> = problems
            .into_iter()
            .filter(|p| {
                *p != self.labels.signature_omitted || !std::mem::replace(signed_noted, true)
            })
            .collect();
        let subject = display_subject(self.list, &m.subject);
        let subject_differs =
            threading::base_subject(&subject) != threading::base_subject(thread_subject);
        let parent = p.parent.and_then(|ps| anchors.get(&ps)).map(|(a, who)| {
            context! { anchor => a.clone(), author => who.clone() }
        });
        let ctx = context! {
            anchor => format!("m{seq}"),
            depth => p.depth.min(12),
            author => m.author.clone(),
            date => self.date(m.date_ms),
            date_iso => iso_date(m.date_ms),
            subject,
            subject_differs,
            parent,
            raw_url => format!("../m/{seq}.eml"),
            accepted => accepted == Some(seq),
            body,
            problems,
        };
        Ok(MessageView { ctx, text })
    }

    fn render_month(&self, month: &str, names: &[&str], stats: &mut Stats) -> anyhow::Result<()> {
        let key = self.key();
        let rows = self.arc.store.arch_month(key, month)?;
        let mut threads = Vec::new();
        let mut seqs: Vec<(u64, i64)> = Vec::new();
        for (id, n) in &rows {
            let Some(t) = self.arc.store.arch_thread(key, *id)? else {
                continue;
            };
            for s in &t.seqs {
                if let Some(m) = self.arc.store.arch_msg(key, *s)? {
                    if m.month == month {
                        seqs.push((m.seq, m.date_ms));
                    }
                }
            }
            threads.push((t, *n));
        }
        threads.sort_by_key(|(t, _)| std::cmp::Reverse((t.last_ms, t.id)));
        let mut list = Vec::new();
        for (t, n) in &threads {
            let month = context! {
                in_month => n,
                first => self.date(t.first_ms),
                first_iso => iso_date(t.first_ms),
            };
            list.push(minijinja::value::merge_maps([
                month,
                self.thread_entry(t, "../")?,
            ]));
        }
        let pos = names.iter().position(|m| *m == month);
        let near = |i: Option<usize>| {
            i.and_then(|i| names.get(i)).map(|m| {
                context! { url => format!("../{m}/index.html"), label => self.arc.tpl.month_label(self.lang, m) }
            })
        };
        let prev = near(pos.and_then(|p| p.checked_sub(1)));
        let next = near(pos.map(|p| p + 1));
        let messages: u32 = rows.iter().map(|(_, n)| n).sum();
        let extra = context! {
            month => context! {
                label => self.arc.tpl.month_label(self.lang, month),
                threads => threads.len(),
                messages,
                mbox => format!("{month}.mbox"),
                prev,
                next,
            },
            threads => list,
        };
        self.page(
            &format!("{month}/index.html"),
            "month.html",
            "../",
            extra,
            stats,
        )?;

        // The month's mbox, from the downloads (addresses already removed), in seq order.
        seqs.sort();
        let mut out = Vec::new();
        for (seq, date) in seqs {
            let p = self.dir.join(format!("m/{seq}.eml"));
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(_) => {
                    let raw = self.arc.store.raw(key, seq)?.unwrap_or_default();
                    render::scrub_raw(&raw, self.privacy)
                }
            };
            mbox::append(&mut out, &bytes, date);
        }
        self.write(&format!("{month}/{month}.mbox"), &out, stats)
    }

    fn render_front(
        &self,
        months: &[(String, Vec<(u64, u32)>)],
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
        let key = self.key();
        let mut ids: BTreeSet<u64> = BTreeSet::new();
        for (_, ts) in months.iter().rev() {
            ids.extend(ts.iter().map(|(t, _)| *t));
            if ids.len() >= FRONT_THREADS * 2 {
                break;
            }
        }
        let mut threads = Vec::new();
        for id in ids {
            if let Some(t) = self.arc.store.arch_thread(key, id)? {
                if t.merged_into.is_none() {
                    threads.push(t);
                }
            }
        }
        threads.sort_by_key(|t| std::cmp::Reverse((t.last_ms, t.id)));
        threads.truncate(FRONT_THREADS);
        let mut list = Vec::new();
        for t in &threads {
            list.push(self.thread_entry(t, "")?);
        }
        // Questions nobody answered yet (older than a day: a new one may just be waiting),
        // and the recently solved, from the latest months' threads.
        let mut recent: BTreeSet<u64> = BTreeSet::new();
        for (_, ts) in months.iter().rev() {
            recent.extend(ts.iter().map(|(t, _)| *t));
            if recent.len() >= FRONT_SCAN {
                break;
            }
        }
        let day_ago = crate::clock::now_ms() - 86_400_000;
        let (mut open, mut solved) = (Vec::new(), Vec::new());
        for id in recent {
            let Some(t) = self.arc.store.arch_thread(key, id)? else {
                continue;
            };
            if t.merged_into.is_some() {
                continue;
            }
            match qa::state(&t) {
                qa::State::Open if t.first_ms < day_ago && !t.root_is_reply => open.push(t),
                qa::State::Solved => solved.push(t),
                _ => {}
            }
        }
        open.sort_by_key(|t| std::cmp::Reverse((t.first_ms, t.id)));
        open.truncate(FRONT_QA);
        solved.sort_by_key(|t| std::cmp::Reverse(t.solved.as_ref().map_or(0, |s| s.at_ms)));
        solved.truncate(FRONT_QA);
        let entries = |ts: Vec<ArchThread>| -> anyhow::Result<Vec<minijinja::Value>> {
            ts.iter().map(|t| self.thread_entry(t, "")).collect()
        };
        let open = entries(open)?;
        let solved = entries(solved)?;
        let month_list: Vec<minijinja::Value> = months
            .iter()
            .rev()
            .map(|(m, ts)| {
                context! {
                    url => format!("{m}/index.html"),
                    label => self.arc.tpl.month_label(self.lang, m),
                    threads => ts.len(),
                    messages => ts.iter().map(|(_, n)| *n as u64).sum::<u64>(),
                }
            })
            .collect();
        let extra = context! { threads => list, months => month_list, open, solved };
        self.page("index.html", "index.html", "", extra, stats)
    }

    /// The tag pages (`tags/index.html`, `tags/<tag>.html` for the tags of the touched
    /// threads, or all of them on a rebuild) and `stats.html`, from one read of the thread
    /// index.
    fn render_tags_and_figures(
        &self,
        touched: &Touched,
        merge: bool,
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
        let key = self.key();
        let mut threads: Vec<ArchThread> = Vec::new();
        for t in self.arc.store.arch_threads_rev(key) {
            let t = t?;
            if t.merged_into.is_none() {
                threads.push(t);
            }
        }
        let mut by_tag: BTreeMap<&str, Vec<&ArchThread>> = BTreeMap::new();
        for t in &threads {
            for tag in &t.tags {
                by_tag.entry(tag.as_str()).or_default().push(t);
            }
        }
        let wanted: BTreeSet<&str> = if merge {
            threads
                .iter()
                .filter(|t| touched.threads.contains(&t.id))
                .flat_map(|t| t.tags.iter().map(String::as_str))
                .collect()
        } else {
            by_tag.keys().copied().collect()
        };
        for tag in wanted {
            let Some(ts) = by_tag.get(tag) else {
                continue;
            };
            let mut list = Vec::with_capacity(ts.len());
            for t in ts {
                list.push(self.thread_entry(t, "../")?);
            }
            let extra = context! { tag => tag, threads => list };
            self.page(&format!("tags/{tag}.html"), "tag.html", "../", extra, stats)?;
        }
        let all: Vec<minijinja::Value> = by_tag
            .iter()
            .map(|(tag, ts)| context! { name => *tag, count => ts.len() })
            .collect();
        self.page(
            "tags/index.html",
            "tags.html",
            "../",
            context! { tags => all },
            stats,
        )?;
        let figures: Vec<minijinja::Value> = qa::figures(&threads, |ms| month_of(ms, self.list.timezone))
            .into_iter()
            .map(|f| {
                let pct = |n: usize| (n * 100).checked_div(f.questions).unwrap_or(0);
                context! {
                    label => self.arc.tpl.month_label(self.lang, &f.month),
                    questions => f.questions,
                    answered => f.answered,
                    answered_pct => pct(f.answered),
                    solved => f.solved,
                    solved_pct => pct(f.solved),
                    median => f.median_first_answer_min,
                    tags => f.tags.iter().map(|(t, n)| context! { name => t, count => n }).collect::<Vec<_>>(),
                }
            })
            .collect();
        self.page(
            "stats.html",
            "stats.html",
            "",
            context! { months => figures },
            stats,
        )
    }

    /// The name of who asked a thread's question (its first message's author).
    fn question_author(&self, t: &ArchThread) -> anyhow::Result<String> {
        let first = t.seqs.iter().copied().min().unwrap_or(t.id);
        Ok(self
            .arc
            .store
            .arch_msg(self.key(), first)?
            .map(|m| m.author)
            .unwrap_or_default())
    }

    /// A thread as the front, month and tag pages list it; `root` leads from the page to
    /// the list's folder.
    fn thread_entry(&self, t: &ArchThread, root: &str) -> anyhow::Result<minijinja::Value> {
        Ok(context! {
            url => format!("{root}{}", Site::thread_url(t.id)),
            subject => display_subject(self.list, &t.subject),
            author => self.question_author(t)?,
            count => t.seqs.len(),
            state => qa::state(t),
            answers => qa::answers(t),
            tags => t.tags.clone(),
            last => self.date(t.last_ms),
            last_iso => iso_date(t.last_ms),
        })
    }

    fn render_feed(&self, stats: &mut Stats) -> anyhow::Result<()> {
        let key = self.key();
        let mut entries = Vec::new();
        let mut updated = 0i64;
        for t in self.arc.store.arch_threads_rev(key) {
            let t = t?;
            if t.merged_into.is_some() {
                continue;
            }
            let first = t.seqs.iter().copied().min().unwrap_or(t.id);
            let Some(m) = self.arc.store.arch_msg(key, first)? else {
                continue;
            };
            let raw = self.arc.store.raw(key, first)?.unwrap_or_default();
            let summary = MessageParser::default()
                .parse(&raw[..])
                .map(|msg| {
                    render::render(&msg, self.privacy, &self.labels, &|_, _| String::new()).text
                })
                .unwrap_or_default();
            let summary: String = summary.split_whitespace().collect::<Vec<_>>().join(" ");
            let summary: String = summary.chars().take(400).collect();
            updated = updated.max(t.last_ms);
            let year = month_of(t.first_ms, self.list.timezone)
                .get(..4)
                .unwrap_or("2026")
                .to_string();
            entries.push(context! {
                id => format!("tag:{},{year}:{}/t/{}", self.list.domain(), self.list.local(), t.id),
                subject => display_subject(self.list, &t.subject),
                author => m.author,
                published => iso_date(t.first_ms),
                updated => iso_date(t.last_ms),
                url => Site::thread_url(t.id),
                summary,
            });
            if entries.len() >= FEED_ENTRIES {
                break;
            }
        }
        let base = self
            .list
            .archive_url
            .as_deref()
            .map(|u| format!("{}/", u.trim_end_matches('/')))
            .unwrap_or_default();
        let extra = context! {
            feed_id => format!("tag:{},2026:{}", self.list.domain(), self.list.local()),
            updated => iso_date(updated),
            base,
            entries,
        };
        self.page("atom.xml", "atom.xml", "", extra, stats)
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
