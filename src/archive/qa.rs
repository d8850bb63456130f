//! Questions and answers: a thread is a question; its asker (the first author) or an owner
//! marks it solved by mail, and the message that reply answers becomes the accepted answer.
//!
//! Marks are read from the posts themselves (`[opgelost]`/`[solved]` in the subject, or a
//! line `#opgelost`/`#solved` alone near the top of the body; `#heropend`/`#reopened`, or
//! `[heropend]`/`[reopened]`, undo it), so the state is part of the thread index and comes
//! out the same from `archive rebuild --reindex`. An owner's `opgelost` command to
//! `-request` is stored as an owner mark (`store::QaOwnerMark`) and folded in by time.

use crate::store::{ArchThread, QaOwnerMark, Solved, Store};

/// What a post says about its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Solved,
    Reopened,
}

const SOLVED: [&str; 2] = ["opgelost", "solved"];
const REOPENED: [&str; 2] = ["heropend", "reopened"];

fn word_mark(word: &str) -> Option<Mark> {
    let w = word.to_lowercase();
    if SOLVED.contains(&w.as_str()) {
        Some(Mark::Solved)
    } else if REOPENED.contains(&w.as_str()) {
        Some(Mark::Reopened)
    } else {
        None
    }
}

/// A `[opgelost]`-style tag in the subject (anywhere, any case).
pub fn subject_mark(subject: &str) -> Option<Mark> {
    let mut rest = subject;
    let mut found = None;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            break;
        };
        if let Some(m) = word_mark(after[..close].trim()) {
            found = Some(m);
        }
        rest = &after[close + 1..];
    }
    found
}

/// Lines of the body counted as "near the top": the first this many lines with text that
/// are not quoted.
const TOP_LINES: usize = 5;

/// A line `#opgelost` (or `#solved`, `#heropend`, `#reopened`) alone among the first lines
/// of the author's own text.
pub fn body_mark(text: &str) -> Option<Mark> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('>'))
        .take(TOP_LINES)
        .find_map(|l| {
            l.strip_prefix('#')
                .and_then(|w| word_mark(w.trim_end_matches(['.', '!'])))
        })
}

/// Whether the raw message may hold a body mark at all (so that only those are parsed).
pub fn may_have_body_mark(raw: &[u8]) -> bool {
    let lower = raw.to_ascii_lowercase();
    SOLVED.iter().chain(REOPENED.iter()).any(|w| {
        lower
            .windows(w.len() + 1)
            .any(|win| win[0] == b'#' && &win[1..] == w.as_bytes())
    })
}

/// The solved state of a thread from its authorised marks, in time order: post marks
/// `(date_ms, solved, accepted seq)` and owner marks.
pub fn fold(post_marks: &[(i64, bool, Option<u64>)], owner: &[QaOwnerMark]) -> Option<Solved> {
    let mut events: Vec<(i64, bool, Option<u64>, bool)> = post_marks
        .iter()
        .map(|(t, s, a)| (*t, *s, *a, false))
        .chain(owner.iter().map(|o| (o.at_ms, o.solved, o.accepted, true)))
        .collect();
    events.sort_by_key(|e| e.0);
    let mut state = None;
    for (at_ms, solved, accepted, by_owner) in events {
        state = solved.then_some(Solved {
            accepted,
            at_ms,
            by_owner,
        });
    }
    state
}

/// A thread named by an owner: `12`, `#12`, or an archive URL ending in `t/12.html`, with
/// `#m15` naming a message. Returns (thread, message).
pub fn parse_thread_ref(s: &str) -> Option<(u64, Option<u64>)> {
    let s = s.trim().trim_start_matches('#');
    if let Ok(n) = s.parse::<u64>() {
        return Some((n, None));
    }
    let (path, frag) = match s.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (s, None),
    };
    let file = path.rsplit('/').next()?;
    let id = file.strip_suffix(".html")?.parse::<u64>().ok()?;
    if !path.trim_end_matches(file).ends_with("t/") {
        return None;
    }
    let msg = match frag {
        Some(f) => Some(f.strip_prefix('m')?.parse::<u64>().ok()?),
        None => None,
    };
    Some((id, msg))
}

/// The thread an owner names (`12`, `t/12.html`, `t/12.html#m15`; merges followed) and the
/// answer to accept: the message the URL or `answer` names, none for the question itself.
/// `Ok(Err(why))` when the reference names no thread, or a message outside it.
pub fn owner_target(
    store: &Store,
    key: &str,
    thread: &str,
    answer: Option<u64>,
) -> crate::store::Result<Result<(ArchThread, Option<u64>), &'static str>> {
    let Some((id, from_url)) = parse_thread_ref(thread) else {
        return Ok(Err("not a thread number or archive URL"));
    };
    // The index's reads are the store's: its errors are store errors.
    let resolved = super::Index::new(store, key).resolve(id).map_err(|e| {
        e.downcast::<crate::store::StoreError>()
            .unwrap_or_else(|e| crate::store::StoreError::Corrupt {
                tree: "arch_thread",
                msg: e.to_string(),
            })
    })?;
    let Some(t) = resolved else {
        return Ok(Err("the archive has no such thread"));
    };
    let root = t.seqs.iter().copied().min().unwrap_or(t.id);
    let accepted = match answer.or(from_url) {
        Some(a) if !t.seqs.contains(&a) => return Ok(Err("that message is not in the thread")),
        Some(a) if a == root => None,
        a => a,
    };
    Ok(Ok((t, accepted)))
}

/// What a thread list shows of a thread: solved, or how many answers it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Solved,
    Answered,
    Open,
}

pub fn state(t: &ArchThread) -> State {
    if t.solved.is_some() {
        State::Solved
    } else if t.seqs.len() > 1 {
        State::Answered
    } else {
        State::Open
    }
}

/// The number of answers: every message after the question.
pub fn answers(t: &ArchThread) -> usize {
    t.seqs.len().saturating_sub(1)
}

/// Longest tag, in characters.
const MAX_TAG: usize = 40;

/// A tag as it is shown and named in URLs: folded (`Één` → `een`), letters, digits and `-`
/// only, 2 to 40 characters, not only digits, not a solved/reopened mark.
fn clean_tag(word: &str) -> Option<String> {
    let t = super::search::fold(word.trim_end_matches([',', '.', ';', ':', '!', '?', ')']));
    let ok = (2..=MAX_TAG).contains(&t.chars().count())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !t.chars().all(|c| c.is_ascii_digit() || c == '-')
        && word_mark(&t).is_none();
    ok.then_some(t)
}

/// The tags of a question: `#word` in its subject, and the list's keyword tags that occur
/// in it as whole words. Sorted, each once.
pub fn tags_of(subject: &str, keywords: &[String]) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for w in subject.split_whitespace() {
        if let Some(tag) = w.strip_prefix('#').and_then(clean_tag) {
            out.insert(tag);
        }
    }
    if !keywords.is_empty() {
        let words: std::collections::HashSet<String> = super::search::fold(subject)
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .map(str::to_string)
            .collect();
        for k in keywords {
            if let Some(tag) = clean_tag(k) {
                if words.contains(&tag) {
                    out.insert(tag);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// A month's figures, for the federation: no names, no per-person counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MonthFigures {
    pub month: String,
    /// Questions asked (threads started that month).
    pub questions: usize,
    pub answered: usize,
    pub solved: usize,
    /// Median time from the question to its first answer, in minutes (answered ones).
    pub median_first_answer_min: Option<i64>,
    /// The month's most used tags, with how many questions carry each.
    pub tags: Vec<(String, usize)>,
}

/// Figures per month (newest first) from the thread index: every thread that is a
/// question (not merged away, not a stray reply) counts in the month it was asked.
pub fn figures(threads: &[ArchThread], month_of: impl Fn(i64) -> String) -> Vec<MonthFigures> {
    // Per month: the figures so far, the waits for a first answer, questions per tag.
    type Tally = (
        MonthFigures,
        Vec<i64>,
        std::collections::HashMap<String, usize>,
    );
    let mut by: std::collections::BTreeMap<String, Tally> = std::collections::BTreeMap::new();
    for t in threads {
        if t.merged_into.is_some() || t.root_is_reply {
            continue;
        }
        let m = month_of(t.first_ms);
        let e = by.entry(m.clone()).or_insert_with(|| {
            (
                MonthFigures {
                    month: m,
                    ..MonthFigures::default()
                },
                Vec::new(),
                std::collections::HashMap::new(),
            )
        });
        e.0.questions += 1;
        if t.seqs.len() > 1 {
            e.0.answered += 1;
        }
        if t.solved.is_some() {
            e.0.solved += 1;
        }
        if let Some(a) = t.first_answer_ms {
            e.1.push((a - t.first_ms).max(0));
        }
        for tag in &t.tags {
            *e.2.entry(tag.clone()).or_default() += 1;
        }
    }
    by.into_values()
        .rev()
        .map(|(mut f, mut waits, tags)| {
            waits.sort_unstable();
            f.median_first_answer_min = median(&waits).map(|ms| ms / 60_000);
            let mut tags: Vec<(String, usize)> = tags.into_iter().collect();
            tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            tags.truncate(5);
            f.tags = tags;
            f
        })
        .collect()
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[i64]) -> Option<i64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Words that say nothing about a question, Dutch and English (after folding: `één` is
/// `een`). Kept short on purpose: a word left out can never be found.
const STOPWORDS: &[&str] = &[
    "aan", "af", "al", "alle", "als", "bij", "dan", "dat", "de", "deze", "die", "dit", "doen",
    "door", "een", "en", "er", "had", "heb", "hebben", "heeft", "het", "hier", "hij", "hoe", "ik",
    "in", "is", "je", "jij", "kan", "kunnen", "maar", "me", "meer", "met", "mij", "mijn", "na",
    "naar", "niet", "nog", "nu", "of", "om", "ons", "ook", "op", "over", "te", "toe", "tot", "u",
    "uit", "van", "veel", "voor", "vraag", "wat", "we", "weet", "wel", "wie", "wij", "wordt",
    "zijn", "zo", "zou", "dag", "collega", "collegas", "groeten", "iemand", "ervaring", "re",
    "antw", "aw", "fw", "fwd", "wg", "the", "a", "an", "and", "are", "as", "at", "be", "but", "by",
    "can", "do", "does", "for", "from", "has", "have", "how", "i", "if", "it", "my", "no", "not",
    "of", "on", "or", "our", "so", "that", "this", "to", "was", "we", "what", "when", "which",
    "who", "will", "with", "you", "hi", "hello", "thanks", "anyone",
];

/// Most terms kept of a question's text.
const MAX_BODY_TERMS: usize = 80;

/// The words of a text that can make two questions alike: folded terms of at least three
/// characters, not numbers, not stopwords.
pub fn question_terms(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let t = super::search::fold(w);
        if t.chars().count() < 3
            || t.chars().all(|c| c.is_ascii_digit())
            || STOPWORDS.contains(&t.as_str())
            || !seen.insert(t.clone())
        {
            continue;
        }
        out.push(t);
        if out.len() >= max {
            break;
        }
    }
    out
}

/// A question's own text: without quoted lines and without what follows a `-- ` signature.
pub fn own_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_end() == "--" || line == "-- " {
            break;
        }
        if !line.trim_start().starts_with('>') {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// (subject terms, body terms) of a question.
pub fn terms_of_question(subject: &str, body: &str) -> (Vec<String>, Vec<String>) {
    let subject = crate::threading::base_subject(subject);
    (
        question_terms(&subject, 30),
        question_terms(&own_text(body), MAX_BODY_TERMS),
    )
}

/// Earlier questions (posted before it) like `q`, best first, at most `max`: BM25 over the questions' terms
/// (a subject match counts twice), solved questions first, and only those scoring at least a third of what `q` scores against itself, with two or
/// more words in common.
pub fn similar<'t>(q: &ArchThread, threads: &'t [ArchThread], max: usize) -> Vec<&'t ArchThread> {
    use std::collections::{HashMap, HashSet};
    let docs: Vec<&ArchThread> = threads
        .iter()
        .filter(|t| t.id < q.id && t.merged_into.is_none())
        .filter(|t| !t.subject_terms.is_empty() || !t.body_terms.is_empty())
        .collect();
    if docs.is_empty() {
        return Vec::new();
    }
    let n = docs.len() as f64;
    let mut df: HashMap<&str, usize> = HashMap::new();
    for d in &docs {
        let terms: HashSet<&str> = d
            .subject_terms
            .iter()
            .chain(&d.body_terms)
            .map(String::as_str)
            .collect();
        for t in terms {
            *df.entry(t).or_default() += 1;
        }
    }
    let avg = docs
        .iter()
        .map(|d| d.subject_terms.len() + d.body_terms.len())
        .sum::<usize>() as f64
        / n;
    let idf = |t: &str| {
        let f = *df.get(t).unwrap_or(&0) as f64;
        (1.0 + (n - f + 0.5) / (f + 0.5)).ln()
    };
    let (k1, b) = (1.2, 0.75);
    let score = |d: &ArchThread| -> (f64, usize) {
        let len = (d.subject_terms.len() + d.body_terms.len()) as f64;
        let norm = (k1 + 1.0) / (1.0 + k1 * (1.0 - b + b * len / avg.max(1.0)));
        let subj: HashSet<&str> = d.subject_terms.iter().map(String::as_str).collect();
        let body: HashSet<&str> = d.body_terms.iter().map(String::as_str).collect();
        let mut s = 0.0;
        let mut common = 0;
        for t in q.subject_terms.iter().chain(&q.body_terms) {
            let w = if subj.contains(t.as_str()) {
                2.0
            } else if body.contains(t.as_str()) {
                1.0
            } else {
                continue;
            };
            common += 1;
            s += w * idf(t) * norm;
        }
        (s, common)
    };
    let own = score(q).0;
    let mut scored: Vec<(f64, &ArchThread)> = docs
        .into_iter()
        .filter_map(|d| {
            let (s, common) = score(d);
            (common >= 2 && s >= own / 3.0 && s > 0.0).then_some((s, d))
        })
        .collect();
    // Of those similar enough, the solved ones first (they hold an answer), each group by
    // score.
    scored.sort_by(|(sa, a), (sb, b)| {
        (b.solved.is_some())
            .cmp(&a.solved.is_some())
            .then(sb.total_cmp(sa))
    });
    scored.into_iter().take(max).map(|(_, t)| t).collect()
}

/// A question of the last days that nobody answered yet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenQuestion {
    pub seq: u64,
    pub subject: String,
    /// The author's name (never the address; empty when unknown).
    pub author: String,
    pub received_ms: i64,
    /// Its thread page, when the list has a web archive with a public URL.
    pub url: Option<String>,
}

/// Questions posted since `since_ms` that have no reply yet, oldest first: posts that are
/// not replies (no In-Reply-To/References, no `Re:`) and that no later post answers (by
/// reference, or by a reply subject with the same base, for clients that drop references).
/// Reads only the posts since `since_ms`, newest first.
pub fn open_questions(
    store: &Store,
    list: &crate::config::ListConfig,
    since_ms: i64,
) -> crate::store::Result<Vec<OpenQuestion>> {
    use crate::threading;
    let key = list.key();
    let mut questions = Vec::new();
    let mut answered_ids = std::collections::HashSet::new();
    let mut answered_subjects = std::collections::HashSet::new();
    let mut seq = store.last_seq(key)?;
    while seq > 0 {
        let Some(meta) = store.post(key, seq)? else {
            seq -= 1;
            continue;
        };
        if meta.received_ms < since_ms {
            break;
        }
        let raw = store.raw(key, seq)?.unwrap_or_default();
        let parsed = mail_parser::MessageParser::default().parse_headers(&raw[..]);
        let refs = parsed
            .as_ref()
            .map(threading::references)
            .unwrap_or_default();
        let base = threading::base_subject(&meta.subject);
        let id = threading::normalize_id(&meta.message_id);
        if refs.is_empty() && !threading::is_reply_subject(&meta.subject) {
            // Newest first: every later post was seen already.
            if !answered_ids.contains(&id) && !answered_subjects.contains(&base) {
                let author = meta
                    .from_name
                    .clone()
                    .filter(|n| !n.trim().is_empty() && !n.contains('@'))
                    .unwrap_or_default();
                questions.push(OpenQuestion {
                    seq,
                    subject: meta.subject.clone(),
                    author,
                    received_ms: meta.received_ms,
                    url: None,
                });
            }
        } else {
            answered_ids.extend(refs);
            if threading::is_reply_subject(&meta.subject) && !base.is_empty() {
                answered_subjects.insert(base);
            }
        }
        seq -= 1;
    }
    questions.reverse();
    if let Some(base) = list.archive_url.as_deref() {
        for q in &mut questions {
            // The thread id of a question is its own seq unless it joined an older thread.
            let thread = store.arch_msg(key, q.seq)?.map_or(q.seq, |m| m.thread);
            q.url = Some(format!("{}/t/{thread}.html", base.trim_end_matches('/')));
        }
    }
    Ok(questions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_in_subjects_and_bodies() {
        assert_eq!(
            subject_mark("Re: [forum] Leefloon [opgelost]"),
            Some(Mark::Solved)
        );
        assert_eq!(subject_mark("[SOLVED] Re: x"), Some(Mark::Solved));
        assert_eq!(
            subject_mark("Re: [forum] [heropend] x"),
            Some(Mark::Reopened)
        );
        assert_eq!(subject_mark("Re: [forum] wat is opgelost?"), None);
        assert_eq!(body_mark("#opgelost\n\nDank!"), Some(Mark::Solved));
        assert_eq!(body_mark("Dank je!\n  #Solved.\n"), Some(Mark::Solved));
        assert_eq!(body_mark("#heropend\nToch niet."), Some(Mark::Reopened));
        // Quoted, too late, or inside a sentence: not a mark.
        assert_eq!(body_mark("> #opgelost\nNee."), None);
        assert_eq!(body_mark("a\nb\nc\nd\ne\n#opgelost"), None);
        assert_eq!(body_mark("Is dit #opgelost of niet?"), None);
        assert!(may_have_body_mark(b"x\r\n#OPGELOST\r\n"));
        assert!(!may_have_body_mark(b"opgelost zonder hekje"));
    }

    #[test]
    fn tags_from_subjects_and_keywords() {
        let kw = vec!["Huurwaarborg".to_string(), "x".to_string()];
        assert_eq!(
            tags_of("Vraag #Leefloon en #één, #2026 #opgelost", &kw),
            vec!["een", "leefloon"]
        );
        assert_eq!(
            tags_of("Re: huurwaarborg bij verhuis", &kw),
            vec!["huurwaarborg"]
        );
        assert_eq!(tags_of("huurwaarborgen", &kw), Vec::<String>::new());
        assert_eq!(tags_of("mail #a of #<script>", &[]), Vec::<String>::new());
    }

    #[test]
    fn figures_per_month() {
        let t = |id: u64, first: i64, n: usize, ans: Option<i64>, solved: bool| ArchThread {
            id,
            subject: String::new(),
            base: String::new(),
            root_is_reply: false,
            first_ms: first,
            last_ms: first,
            seqs: (0..n as u64).collect(),
            merged_into: None,
            solved: solved.then_some(Solved {
                accepted: None,
                at_ms: 0,
                by_owner: false,
            }),
            first_answer_ms: ans.map(|a| first + a * 60_000),
            tags: vec!["leefloon".into()],
            subject_terms: Vec::new(),
            body_terms: Vec::new(),
        };
        let threads = vec![
            t(1, 0, 3, Some(10), true),
            t(2, 0, 2, Some(30), false),
            t(3, 0, 1, None, false),
            t(4, 1, 2, Some(5), false),
        ];
        let f = figures(&threads, |ms| {
            if ms == 0 {
                "2026-10".into()
            } else {
                "2026-11".into()
            }
        });
        assert_eq!(f[0].month, "2026-11");
        assert_eq!(f[1].questions, 3);
        assert_eq!((f[1].answered, f[1].solved), (2, 1));
        assert_eq!(f[1].median_first_answer_min, Some(20));
        assert_eq!(f[1].tags, vec![("leefloon".to_string(), 3)]);
    }

    #[test]
    fn similar_questions_share_meaningful_words() {
        let t = |id: u64, subject: &str, body: &str, solved: bool| {
            let (subject_terms, body_terms) = terms_of_question(subject, body);
            ArchThread {
                id,
                subject: subject.into(),
                base: String::new(),
                root_is_reply: false,
                first_ms: id as i64,
                last_ms: id as i64,
                seqs: vec![id],
                merged_into: None,
                solved: solved.then_some(Solved {
                    accepted: None,
                    at_ms: 0,
                    by_owner: false,
                }),
                first_answer_ms: None,
                tags: Vec::new(),
                subject_terms,
                body_terms,
            }
        };
        let threads = vec![
            t(
                1,
                "Leefloon bij verhuis naar een andere gemeente",
                "Een cliënt verhuist; loopt het leefloon door?",
                false,
            ),
            t(
                2,
                "Huurwaarborg via het OCMW",
                "Wie weet hoe de huurwaarborg werkt?",
                false,
            ),
            t(
                3,
                "Verhuis en leefloon: welke gemeente betaalt?",
                "Cliënt verhuist, wie betaalt het leefloon?",
                true,
            ),
            t(
                4,
                "Een vraag",
                "Dag collega's, wie heeft ervaring? Groeten",
                false,
            ),
        ];
        let q = t(
            9,
            "Leefloon na verhuis",
            "Mijn client verhuist naar een andere gemeente. Leefloon?",
            false,
        );
        let found: Vec<u64> = similar(&q, &threads, 5).iter().map(|t| t.id).collect();
        assert_eq!(
            found,
            vec![3, 1],
            "solved first, then the other; nothing unrelated"
        );
        let unrelated = t(
            10,
            "Parkeerkaart voor bezoekers",
            "Waar vraag ik een parkeerkaart aan?",
            false,
        );
        assert!(similar(&unrelated, &threads, 5).is_empty());
        // Stopwords and quotes do not count.
        assert!(question_terms("Dag collega's, wie heeft één vraag?", 10).is_empty());
        assert_eq!(
            own_text("mijn vraag\n> oud citaat\n-- \nAn, OCMW"),
            "mijn vraag\n"
        );
    }

    #[test]
    fn thread_references() {
        assert_eq!(parse_thread_ref("12"), Some((12, None)));
        assert_eq!(parse_thread_ref(" #12 "), Some((12, None)));
        assert_eq!(
            parse_thread_ref("https://lists.example.org/archive/forum/t/12.html#m15"),
            Some((12, Some(15)))
        );
        assert_eq!(parse_thread_ref("t/7.html"), Some((7, None)));
        assert_eq!(parse_thread_ref("https://x/2026-11/index.html"), None);
        assert_eq!(parse_thread_ref("t/7.html#top"), None);
        assert_eq!(parse_thread_ref("leefloon"), None);
    }

    #[test]
    fn the_last_mark_in_time_counts() {
        let owner = [QaOwnerMark {
            at_ms: 20,
            solved: true,
            accepted: Some(9),
        }];
        let posts = [(10, true, Some(5)), (30, false, None)];
        assert_eq!(fold(&posts, &owner), None);
        let s = fold(&posts[..1], &owner).unwrap();
        assert_eq!((s.accepted, s.by_owner), (Some(9), true));
        assert_eq!(fold(&posts[..1], &[]).unwrap().accepted, Some(5));
    }
}
