//! The archive's search index: static files searched in the browser, no server.
//!
//! Written by hand rather than with pagefind: pagefind indexes finished HTML pages (so every
//! update re-reads the site) and ships a WebAssembly runtime; a list archive needs far less.
//! Ours is an inverted index of the authors' own words (quoted text and signatures left
//! out), split by the first two letters of each term into `search/t-XX.js`, plus the titles
//! of messages in `search/d-N.js` (500 per file). Each file is a script that hands its data
//! to `static/search.js`, so search also works when the archive is opened from disk, and an
//! update rewrites only the files of the terms a new message contains.
//!
//! Terms are folded as the browser folds a query: Unicode NFKD, combining marks removed,
//! lower case (`cliënt` → `client`, `Één` → `een`), then split on anything that is not a
//! letter or digit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Message titles per `d-N.js` file.
pub const DOCS_PER_FILE: u64 = 500;
/// Longer runs of letters are not words (base64, hashes).
const MAX_TERM_CHARS: usize = 40;

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

/// The distinct terms of a text.
pub fn terms(text: &str) -> BTreeSet<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let keep = |t: &str, seen: &mut HashSet<String>| {
        let n = if t.is_ascii() {
            t.len()
        } else {
            t.chars().count()
        };
        if (2..=MAX_TERM_CHARS).contains(&n) && !seen.contains(t) {
            seen.insert(t.to_string());
        }
    };
    // Words first (letters, digits and combining marks), then each word folded: most
    // words are ASCII and fold by lower-casing alone.
    for w in text.split(|c: char| !(c.is_alphanumeric() || is_combining_mark(c))) {
        if w.is_empty() {
            continue;
        }
        if w.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            keep(w, &mut seen);
        } else {
            let f = fold(w);
            for t in f.split(|c: char| !c.is_alphanumeric()) {
                keep(t, &mut seen);
            }
        }
    }
    seen.into_iter().collect()
}

/// The file a term lives in: its first two characters, each kept when it is `[a-z0-9]` and
/// written as `u<hex code point>` otherwise (as `shard()` in search.js).
pub fn shard(term: &str) -> String {
    let b = term.as_bytes();
    if b.len() >= 2
        && b[..2]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return term[..2].to_string();
    }
    let mut out = String::new();
    for c in term.chars().take(2) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            out.push_str(&format!("u{:x}", c as u32));
        }
    }
    out
}

/// What a search result shows: link (relative to the list's folder), subject, author, date.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Doc(pub String, pub String, pub String, pub String);

/// Additions to the index: postings per shard and titles per docs file.
#[derive(Default)]
pub struct Batch {
    /// term → messages (sorted and deduplicated when written).
    terms: HashMap<String, Vec<u64>>,
    docs: BTreeMap<u64, BTreeMap<u64, Doc>>,
}

impl Batch {
    pub fn add(&mut self, seq: u64, text: &str, doc: Doc) {
        for t in terms(text) {
            self.terms.entry(t).or_default().push(seq);
        }
        self.docs
            .entry(seq / DOCS_PER_FILE)
            .or_default()
            .insert(seq, doc);
    }

    /// Adds another batch (from a parallel renderer).
    pub fn extend(&mut self, other: Batch) {
        for (t, seqs) in other.terms {
            self.terms.entry(t).or_default().extend(seqs);
        }
        for (n, docs) in other.docs {
            self.docs.entry(n).or_default().extend(docs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Writes the batch into `dir/search/`. With `merge`, each touched file is read back
    /// and extended (an incremental update); without, the files are replaced (a rebuild,
    /// which also removes files of shards that no longer exist). Returns files written.
    pub fn write(
        self,
        dir: &Path,
        merge: bool,
        write: &dyn Fn(&Path, &[u8]) -> std::io::Result<bool>,
    ) -> std::io::Result<usize> {
        let sdir = dir.join("search");
        std::fs::create_dir_all(&sdir)?;
        let mut written = 0;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut shards: BTreeMap<String, Vec<(String, Vec<u64>)>> = BTreeMap::new();
        for (t, seqs) in self.terms {
            shards.entry(shard(&t)).or_default().push((t, seqs));
        }
        for (sh, add) in shards {
            let name = format!("t-{sh}.js");
            let path = sdir.join(&name);
            let mut postings: BTreeMap<String, BTreeSet<u64>> = if merge {
                read_data(&path).unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            for (t, seqs) in add {
                postings.entry(t).or_default().extend(seqs);
            }
            let json = serde_json::to_string(&postings).unwrap_or_else(|_| "{}".into());
            let js = format!("VB.t({},{json});\n", serde_json::json!(sh));
            if write(&path, js.as_bytes())? {
                written += 1;
            }
            keep.insert(name);
        }
        for (n, add) in self.docs {
            let name = format!("d-{n}.js");
            let path = sdir.join(&name);
            let mut docs: BTreeMap<u64, Doc> = if merge {
                read_data(&path).unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            docs.extend(add);
            let json = serde_json::to_string(&docs).unwrap_or_else(|_| "{}".into());
            let js = format!("VB.d({n},{json});\n");
            if write(&path, js.as_bytes())? {
                written += 1;
            }
            keep.insert(name);
        }
        if !merge {
            for e in std::fs::read_dir(&sdir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".js") && !keep.contains(&name) {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        Ok(written)
    }
}

/// Reads the data of one index file back (`VB.x(key,{...});`).
fn read_data<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let s = std::fs::read_to_string(path).ok()?;
    let start = s.find(",{")? + 1;
    let end = s.rfind("});")? + 1;
    serde_json::from_str(s.get(start..end)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_accents_and_case() {
        assert_eq!(fold("Cliënt ÉÉN Œuvre ﬁle"), "client een œuvre file");
        let t = terms("De cliënt vroeg: leefloon? (OCMW-Gent, 2026) a");
        for w in ["de", "client", "vroeg", "leefloon", "ocmw", "gent", "2026"] {
            assert!(t.contains(w), "{w} in {t:?}");
        }
        assert!(!t.contains("a"), "one-letter words are not indexed");
        assert!(terms("é ü ø").is_empty(), "{:?}", terms("é ü ø"));
    }

    #[test]
    fn shards_are_file_name_safe() {
        assert_eq!(shard("client"), "cl");
        assert_eq!(shard("œuvre"), "u153u");
        assert_eq!(shard("ß"), "udf");
        for t in ["../x", "a/b", "..", "é."] {
            assert!(!shard(t).contains(['/', '.', '\\']), "{t}");
        }
    }

    #[test]
    fn merge_extends_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &Path, b: &[u8]| std::fs::write(p, b).map(|_| true);
        let mut b = Batch::default();
        b.add(
            1,
            "leefloon cliënt",
            Doc(
                "t/1.html#m1".into(),
                "Vraag".into(),
                "An".into(),
                "2026-11-01".into(),
            ),
        );
        b.write(dir.path(), false, &w).unwrap();
        let mut b = Batch::default();
        b.add(
            2,
            "leefloon",
            Doc(
                "t/1.html#m2".into(),
                "Re: Vraag".into(),
                "Bo".into(),
                "2026-11-02".into(),
            ),
        );
        b.write(dir.path(), true, &w).unwrap();
        let p: BTreeMap<String, BTreeSet<u64>> =
            read_data(&dir.path().join("search/t-le.js")).unwrap();
        assert_eq!(p["leefloon"], BTreeSet::from([1, 2]));
        let c: BTreeMap<String, BTreeSet<u64>> =
            read_data(&dir.path().join("search/t-cl.js")).unwrap();
        assert_eq!(c["client"], BTreeSet::from([1]));
        let d: BTreeMap<u64, Doc> = read_data(&dir.path().join("search/d-0.js")).unwrap();
        assert_eq!(d.len(), 2);
    }
}
