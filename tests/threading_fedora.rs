//! Threading on a real list month: fedora-devel, January 2010 (292 messages), compared
//! with the thread index MHonArc built for the list's own archive, which lies beside it.
//! notmuch and public-inbox, which link by References/In-Reply-To only, find 62 threads.

mod common;

use common::skip;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use vraagbaak::threading::{self, Msg, Options, Placed};

fn gunzip(p: &Path) -> Vec<u8> {
    let gz = std::fs::read(p).unwrap();
    let mut out = Vec::new();
    // The archive's files are several gzip members back to back.
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// MHonArc's thread index: for each message number, the number of its thread's root.
/// Roots are the `<a name="NNNNN">` entries at list depth 1.
fn mhonarc_roots(html: &str) -> HashMap<u64, u64> {
    let b = html.to_ascii_lowercase().into_bytes();
    let start = b.windows(4).position(|w| w == b"<hr>").unwrap_or(0);
    let (mut depth, mut root) = (0i32, 0u64);
    let mut rootof = HashMap::new();
    let mut i = start;
    while i < b.len() {
        if b[i..].starts_with(b"<ul>") {
            depth += 1;
            i += 4;
        } else if b[i..].starts_with(b"</ul>") {
            depth -= 1;
            i += 5;
        } else if b[i..].starts_with(b"<a name=\"") {
            let n: u64 = std::str::from_utf8(&b[i + 9..i + 14])
                .unwrap()
                .parse()
                .unwrap();
            if depth == 1 {
                root = n;
            }
            rootof.insert(n, root);
            i += 14;
        } else {
            i += 1;
        }
    }
    rootof
}

/// (number of our threads identical to one of MHonArc's, messages in those threads).
fn agreement(ours: &[Vec<Placed>], rootof: &HashMap<u64, u64>) -> (usize, usize) {
    let mut theirs: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for (k, r) in rootof {
        theirs.entry(*r).or_default().insert(*k);
    }
    let (mut threads, mut msgs) = (0, 0);
    for g in ours {
        let set: BTreeSet<u64> = g.iter().map(|p| p.key).collect();
        if rootof
            .get(&g[0].key)
            .and_then(|r| theirs.get(r))
            .is_some_and(|t| *t == set)
        {
            threads += 1;
            msgs += set.len();
        }
    }
    (threads, msgs)
}

#[test]
fn fedora_month_threads_like_the_lists_own_archive() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
    let mbox = dir.join("fedora-devel-2010-01.mbox.gz");
    let index = dir.join("fedora-devel-2010-01_thread.html.gz");
    if !mbox.exists() || !index.exists() {
        skip(
            "fedora_month_threads_like_the_lists_own_archive",
            &format!("{} or {} not found", mbox.display(), index.display()),
        );
        return;
    }
    let raw = gunzip(&mbox);
    let mut input = Vec::new();
    for (i, e) in vraagbaak::archive::mbox::Reader::new(&raw[..]).enumerate() {
        let e = e.unwrap();
        let p = mail_parser::MessageParser::default()
            .parse(&e.raw[..])
            .unwrap();
        input.push(Msg {
            key: i as u64,
            message_id: p
                .message_id()
                .map(threading::normalize_id)
                .unwrap_or_default(),
            references: threading::references(&p),
            subject: p.subject().unwrap_or("").to_string(),
            date_ms: p.date().map(|d| d.to_timestamp() * 1000).unwrap_or(0),
        });
    }
    assert_eq!(input.len(), 292);
    let rootof = mhonarc_roots(&String::from_utf8_lossy(&gunzip(&index)));
    assert_eq!(rootof.len(), 292, "MHonArc index entries");
    let mhonarc_threads = rootof.values().collect::<BTreeSet<_>>().len();

    // By References and In-Reply-To alone: the 62 threads notmuch and public-inbox find.
    let by_refs = threading::thread(
        &input,
        &Options {
            subject_window_ms: None,
        },
    );
    assert_eq!(by_refs.len(), 62);
    // With the subject fallback, as the archive threads: MHonArc's threads exactly.
    let ours = threading::thread(&input, &Options::default());
    let (same, msgs) = agreement(&ours, &rootof);
    eprintln!(
        "fedora-devel 2010-01: ours {} threads ({} by references only), MHonArc {}; \
         {} identical threads holding {}/292 messages",
        ours.len(),
        by_refs.len(),
        mhonarc_threads,
        same,
        msgs
    );
    assert_eq!(ours.len(), mhonarc_threads);
    assert_eq!((same, msgs), (mhonarc_threads, 292));
    // Every message is placed exactly once, and every parent is in the same thread.
    let mut seen = BTreeSet::new();
    for g in &ours {
        let keys: BTreeSet<u64> = g.iter().map(|p| p.key).collect();
        for p in g {
            assert!(seen.insert(p.key));
            assert!(p.parent.is_none_or(|q| keys.contains(&q)));
        }
    }
    assert_eq!(seen.len(), 292);
}
