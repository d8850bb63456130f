//! The archive's search: a static index of *threads*, searched in the browser, no server.
//!
//! Written by hand rather than with pagefind or tinysearch: those index finished HTML pages
//! (every update re-reads the site), ship a WebAssembly runtime and know nothing of threads,
//! answers or quoted text; a list archive needs an index that a new mail extends in a few
//! small files.
//!
//! # What is indexed
//!
//! One document per thread: its question's subject, and the authors' own words of every
//! message (quoted text, attribution lines and signatures left out by the renderer, see
//! `render::Rendered::text`). Author names are not indexed, and every whitespace-separated
//! chunk holding an `@` is dropped (the renderer already turned addresses into `…@…` or
//! `jan.peeters@…`; dropping the chunk keeps even the local part out), so no address and
//! no name-in-an-address reaches a search file, snippets included.
//!
//! Terms are folded the same way in Rust and in `static/search.js`: Unicode NFKD, combining
//! marks removed, lower case (`cliënt` → `client`, `Één` → `een`), split on anything that is
//! not a letter or digit, 2 to 40 characters, and Dutch and English stopwords (after folding,
//! so `één` is `een` and is one) dropped at both ends.
//!
//! # Files (in `search/`, each a script `VB.f("name", data);`, so that it also loads from
//! `file://`, where a page may not fetch files)
//!
//! - `meta.js`: format, thread count, total body length, the split shards, the stopwords
//!   and the ranking constants (the browser takes them from here, so Rust and JavaScript
//!   cannot disagree);
//! - `t-<prefix>.js`: the postings of the terms starting with that prefix (2 characters;
//!   a shard over [`SPLIT_BYTES`] is split by one more character, `t-<prefix>-.js` then holds
//!   the term equal to the prefix). A posting list is `[id, code, Δid, code, ...]`, the
//!   code being `body_tf * 4 + min(subject_tf, 3)`;
//! - `n-<k>.js`: per thread with id in `k*THREADS_PER_FILE ..`: `[Δid, body length, state, ...]`;
//! - `x/<id>.js`: what a result line shows: subject (no `Re:`), answers, state, date, link,
//!   and the text snippets are cut from (capped).
//!
//! A query loads `meta.js`, one term file per word, the `n-` files of the threads that
//! match every word, and the `x/` files of the page shown (20 results).
//!
//! # Ranking
//!
//! BM25F over threads, subject weighted above body:
//! `tf' = SUBJECT_WEIGHT * subject_tf + body_tf / (1 - B + B * dl / avgdl)`,
//! `score = Σ_terms idf * tf' * (K1 + 1) / (tf' + K1)`, `idf = ln(1 + (N - df + 0.5) / (df + 0.5))`;
//! a result must contain every word (the last one also as a prefix of a longer word, at
//! [`PREFIX_WEIGHT`]). Then `rank = score * (1 + STATE_BOOST * state)` with state 0 open, 1
//! answered, 2 solved: at equal relevance solved threads come first, then answered ones,
//! and a thread 10 % more relevant still beats one a step "better". Ties (ranks equal to six
//! decimals) go to the newer thread.
//!
//! # Updates
//!
//! A rebuild writes every file anew (and removes the rest). An update gets the threads it
//! touched with their whole text and the terms of their new messages; it rewrites only the
//! term files of those terms, the `n-` file and `x/` file of each thread, and `meta.js`
//! (each only when its bytes change).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The index format; an archive with another one is rebuilt on the next update.
pub const FORMAT: u32 = 2;
/// Results per page.
pub const PAGE_SIZE: usize = 20;
/// BM25 saturation and length normalisation.
pub const K1: f64 = 1.2;
pub const B: f64 = 0.75;
/// A subject occurrence counts as this many body occurrences (not length-normalised).
pub const SUBJECT_WEIGHT: f64 = 3.0;
/// `rank = score * (1 + STATE_BOOST * state)`.
pub const STATE_BOOST: f64 = 0.1;
/// A word that only starts with the last query word counts this much.
pub const PREFIX_WEIGHT: f64 = 0.5;
/// The last query word is also a prefix when it has this many characters or more, of at
/// most this many longer words (the most frequent).
pub const PREFIX_MIN_CHARS: usize = 3;
pub const MAX_EXPANSIONS: usize = 50;
/// Thread ids per `n-` file.
pub const THREADS_PER_FILE: u64 = 2048;
/// A term file larger than this is split by one more character.
pub const SPLIT_BYTES: usize = 32 * 1024;
/// Snippet length, in characters.
pub const SNIPPET_CHARS: usize = 180;
/// What `x/` files keep for snippets, in bytes: of the question, of each answer, in all
/// (20 records a page stay well under 100 KB).
const QUESTION_BYTES: usize = 1200;
const ANSWER_BYTES: usize = 400;
const RECORD_BYTES: usize = 2400;
/// Longer runs of letters are not words (base64, hashes).
const MAX_TERM_CHARS: usize = 40;
const MAX_TF: u32 = (u32::MAX >> 2) - 1;

/// Thread states in the index (`n-` and `x/` files).
pub const OPEN: u8 = 0;
pub const ANSWERED: u8 = 1;
pub const SOLVED: u8 = 2;

/// Dutch stopwords (folded: `één` is `een`): articles, pronouns, prepositions,
/// conjunctions, auxiliaries and the most common adverbs. Words that are also English
/// content words (`door`, `die`, `men`, `want`, `mag`) are left out, since both lists
/// apply to every list.
const STOP_NL: &[&str] = &[
    "aan", "al", "alle", "alles", "als", "altijd", "andere", "ben", "bij", "daar", "daarom", "dan",
    "dat", "de", "der", "deze", "dit", "doch", "doen", "dus", "een", "eens", "en", "er", "ge",
    "geen", "geweest", "haar", "had", "heb", "hebben", "heeft", "hem", "het", "hier", "hij", "hoe",
    "hun", "iemand", "iets", "ik", "in", "is", "ja", "je", "jij", "jou", "jouw", "jullie", "kan",
    "kon", "kunnen", "maar", "me", "meer", "met", "mij", "mijn", "moet", "na", "naar", "nee",
    "niet", "niets", "nog", "nu", "of", "om", "omdat", "onder", "ons", "onze", "ook", "op", "over",
    "reeds", "te", "tegen", "toch", "toen", "tot", "uit", "uw", "van", "veel", "voor", "waar",
    "wanneer", "was", "wat", "we", "wel", "werd", "wie", "wij", "wil", "worden", "wordt", "zal",
    "ze", "zei", "zelf", "zich", "zij", "zijn", "zo", "zonder", "zou", "zouden",
];

/// English stopwords: articles, pronouns, prepositions, conjunctions, auxiliaries and the
/// most common adverbs (no content words: `man`, `page`, `file` stay searchable).
const STOP_EN: &[&str] = &[
    "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because",
    "been", "before", "being", "between", "both", "but", "by", "can", "could", "did", "do", "does",
    "doing", "each", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here",
    "hers", "him", "his", "how", "if", "in", "into", "is", "it", "its", "itself", "just", "me",
    "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such",
    "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you",
    "your", "yours",
];

fn stopwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| STOP_NL.iter().chain(STOP_EN).copied().collect())
}

/// Whether a folded term is a stopword.
pub fn is_stopword(term: &str) -> bool {
    stopwords().contains(term)
}

/// Folds text for comparison: NFKD, no combining marks, lower case.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Calls `f` with each folded part of a word (a word folds into one part, except when
/// folding brings out a separator, as in `ﬁ½`).
fn word_parts(word: &str, mut f: impl FnMut(&str)) {
    if word
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        f(word);
    } else {
        let folded = fold(word);
        for t in folded.split(|c: char| !c.is_alphanumeric()) {
            if !t.is_empty() {
                f(t);
            }
        }
    }
}

fn term_ok(t: &str) -> bool {
    let n = if t.is_ascii() {
        t.len()
    } else {
        t.chars().count()
    };
    (2..=MAX_TERM_CHARS).contains(&n) && !is_stopword(t)
}

/// The searchable terms of a text, in order, repeats included.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split(|c: char| !is_word_char(c)) {
        if !w.is_empty() {
            word_parts(w, |t| {
                if term_ok(t) {
                    out.push(t.to_string());
                }
            });
        }
    }
    out
}

/// The distinct searchable terms of a text.
pub fn terms(text: &str) -> BTreeSet<String> {
    tokens(text).into_iter().collect()
}

/// Text as the index may hold it: every whitespace-separated chunk with an `@` removed
/// (scrubbed addresses, `jan.peeters@…`, anything address-like), control characters
/// dropped, the labels of masked identifiers (`[telefoonnummer]`) left out, whitespace
/// collapsed.
pub fn clean(text: &str) -> String {
    let unlabelled;
    let text = if text.contains('[') {
        let mut t = text.to_string();
        for l in crate::redact::LABELS {
            t = t.replace(l, " ");
        }
        unlabelled = t;
        unlabelled.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    for w in text.split_whitespace().filter(|w| !w.contains('@')) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(w.chars().filter(|c| !c.is_control()));
    }
    out
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// A thread's state as the index stores it: the one thread lists show ([`super::qa::state`]).
pub fn thread_state(t: &crate::store::ArchThread) -> u8 {
    match super::qa::state(t) {
        super::qa::State::Solved => SOLVED,
        super::qa::State::Answered => ANSWERED,
        super::qa::State::Open => OPEN,
    }
}

// ---- the files -------------------------------------------------------------------------

/// What a result line shows (an `x/<id>.js` file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The question's subject without `Re:` and the list prefix.
    #[serde(rename = "s")]
    pub subject: String,
    /// Replies in the thread.
    #[serde(rename = "a")]
    pub answers: u32,
    #[serde(rename = "st")]
    pub state: u8,
    /// The question's day as readers see it ("7 jul. 2026").
    #[serde(rename = "d")]
    pub date: String,
    /// The thread page, relative to the list's folder.
    #[serde(rename = "u")]
    pub url: String,
    /// Text for snippets: the question's own words, then each answer's (capped).
    #[serde(rename = "t")]
    pub text: Vec<String>,
}

/// The index's global figures and settings (`meta.js`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub v: u32,
    /// Threads indexed, and the sum of their body lengths (avgdl = dl / n).
    pub n: u64,
    pub dl: u64,
    /// Prefixes whose term file is split by one more character.
    pub split: BTreeSet<String>,
    pub stop: Vec<String>,
    pub k1: f64,
    pub b: f64,
    pub ws: f64,
    pub boost: f64,
    pub pw: f64,
    pub pmin: usize,
    pub px: usize,
    pub range: u64,
    pub page: usize,
    pub snip: usize,
}

impl Meta {
    fn new(n: u64, dl: u64, split: BTreeSet<String>) -> Meta {
        let mut stop: Vec<String> = stopwords().iter().map(|s| s.to_string()).collect();
        stop.sort();
        Meta {
            v: FORMAT,
            n,
            dl,
            split,
            stop,
            k1: K1,
            b: B,
            ws: SUBJECT_WEIGHT,
            boost: STATE_BOOST,
            pw: PREFIX_WEIGHT,
            pmin: PREFIX_MIN_CHARS,
            px: MAX_EXPANSIONS,
            range: THREADS_PER_FILE,
            page: PAGE_SIZE,
            snip: SNIPPET_CHARS,
        }
    }
}

/// The term file a term lives in, as a key: its first two characters, longer while that
/// prefix is split; `<prefix>$` for a term equal to a split prefix.
pub fn shard_of(term: &str, split: &BTreeSet<String>) -> String {
    let chars: Vec<char> = term.chars().collect();
    let mut k = chars.len().min(2);
    loop {
        let p: String = chars[..k].iter().collect();
        if !split.contains(&p) {
            return p;
        }
        if k >= chars.len() {
            return p + "$";
        }
        k += 1;
    }
}

/// The file name part of a shard key: `[a-z0-9]` as they are, any other character as
/// `_<hex>_`, the `$` end mark as `-` (as `shardName()` in search.js). Never `/` or `.`.
pub fn shard_file_part(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if c == '$' {
            out.push('-');
        } else {
            out.push_str(&format!("_{:x}_", c as u32));
        }
    }
    out
}

/// An index file's name (`meta`, `t-co`, `n-0`, `x-12`) → its path under `search/`.
pub fn file_path(name: &str) -> String {
    match name.strip_prefix("x-") {
        Some(id) => format!("x/{id}.js"),
        None => format!("{name}.js"),
    }
}

fn script(name: &str, json: &str) -> String {
    format!("VB.f(\"{name}\",{json});\n")
}

/// The data of an index file (`VB.f("name",DATA);`).
pub fn file_data(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("VB.f(\"")?;
    let comma = rest.find("\",")?;
    let end = rest.rfind(");")?;
    rest.get(comma + 2..end)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let s = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(file_data(&s)?).ok()
}

/// Whether `dir/search/` holds an index of this format.
pub fn is_current(dir: &Path) -> bool {
    read_json::<Meta>(&dir.join("search/meta.js")).is_some_and(|m| m.v == FORMAT)
}

/// `[id, code, Δid, code, ...]` ↔ id → code.
fn encode_postings(p: &BTreeMap<u64, u32>, out: &mut String) {
    out.push('[');
    let mut last = 0u64;
    for (i, (id, code)) in p.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{},{code}", id - last));
        last = *id;
    }
    out.push(']');
}

fn decode_postings(flat: &[u64]) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    let mut id = 0u64;
    for pair in flat.chunks_exact(2) {
        id += pair[0];
        out.insert(id, pair[1].min(u64::from(u32::MAX)) as u32);
    }
    out
}

/// The code of a posting: body and subject occurrences.
pub fn posting_code(body_tf: u32, subject_tf: u32) -> u32 {
    body_tf.min(MAX_TF) * 4 + subject_tf.min(3)
}

type Postings = BTreeMap<String, BTreeMap<u64, u32>>;
/// A thread's (body length, state).
type Figures = (u32, u8);

fn term_fragment(term: &str, p: &BTreeMap<u64, u32>) -> String {
    let mut s = serde_json::to_string(term).unwrap_or_else(|_| "\"\"".into());
    s.push(':');
    encode_postings(p, &mut s);
    s
}

/// Splits a group of terms (all starting with `key`) into files under [`SPLIT_BYTES`],
/// adding the prefixes it splits to `split`. Returns (key, terms) per file.
fn plan(
    key: String,
    terms: Vec<(String, usize)>,
    split: &mut BTreeSet<String>,
    out: &mut Vec<(String, Vec<String>)>,
) {
    let total: usize = terms.iter().map(|(_, n)| n + 1).sum();
    if total <= SPLIT_BYTES || terms.len() < 2 || key.ends_with('$') {
        out.push((key, terms.into_iter().map(|(t, _)| t).collect()));
        return;
    }
    let k = key.chars().count();
    split.insert(key.clone());
    let mut groups: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    for (t, n) in terms {
        let child = if t.chars().count() <= k {
            format!("{key}$")
        } else {
            t.chars().take(k + 1).collect()
        };
        groups.entry(child).or_default().push((t, n));
    }
    for (child, ts) in groups {
        plan(child, ts, split, out);
    }
}

/// One thread as the renderer hands it to the index.
pub struct ThreadInput<'a> {
    pub id: u64,
    /// The subject as shown (list prefix and `Re:` removed); cleaned here.
    pub subject: &'a str,
    /// Each message, in display order.
    pub messages: Vec<MessageInput<'a>>,
    pub state: u8,
    pub date: String,
    pub url: String,
    /// The question's tags (`super::qa::tags_of`): indexed as the terms `#tag`, which a
    /// query's `#tag` words filter on.
    pub tags: &'a [String],
}

/// One message of a thread for the index.
#[derive(Debug, Clone, Copy)]
pub struct MessageInput<'a> {
    /// The author's own words (shown in snippets).
    pub text: &'a str,
    /// Words searched but not shown: the message's subject when it differs from the
    /// thread's.
    pub extra: &'a str,
    /// New to the index (its terms' postings are written).
    pub new: bool,
}

struct Entry {
    dl: u32,
    state: u8,
    record: Record,
    codes: HashMap<String, u32>,
    /// Terms whose posting must be (re)written.
    changed: HashSet<String>,
}

/// Additions to the index from one rendering pass.
#[derive(Default)]
pub struct Batch {
    threads: BTreeMap<u64, Entry>,
    /// Threads no longer listed (merged into another).
    removed: BTreeSet<u64>,
}

impl Batch {
    /// Adds (or replaces) a thread.
    pub fn add_thread(&mut self, t: ThreadInput) {
        let subject = clean(t.subject);
        let mut codes: HashMap<String, (u32, u32)> = HashMap::new();
        let subject_terms = tokens(&subject);
        for term in &subject_terms {
            codes.entry(term.clone()).or_default().1 += 1;
        }
        let mut dl = 0u32;
        let mut changed: HashSet<String> = HashSet::new();
        let mut text = Vec::new();
        let mut room = RECORD_BYTES;
        for (i, m) in t.messages.iter().enumerate() {
            let own = clean(m.text);
            let mut ts = tokens(&own);
            if !m.extra.is_empty() {
                ts.extend(tokens(&clean(m.extra)));
            }
            dl = dl.saturating_add(ts.len() as u32);
            for term in ts {
                if m.new {
                    changed.insert(term.clone());
                }
                codes.entry(term).or_default().0 += 1;
            }
            if room > 0 && !own.is_empty() {
                let mut seg = own;
                truncate_bytes(
                    &mut seg,
                    room.min(if i == 0 { QUESTION_BYTES } else { ANSWER_BYTES }),
                );
                room = room.saturating_sub(seg.len());
                text.push(seg);
            }
        }
        // Tags: a term no word can be (words never hold `#`), in no length or score.
        let tag_terms: Vec<String> = t.tags.iter().map(|t| tag_term(t)).collect();
        for term in &tag_terms {
            codes.insert(term.clone(), (0, 1));
        }
        if !changed.is_empty() {
            changed.extend(subject_terms);
            changed.extend(tag_terms);
        }
        let record = Record {
            subject,
            answers: t.messages.len().saturating_sub(1) as u32,
            state: t.state,
            date: t.date,
            url: t.url,
            text,
        };
        self.removed.remove(&t.id);
        self.threads.insert(
            t.id,
            Entry {
                dl,
                state: t.state,
                record,
                codes: codes
                    .into_iter()
                    .map(|(k, (b, s))| (k, posting_code(b, s)))
                    .collect(),
                changed,
            },
        );
    }

    /// A thread that is no longer listed (merged into another): its postings, figures and
    /// record go.
    pub fn remove_thread(&mut self, id: u64) {
        self.threads.remove(&id);
        self.removed.insert(id);
    }

    /// Adds another batch (from a parallel renderer).
    pub fn extend(&mut self, other: Batch) {
        for id in other.removed {
            self.remove_thread(id);
        }
        self.threads.extend(other.threads);
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty() && self.removed.is_empty()
    }

    /// Writes the batch into `dir/search/`. With `merge`, the touched files are read back
    /// and updated (an incremental update); without, every file is written anew and files
    /// of the index that are not written are removed (a rebuild). Returns files written.
    pub fn write(
        self,
        dir: &Path,
        merge: bool,
        write: &dyn Fn(&Path, &[u8]) -> std::io::Result<bool>,
    ) -> std::io::Result<usize> {
        let sdir = dir.join("search");
        std::fs::create_dir_all(sdir.join("x"))?;
        let mut written = 0usize;
        let mut put = |name: &str, json: &str| -> std::io::Result<()> {
            if write(&sdir.join(file_path(name)), script(name, json).as_bytes())? {
                written += 1;
            }
            Ok(())
        };
        let old_meta: Option<Meta> = if merge {
            read_json(&sdir.join("meta.js")).filter(|m: &Meta| m.v == FORMAT)
        } else {
            None
        };
        let mut split = old_meta.map(|m| m.split).unwrap_or_default();
        let Batch { threads, removed } = self;

        // Postings to set, by term.
        let mut set: Postings = BTreeMap::new();
        for (id, e) in &threads {
            for t in &e.changed {
                if let Some(code) = e.codes.get(t) {
                    set.entry(t.clone()).or_default().insert(*id, *code);
                }
            }
        }
        // Term files: (key, terms) to write, and files to remove afterwards.
        let mut files: Vec<(String, Postings)> = Vec::new();
        let mut stale: Vec<String> = Vec::new();
        if merge {
            let mut by_key: BTreeMap<String, Postings> = BTreeMap::new();
            for (t, p) in set {
                by_key.entry(shard_of(&t, &split)).or_default().insert(t, p);
            }
            for (key, add) in by_key {
                let name = format!("t-{}", shard_file_part(&key));
                let mut cur: Postings =
                    read_json::<BTreeMap<String, Vec<u64>>>(&sdir.join(file_path(&name)))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(t, flat)| (t, decode_postings(&flat)))
                        .collect();
                for (t, p) in add {
                    cur.entry(t).or_default().extend(p);
                }
                if !removed.is_empty() {
                    for p in cur.values_mut() {
                        p.retain(|id, _| !removed.contains(id));
                    }
                    cur.retain(|_, p| !p.is_empty());
                }
                let sizes: Vec<(String, usize)> = cur
                    .iter()
                    .map(|(t, p)| (t.clone(), term_fragment(t, p).len()))
                    .collect();
                let mut planned = Vec::new();
                plan(key.clone(), sizes, &mut split, &mut planned);
                if planned.len() > 1 || planned.first().is_some_and(|(k, _)| *k != key) {
                    stale.push(name);
                }
                for (k, ts) in planned {
                    let part: Postings = ts
                        .into_iter()
                        .filter_map(|t| cur.remove_entry(&t))
                        .collect();
                    files.push((k, part));
                }
            }
        } else {
            let mut by_two: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
            for (t, p) in &set {
                by_two
                    .entry(t.chars().take(2).collect())
                    .or_default()
                    .push((t.clone(), term_fragment(t, p).len()));
            }
            let mut planned = Vec::new();
            for (k, ts) in by_two {
                plan(k, ts, &mut split, &mut planned);
            }
            for (k, ts) in planned {
                let part: Postings = ts
                    .into_iter()
                    .filter_map(|t| set.remove_entry(&t))
                    .collect();
                files.push((k, part));
            }
        }
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for (key, postings) in &files {
            let name = format!("t-{}", shard_file_part(key));
            let mut json = String::from("{");
            for (i, (t, p)) in postings.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(&term_fragment(t, p));
            }
            json.push('}');
            put(&name, &json)?;
            keep.insert(file_path(&name));
        }

        // Per-thread figures, by file.
        let mut ranges: BTreeMap<u64, Vec<(u64, Option<Figures>)>> = BTreeMap::new();
        for (id, e) in &threads {
            ranges
                .entry(id / THREADS_PER_FILE)
                .or_default()
                .push((*id, Some((e.dl, e.state))));
        }
        for id in &removed {
            ranges
                .entry(id / THREADS_PER_FILE)
                .or_default()
                .push((*id, None));
        }
        let mut figures: BTreeMap<u64, BTreeMap<u64, Figures>> = BTreeMap::new();
        if merge {
            // Every file, for the totals; the touched ones are updated.
            for e in std::fs::read_dir(&sdir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(k) = name
                    .strip_prefix("n-")
                    .and_then(|r| r.strip_suffix(".js"))
                    .and_then(|r| r.parse::<u64>().ok())
                else {
                    continue;
                };
                let flat: Vec<u64> = read_json(&e.path()).unwrap_or_default();
                let mut m = BTreeMap::new();
                let mut id = k * THREADS_PER_FILE;
                for f in flat.chunks_exact(3) {
                    id += f[0];
                    m.insert(id, (f[1].min(u64::from(u32::MAX)) as u32, f[2] as u8));
                }
                figures.insert(k, m);
            }
        }
        for (k, changes) in &ranges {
            let m = figures.entry(*k).or_default();
            for (id, f) in changes {
                match f {
                    Some(f) => m.insert(*id, *f),
                    None => m.remove(id),
                };
            }
        }
        let (mut n, mut total_dl) = (0u64, 0u64);
        for (k, m) in &figures {
            n += m.len() as u64;
            total_dl += m.values().map(|(dl, _)| u64::from(*dl)).sum::<u64>();
            let name = format!("n-{k}");
            keep.insert(file_path(&name));
            if merge && !ranges.contains_key(k) {
                continue;
            }
            let mut json = String::from("[");
            let mut last = k * THREADS_PER_FILE;
            for (i, (id, (dl, st))) in m.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(&format!("{},{dl},{st}", id - last));
                last = *id;
            }
            json.push(']');
            put(&name, &json)?;
        }

        // Result lines.
        for (id, e) in &threads {
            let name = format!("x-{id}");
            let json = serde_json::to_string(&e.record).unwrap_or_else(|_| "{}".into());
            put(&name, &json)?;
            keep.insert(file_path(&name));
        }

        let meta = Meta::new(n, total_dl, split);
        put(
            "meta",
            &serde_json::to_string(&meta).unwrap_or_else(|_| "{}".into()),
        )?;
        keep.insert(file_path("meta"));

        // What no longer belongs: split term files, removed threads' records; in a rebuild
        // anything not written now (an older format's files too).
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if merge {
            for name in stale {
                remove(&sdir.join(file_path(&name)))?;
            }
            for id in &removed {
                remove(&sdir.join(file_path(&format!("x-{id}"))))?;
            }
        } else {
            for sub in ["", "x/"] {
                for e in std::fs::read_dir(sdir.join(sub))?.flatten() {
                    let rel = format!("{sub}{}", e.file_name().to_string_lossy());
                    if rel.ends_with(".js") && !keep.contains(&rel) {
                        remove(&e.path())?;
                    }
                }
            }
        }
        Ok(written)
    }
}

// ---- searching (the reference for search.js) -------------------------------------------

/// A word of a query: its folded term, and whether longer words starting with it count.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTerm {
    pub term: String,
    pub prefix: bool,
}

/// A tag's term in the index: `#` and the tag (tags are `[a-z0-9-]`, see `qa::tags_of`).
pub fn tag_term(tag: &str) -> String {
    format!("#{tag}")
}

/// The tags a query filters on: its words `#tag`, folded, trailing punctuation removed,
/// each once (as `queryTags()` in search.js). A `#word` that cannot be a tag filters on
/// nothing and finds nothing.
pub fn query_tags(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in q.split_whitespace() {
        if let Some(tag) = w.strip_prefix('#') {
            let tag = fold(tag.trim_end_matches([',', '.', ';', ':', '!', '?', ')']));
            if !tag.is_empty() && !out.contains(&tag) {
                out.push(tag);
            }
        }
    }
    out
}

/// The searchable words of a query: folded, stopwords dropped, each once; the last one
/// (of at least [`PREFIX_MIN_CHARS`]) also as a prefix. `#tag` words are filters
/// ([`query_tags`]), not words.
pub fn query_terms(q: &str) -> Vec<QueryTerm> {
    let mut seen = HashSet::new();
    let words: Vec<&str> = q
        .split_whitespace()
        .filter(|w| !w.starts_with('#'))
        .collect();
    let mut out: Vec<QueryTerm> = tokens(&words.join(" "))
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .map(|term| QueryTerm {
            term,
            prefix: false,
        })
        .collect();
    if let Some(last) = out.last_mut() {
        last.prefix = last.term.chars().count() >= PREFIX_MIN_CHARS;
    }
    out
}

/// The postings one query word matched: each matching term with its document frequency
/// and weight (1, or [`PREFIX_WEIGHT`] for a longer word), and thread → code.
pub type WordPostings = Vec<(f64, BTreeMap<u64, u32>)>;

/// The threads that have every word and every tag (`tags`: each tag's threads). `None`
/// when there is neither a word nor a tag.
pub fn candidates(words: &[WordPostings], tags: &[BTreeSet<u64>]) -> Option<BTreeSet<u64>> {
    let mut sets = words
        .iter()
        .map(|w| {
            w.iter()
                .flat_map(|(_, p)| p.keys())
                .copied()
                .collect::<BTreeSet<u64>>()
        })
        .chain(tags.iter().cloned());
    let mut out = sets.next()?;
    for has in sets {
        out.retain(|id| has.contains(id));
    }
    Some(out)
}

/// BM25F ranks of the threads that match every word and every tag, best first (see the
/// module docs): (thread, rank). `figures`: thread → (body length, state). Tags filter
/// and do not score: with tags and no words, every thread of those tags ranks by its
/// state, then the newest first.
pub fn rank(
    n: u64,
    total_dl: u64,
    words: &[WordPostings],
    tags: &[BTreeSet<u64>],
    figures: &HashMap<u64, (u32, u8)>,
) -> Vec<(u64, f64)> {
    let Some(candidates) = candidates(words, tags) else {
        return Vec::new();
    };
    let nf = n.max(1) as f64;
    let avgdl = (total_dl as f64 / nf).max(1.0);
    let mut out = Vec::new();
    for id in candidates {
        let Some((dl, state)) = figures.get(&id) else {
            continue;
        };
        let norm = 1.0 - B + B * f64::from(*dl) / avgdl;
        let mut score = 0.0;
        for w in words {
            let mut best: f64 = 0.0;
            for (weight, p) in w {
                let Some(code) = p.get(&id) else {
                    continue;
                };
                let df = p.len() as f64;
                let idf = (1.0 + (nf - df + 0.5) / (df + 0.5)).ln();
                let tf = SUBJECT_WEIGHT * f64::from(code & 3) + f64::from(code >> 2) / norm;
                best = best.max(weight * idf * tf * (K1 + 1.0) / (tf + K1));
            }
            score += best;
        }
        if words.is_empty() {
            score = 1.0;
        }
        out.push((id, score * (1.0 + STATE_BOOST * f64::from(*state))));
    }
    let key = |r: f64| (r * 1e6).round() as i64;
    out.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then(b.0.cmp(&a.0)));
    out
}

/// Whether a word of a text matches a query term.
fn matches(word: &str, terms: &[QueryTerm]) -> Option<usize> {
    let mut hit = None;
    word_parts(word, |part| {
        if hit.is_none() {
            hit = terms
                .iter()
                .position(|q| part == q.term || (q.prefix && part.starts_with(q.term.as_str())));
        }
    });
    hit
}

/// A snippet: the window of about [`SNIPPET_CHARS`] characters of one text that holds the
/// most distinct query words (then the most matches, then the earliest), cut at word
/// boundaries, `…` where it was cut; as pieces of (text, highlighted). Without any match:
/// the start of the first text.
pub fn snippet(texts: &[String], terms: &[QueryTerm], width: usize) -> Vec<(String, bool)> {
    const LEAD: usize = 30;
    // (text, start, distinct, matches)
    let mut best: Option<(usize, usize, usize, usize)> = None;
    let mut words_of: Vec<Vec<(usize, usize, bool)>> = Vec::new();
    for (ti, text) in texts.iter().enumerate() {
        let chars: Vec<char> = text.chars().collect();
        let mut words = Vec::new();
        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if !is_word_char(chars[i]) {
                i += 1;
                continue;
            }
            let s = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let w: String = chars[s..i].iter().collect();
            let m = matches(&w, terms);
            if let Some(t) = m {
                hits.push((s, i, t));
            }
            words.push((s, i, m.is_some()));
        }
        for (hs, _, _) in &hits {
            let start = hs.saturating_sub(LEAD);
            let inside: Vec<&(usize, usize, usize)> = hits
                .iter()
                .filter(|(s, e, _)| *s >= start && *e <= start + width)
                .collect();
            let distinct = inside.iter().map(|h| h.2).collect::<BTreeSet<_>>().len();
            let better = match best {
                None => true,
                Some((_, _, d, m)) => (distinct, inside.len()) > (d, m),
            };
            if better {
                best = Some((ti, start, distinct, inside.len()));
            }
        }
        words_of.push(words);
    }
    let (ti, mut start) = best.map(|b| (b.0, b.1)).unwrap_or((0, 0));
    let Some(text) = texts.get(ti) else {
        return Vec::new();
    };
    let chars: Vec<char> = text.chars().collect();
    // Start at a word: skip the rest of a cut word and the space after it.
    if start > 0 {
        while start < chars.len() && is_word_char(chars[start - 1]) && is_word_char(chars[start]) {
            start += 1;
        }
        while start < chars.len() && chars[start].is_whitespace() {
            start += 1;
        }
    }
    let mut end = (start + width).min(chars.len());
    if end < chars.len() && is_word_char(chars[end - 1]) && is_word_char(chars[end]) {
        let mut e = end;
        while e > start && is_word_char(chars[e - 1]) {
            e -= 1;
        }
        if e > start {
            end = e;
        }
    }
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut push = |s: String, hl: bool| {
        if s.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((last, false)) if !hl => last.push_str(&s),
            _ => out.push((s, hl)),
        }
    };
    if start > 0 {
        push("…".into(), false);
    }
    let mut pos = start;
    for (s, e, hit) in &words_of[ti] {
        if !*hit || *s < start || *e > end {
            continue;
        }
        push(chars[pos..*s].iter().collect(), false);
        push(chars[*s..*e].iter().collect(), true);
        pos = *e;
    }
    push(chars[pos..end].iter().collect(), false);
    if end < chars.len() {
        push("…".into(), false);
    }
    out
}

/// One result.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: u64,
    pub rank: f64,
    pub record: Option<Record>,
    pub snippet: Vec<(String, bool)>,
}

/// A page of results.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// Searches an index the way `static/search.js` does, through `load(name)` (the text of
/// an index file), remembering which files it loaded and their sizes: the reference the
/// browser test compares with, and how the bytes a query loads are measured.
pub struct Searcher<F: FnMut(&str) -> Option<String>> {
    load: F,
    cache: HashMap<String, Option<String>>,
    /// (file name, bytes) in the order loaded.
    pub loaded: Vec<(String, usize)>,
}

impl Searcher<Box<dyn FnMut(&str) -> Option<String>>> {
    /// A searcher over `dir/search/`.
    pub fn open(dir: &Path) -> Self {
        let sdir = dir.join("search");
        Searcher::new(Box::new(move |name: &str| {
            std::fs::read_to_string(sdir.join(file_path(name))).ok()
        }))
    }
}

impl<F: FnMut(&str) -> Option<String>> Searcher<F> {
    pub fn new(load: F) -> Self {
        Searcher {
            load,
            cache: HashMap::new(),
            loaded: Vec::new(),
        }
    }

    fn data<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        if !self.cache.contains_key(name) {
            let text = (self.load)(name);
            if let Some(t) = &text {
                self.loaded.push((name.to_string(), t.len()));
            }
            self.cache.insert(name.to_string(), text);
        }
        let text = self.cache.get(name)?.as_deref()?;
        serde_json::from_str(file_data(text)?).ok()
    }

    /// Page `page` (from 1) of the results for `q`.
    pub fn search(&mut self, q: &str, page: usize) -> Results {
        let terms = query_terms(q);
        let tags = query_tags(q);
        if terms.is_empty() && tags.is_empty() {
            return Results::default();
        }
        let Some(meta) = self.data::<Meta>("meta") else {
            return Results::default();
        };
        let mut tagged: Vec<BTreeSet<u64>> = Vec::new();
        for tag in &tags {
            let term = tag_term(tag);
            let name = format!("t-{}", shard_file_part(&shard_of(&term, &meta.split)));
            let file: BTreeMap<String, Vec<u64>> = self.data(&name).unwrap_or_default();
            match file.get(&term) {
                Some(flat) => tagged.push(decode_postings(flat).into_keys().collect()),
                None => return Results::default(),
            }
        }
        let mut words: Vec<WordPostings> = Vec::new();
        for qt in &terms {
            let key = shard_of(&qt.term, &meta.split);
            let name = format!("t-{}", shard_file_part(&key));
            let file: BTreeMap<String, Vec<u64>> = self.data(&name).unwrap_or_default();
            let mut w: WordPostings = Vec::new();
            if let Some(flat) = file.get(&qt.term) {
                w.push((1.0, decode_postings(flat)));
            }
            // Longer words, only when they are all in this file (the key is a prefix of the
            // term, not the term's own file of a split prefix).
            if qt.prefix && !key.ends_with('$') {
                let mut longer: Vec<(&String, &Vec<u64>)> = file
                    .iter()
                    .filter(|(t, _)| t.len() > qt.term.len() && t.starts_with(qt.term.as_str()))
                    .collect();
                longer.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
                for (_, flat) in longer.into_iter().take(MAX_EXPANSIONS) {
                    w.push((PREFIX_WEIGHT, decode_postings(flat)));
                }
            }
            if w.is_empty() {
                return Results::default();
            }
            words.push(w);
        }
        // The figures of the threads that have every word and tag.
        let candidates = candidates(&words, &tagged).unwrap_or_default();
        let ranges: BTreeSet<u64> = candidates.iter().map(|id| id / meta.range.max(1)).collect();
        let mut figures = HashMap::new();
        for k in ranges {
            let flat: Vec<u64> = self.data(&format!("n-{k}")).unwrap_or_default();
            let mut id = k * meta.range.max(1);
            for f in flat.chunks_exact(3) {
                id += f[0];
                figures.insert(id, (f[1].min(u64::from(u32::MAX)) as u32, f[2] as u8));
            }
        }
        let ranked = rank(meta.n, meta.dl, &words, &tagged, &figures);
        let total = ranked.len();
        let from = page.max(1).saturating_sub(1) * meta.page.max(1);
        let mut hits = Vec::new();
        for (id, r) in ranked.into_iter().skip(from).take(meta.page.max(1)) {
            let record: Option<Record> = self.data(&format!("x-{id}"));
            let snippet = record
                .as_ref()
                .map(|rec| snippet(&rec.text, &terms, meta.snip))
                .unwrap_or_default();
            hits.push(Hit {
                id,
                rank: r,
                record,
                snippet,
            });
        }
        Results { total, hits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_accents_and_case() {
        assert_eq!(fold("Cliënt ÉÉN Œuvre ﬁle"), "client een œuvre file");
        let t = terms("De cliënt vroeg: leefloon? (OCMW-Gent, 2026) a");
        for w in ["client", "vroeg", "leefloon", "ocmw", "gent", "2026"] {
            assert!(t.contains(w), "{w} in {t:?}");
        }
        assert!(!t.contains("a"), "one-letter words are not indexed");
        assert!(!t.contains("de"), "stopwords are not indexed");
        assert!(terms("é ü ø").is_empty(), "{:?}", terms("é ü ø"));
        assert_eq!(terms("cliënt"), terms("CLIENT"));
        assert_eq!(query_terms("Cliënt")[0].term, "client");
    }

    #[test]
    fn stopwords_after_folding() {
        for w in STOP_NL.iter().chain(STOP_EN) {
            assert_eq!(fold(w), *w, "stopwords are written folded");
            assert!(w.is_ascii());
        }
        // `één` folds to `een`, a stopword: a query of only stopwords has no words.
        assert!(query_terms("één").is_empty());
        assert!(query_terms("Één van de").is_empty());
        assert!(query_terms("the and of").is_empty());
        assert_eq!(
            query_terms("een cliënt met the leefloon"),
            vec![
                QueryTerm {
                    term: "client".into(),
                    prefix: false
                },
                QueryTerm {
                    term: "leefloon".into(),
                    prefix: true
                },
            ]
        );
        // Content words of one language that are stopwords in the other are kept.
        for w in ["door", "die", "men", "want", "man", "page"] {
            assert!(!is_stopword(w), "{w}");
        }
        assert_eq!(
            tokens("Eén huurwaarborg, één huurwaarborg"),
            ["huurwaarborg"; 2]
        );
    }

    #[test]
    fn clean_drops_addresses_and_names_in_them() {
        assert_eq!(
            clean("mail  jan.peeters@… of …@… <an@…>, of x@y.be\n bedankt"),
            "mail of of bedankt"
        );
    }

    #[test]
    fn shards_are_file_name_safe() {
        let none = BTreeSet::new();
        assert_eq!(shard_of("client", &none), "cl");
        assert_eq!(shard_file_part(&shard_of("œuvre", &none)), "_153_u");
        assert_eq!(shard_file_part("u153u"), "u153u");
        let split: BTreeSet<String> = ["cl".to_string(), "cli".to_string()].into();
        assert_eq!(shard_of("client", &split), "clie");
        assert_eq!(shard_of("cli", &split), "cli$");
        assert_eq!(shard_of("clan", &split), "cla");
        assert_eq!(shard_file_part("cli$"), "cli-");
        for t in ["../x", "a/b", "..", "é.", "x$"] {
            let f = shard_file_part(t);
            assert!(!f.contains(['/', '.', '\\', '$']), "{t}: {f}");
        }
        assert_eq!(file_path("x-12"), "x/12.js");
        assert_eq!(file_path("t-cl"), "t-cl.js");
    }

    fn figures(v: &[(u64, u32, u8)]) -> HashMap<u64, (u32, u8)> {
        v.iter().map(|(id, dl, st)| (*id, (*dl, *st))).collect()
    }

    fn word(p: &[(u64, u32, u32)]) -> WordPostings {
        vec![(
            1.0,
            p.iter()
                .map(|(id, b, s)| (*id, posting_code(*b, *s)))
                .collect(),
        )]
    }

    #[test]
    fn ranking_subject_above_body_rare_above_common() {
        // Thread 1 has the word in its subject, 2 twice in its body, 3 once.
        let f = figures(&[(1, 50, 0), (2, 50, 0), (3, 50, 0), (4, 50, 0)]);
        let r = rank(4, 200, &[word(&[(1, 0, 1), (2, 2, 0), (3, 1, 0)])], &[], &f);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3]);
        // A long thread mentioning it once ranks below a short one.
        let f = figures(&[(1, 1000, 0), (2, 20, 0)]);
        let r = rank(10, 1020, &[word(&[(1, 1, 0), (2, 1, 0)])], &[], &f);
        assert_eq!(r[0].0, 2);
        // Every word must match; the rarer word weighs more.
        let f = figures(&[(1, 50, 0), (2, 50, 0), (3, 50, 0)]);
        let common = word(&[(1, 3, 0), (2, 1, 0), (3, 1, 0)]);
        let rare = word(&[(2, 1, 0), (3, 1, 0)]);
        let r = rank(100, 150, &[common, rare], &[], &f);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [3, 2]);
        assert!(rank(3, 150, &[word(&[(1, 1, 0)]), word(&[(2, 1, 0)])], &[], &f).is_empty());
    }

    #[test]
    fn ranking_state_and_recency_break_ties() {
        // Equal relevance: solved, then answered, then open; among equals the newest.
        let f = figures(&[(1, 30, 2), (2, 30, 0), (3, 30, 1), (4, 30, 0), (5, 30, 1)]);
        let p = word(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 1, 0), (5, 1, 0)]);
        let r = rank(5, 150, &[p], &[], &f);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 5, 3, 4, 2]);
        // A clearly more relevant open thread beats a solved one.
        let f = figures(&[(1, 30, 2), (2, 30, 0)]);
        let r = rank(20, 600, &[word(&[(1, 1, 0), (2, 0, 1)])], &[], &f);
        assert_eq!(r[0].0, 2);
        // A prefix match counts less than the word itself.
        let f = figures(&[(1, 30, 0), (2, 30, 0)]);
        let w = vec![
            (1.0, BTreeMap::from([(1, posting_code(1, 0))])),
            (PREFIX_WEIGHT, BTreeMap::from([(2, posting_code(1, 0))])),
        ];
        let r = rank(10, 300, &[w], &[], &f);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2]);
    }

    fn qt(t: &str, prefix: bool) -> QueryTerm {
        QueryTerm {
            term: t.into(),
            prefix,
        }
    }

    fn render(pieces: &[(String, bool)]) -> String {
        pieces
            .iter()
            .map(|(s, hl)| if *hl { format!("[{s}]") } else { s.clone() })
            .collect()
    }

    #[test]
    fn snippets_highlight_the_best_window() {
        let texts = vec![
            "Heeft iemand ervaring met een cliënt?".to_string(),
            format!(
                "{} Voor een Client in budgetbegeleiding vroegen we leefloon aan, en de client kreeg het. {}",
                "Lange inleiding zonder de woorden. ".repeat(6),
                "Daarna nog veel tekst. ".repeat(6)
            ),
        ];
        let terms = vec![qt("client", false), qt("leefloon", true)];
        let s = render(&snippet(&texts, &terms, 120));
        // The answer has both words: its window wins over the question's single match.
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("[Client]") && s.contains("[leefloon]"), "{s}");
        assert!(!s.contains("cliënt"), "{s}");
        // Cut at word boundaries, within the width (plus the marks).
        let inner = s.trim_matches('…').replace(['[', ']'], "");
        assert!(inner.chars().count() <= 120, "{inner}");
        assert!(texts[1].contains(&inner), "{inner}");
        // Accents folded and prefixes: `cliënt` matches `client`, `leeflo` matches.
        let s = render(&snippet(&texts[..1], &[qt("client", false)], 120));
        assert_eq!(s, "Heeft iemand ervaring met een [cliënt]?");
        let s = render(&snippet(&texts, &[qt("budgetbeg", true)], 60));
        assert!(s.contains("[budgetbegeleiding]"), "{s}");
        // No match: the start of the question.
        let s = render(&snippet(&texts, &[qt("huur", false)], 20));
        assert_eq!(s, "Heeft iemand…");
        assert!(snippet(&[], &terms, 100).is_empty());
    }

    fn input<'a>(id: u64, subject: &'a str, msgs: &[(&'a str, bool)]) -> ThreadInput<'a> {
        ThreadInput {
            id,
            subject,
            messages: msgs
                .iter()
                .map(|(text, new)| {
                    // "subject|text": a message whose subject differs from the thread's.
                    let (extra, text) = text.split_once('|').unwrap_or(("", text));
                    MessageInput {
                        text,
                        extra,
                        new: *new,
                    }
                })
                .collect(),
            tags: &[],
            state: if msgs.len() > 1 { ANSWERED } else { OPEN },
            date: "2026-11-02".into(),
            url: format!("t/{id}.html"),
        }
    }

    /// Every file under search/, with its bytes.
    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for sub in ["search", "search/x"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
                if e.path().is_file() {
                    let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                    out.insert(name, std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn an_update_rewrites_only_its_files_and_equals_a_rebuild() {
        let inc = tempfile::tempdir().unwrap();
        let full = tempfile::tempdir().unwrap();
        let w = |p: &Path, b: &[u8]| super::super::write_if_changed(p, b);
        let q1 = "Leefloon voor een cliënt";
        let b1 = "Heeft iemand ervaring met leefloon en huurwaarborg?";
        let q2 = "Mmap en groff";
        let b2 = "Een vraag over mmap.";
        let b2m = "Mmap en groff|Een vraag over mmap.";
        let a1 = "Ja, vraag het OCMW naar de huurwaarborg.";
        let mut b = Batch::default();
        b.add_thread(input(1, q1, &[(b1, true)]));
        b.add_thread(input(2, q2, &[(b2, true)]));
        b.write(inc.path(), false, &w).unwrap();
        let before = snapshot(inc.path());
        // One answer to thread 1.
        let mut b = Batch::default();
        b.add_thread(input(1, q1, &[(b1, false), (a1, true)]));
        let n = b.write(inc.path(), true, &w).unwrap();
        let after = snapshot(inc.path());
        let changed: Vec<&String> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(n, changed.len());
        // Its words' term files (ja, vraag, ocmw, huurwaarborg; and the subject's), its
        // figures, its record and the totals; not thread 2's `mm`/`gr` files.
        for f in [
            "search/t-oc.js",
            "search/t-hu.js",
            "search/t-vr.js",
            "search/n-0.js",
            "search/x/1.js",
            "search/meta.js",
        ] {
            assert!(changed.contains(&&f.to_string()), "{f} in {changed:?}");
        }
        for f in ["search/t-mm.js", "search/t-gr.js", "search/x/2.js"] {
            assert!(!changed.contains(&&f.to_string()), "{f} in {changed:?}");
        }
        // The same as a rebuild of both threads.
        let mut b = Batch::default();
        b.add_thread(input(1, q1, &[(b1, true), (a1, true)]));
        b.add_thread(input(2, q2, &[(b2, true)]));
        b.write(full.path(), false, &w).unwrap();
        assert_eq!(after, snapshot(full.path()));

        // Thread 2 merged into 1: its record and postings go.
        let mut b = Batch::default();
        b.add_thread(input(1, q1, &[(b1, false), (a1, false), (b2m, true)]));
        b.remove_thread(2);
        b.write(inc.path(), true, &w).unwrap();
        let mut s = Searcher::open(inc.path());
        let r = s.search("mmap", 1);
        assert_eq!(r.total, 1);
        assert_eq!(r.hits[0].id, 1);
        assert!(!inc.path().join("search/x/2.js").exists());
        let r = s.search("groff", 1);
        assert_eq!((r.total, r.hits[0].id), (1, 1));
        let mut b = Batch::default();
        b.add_thread(input(1, q1, &[(b1, true), (a1, true), (b2m, true)]));
        b.write(full.path(), false, &w).unwrap();
        assert_eq!(snapshot(inc.path()), snapshot(full.path()));
    }

    #[test]
    fn big_term_files_are_split_and_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &Path, b: &[u8]| super::super::write_if_changed(p, b);
        // 400 threads with many words starting with "co": more than SPLIT_BYTES together.
        let texts: Vec<String> = (0..400u64)
            .map(|i| {
                let many: Vec<String> = (0..20).map(|j| format!("co{i}x{j}")).collect();
                format!("{} co colla{} client", many.join(" "), i % 7)
            })
            .collect();
        let mut b = Batch::default();
        for (i, t) in texts.iter().enumerate() {
            b.add_thread(input(i as u64 + 1, "Vraag", &[(t.as_str(), true)]));
        }
        b.write(dir.path(), false, &w).unwrap();
        let meta: Meta = read_json(&dir.path().join("search/meta.js")).unwrap();
        assert!(meta.split.contains("co"), "{:?}", meta.split);
        assert!(!dir.path().join("search/t-co.js").exists());
        assert!(dir.path().join("search/t-co-.js").exists());
        let mut s = Searcher::open(dir.path());
        assert_eq!(s.search("co", 1).total, 400);
        assert_eq!(s.search("co17x3", 1).total, 1);
        assert_eq!(s.search("colla3", 1).total, 57);
        assert_eq!(s.search("client co", 1).total, 400);
        // Paging: 20 per page, no thread twice.
        let mut seen = BTreeSet::new();
        for p in 1..=20 {
            for h in s.search("client", p).hits {
                assert!(seen.insert(h.id));
            }
        }
        assert_eq!(seen.len(), 400);
        for (name, size) in &s.loaded {
            if name.starts_with("t-") {
                assert!(*size <= SPLIT_BYTES + 64, "{name}: {size}");
            }
        }
        // An update that makes a shard too big splits it.
        let mut b = Batch::default();
        let t = (0..3000)
            .map(|i| format!("qz{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        b.add_thread(input(9999, "Vraag", &[(t.as_str(), true)]));
        b.write(dir.path(), true, &w).unwrap();
        let meta: Meta = read_json(&dir.path().join("search/meta.js")).unwrap();
        assert!(meta.split.contains("qz"), "{:?}", meta.split);
        assert!(!dir.path().join("search/t-qz.js").exists());
        let mut s = Searcher::open(dir.path());
        assert_eq!(s.search("qz2999", 1).total, 1);
        assert_eq!(s.search("qz", 1).total, 0);
        assert_eq!(meta.n, 401);
    }

    #[test]
    fn tags_filter_results() {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &Path, b: &[u8]| super::super::write_if_changed(p, b);
        let leefloon = vec!["leefloon".to_string()];
        let both = vec!["huurwaarborg".to_string(), "leefloon".to_string()];
        let mut b = Batch::default();
        let mut add = |id: u64, subject: &str, text: &str, tags: &[String]| {
            let mut t = input(id, subject, &[(text, true)]);
            t.tags = tags;
            b.add_thread(t);
        };
        add(
            1,
            "Leefloon en studie #leefloon",
            "Een student vraagt leefloon.",
            &leefloon,
        );
        add(
            2,
            "Waarborg #huurwaarborg #leefloon",
            "Huur en leefloon samen.",
            &both,
        );
        add(
            3,
            "Leefloon zonder tag",
            "Ook over leefloon, geen tag.",
            &[],
        );
        b.write(dir.path(), false, &w).unwrap();
        let mut s = Searcher::open(dir.path());
        assert_eq!(s.search("leefloon", 1).total, 3);
        let only = s.search("leefloon #leefloon", 1);
        // Ranked by the words: the first has leefloon twice in its subject.
        assert_eq!(only.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            s.search("#Leefloon", 1).total,
            2,
            "a tag alone lists its threads"
        );
        let r = s.search("#leefloon #huurwaarborg", 1);
        assert_eq!(r.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [2]);
        assert_eq!(s.search("student #huurwaarborg", 1).total, 0);
        assert_eq!(s.search("#onbekend leefloon", 1).total, 0);
        // The tag is not a word: the subject's `#leefloon` counts as the word leefloon.
        assert_eq!(query_terms("#leefloon studie").len(), 1);
    }

    #[test]
    fn results_are_threads_with_records() {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &Path, b: &[u8]| super::super::write_if_changed(p, b);
        let mut b = Batch::default();
        b.add_thread(input(
            3,
            "Leefloon voor een cliënt",
            &[
                ("Wie kent dit? Mail jan.peeters@… of bel.", true),
                ("Leefloon aanvragen bij het OCMW.", true),
                ("Ook leefloon hier.", true),
            ],
        ));
        b.add_thread(input(
            7,
            "Huurwaarborg",
            &[("Geen leefloon maar huur.", true)],
        ));
        b.write(dir.path(), false, &w).unwrap();
        let mut s = Searcher::open(dir.path());
        let r = s.search("leefloon", 1);
        assert_eq!(r.total, 2);
        let first = &r.hits[0];
        assert_eq!(first.id, 3);
        let rec = first.record.as_ref().unwrap();
        assert_eq!(rec.answers, 2);
        assert_eq!(rec.state, ANSWERED);
        assert_eq!(rec.url, "t/3.html");
        assert_eq!(rec.text[0], "Wie kent dit? Mail of bel.");
        assert!(first.snippet.iter().any(|(t, hl)| *hl && t == "Leefloon"));
        assert_eq!(s.search("cliënt", 1).hits[0].id, 3);
        assert_eq!(s.search("client", 1).hits[0].id, 3);
        assert_eq!(s.search("peeters", 1).total, 0);
        assert_eq!(s.search("één", 1).total, 0);
        for (_, bytes) in snapshot(dir.path()) {
            let text = String::from_utf8(bytes).unwrap();
            assert!(!text.contains('@') && !text.contains("peeters"), "{text}");
        }
    }
}
