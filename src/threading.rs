//! Threading: the JWZ algorithm (<https://www.jwz.org/doc/threading.html>) over References
//! and In-Reply-To, with an RFC 5256 base-subject fallback limited in time.
//!
//! Pure functions only; the archive keeps the persistent thread assignment in the store.
//! Written here rather than taken from a crate: the Rust threading crates we found either
//! recurse (a hostile 10,000-deep thread overflows the stack) or depend on input order; this
//! one sorts its input first, so every delivery order of the same messages gives the same
//! tree, and walks trees with explicit stacks.

use std::collections::HashMap;

/// One message as threading sees it.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The caller's id for the message (unique).
    pub key: u64,
    /// Normalized ([`normalize_id`]); may be empty.
    pub message_id: String,
    /// Normalized parent ids, oldest first ([`references`]).
    pub references: Vec<String>,
    pub subject: String,
    pub date_ms: i64,
}

/// A message placed in a tree: `parent` is the key of the nearest real ancestor (messages
/// that are only referenced are not shown), None at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub key: u64,
    pub parent: Option<u64>,
    pub depth: usize,
}

/// How [`thread`] groups.
#[derive(Debug, Clone)]
pub struct Options {
    /// Group threads by base subject only when their dates are this close; None: never.
    pub subject_window_ms: Option<i64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            subject_window_ms: Some(30 * 86_400_000),
        }
    }
}

/// Leading markers that say "reply" (compared lower-case, without the colon).
const REPLY: &[&str] = &[
    "re", "aw", "antw", "sv", "vs", "odp", "r", "ref", "rif", "res",
];
/// Leading markers that say "forward".
const FORWARD: &[&str] = &["fwd", "fw", "wg", "tr", "doorst", "rv", "enc", "i"];

/// Strips one leading marker (`Re:`, `AW:`, `Re[2]:`, `Fwd :` ...) from `s`; returns the
/// rest and whether the marker was a reply marker.
fn strip_marker(s: &str) -> Option<(&str, bool)> {
    let word_end = s
        .char_indices()
        .find(|(_, c)| !c.is_alphabetic())
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if word_end == 0 {
        return None;
    }
    let word = s[..word_end].to_lowercase();
    let is_reply = REPLY.contains(&word.as_str());
    if !is_reply && !FORWARD.contains(&word.as_str()) {
        return None;
    }
    let mut rest = &s[word_end..];
    // An optional counter: `Re[2]:`, `Re(2):`, `Re^2:`.
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(r) = rest.strip_prefix(open) {
            let end = r.find(close)?;
            if !r[..end].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            rest = &r[end + 1..];
        }
    }
    if let Some(r) = rest.strip_prefix('^') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let rest = rest.trim_start();
    // The colon, ASCII or full-width (Chinese and Japanese clients).
    let rest = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix('\u{ff1a}'))?;
    Some((rest.trim_start(), is_reply))
}

/// Strips a leading `[list prefix]` blob.
fn strip_blob(s: &str) -> Option<&str> {
    let r = s.strip_prefix('[')?;
    let end = r.find(']')?;
    Some(r[end + 1..].trim_start())
}

/// The subject without a trailing "(fwd)" marker, when it has one.
fn strip_fwd_suffix(s: &str) -> Option<&str> {
    let end = s.trim_end();
    let cut = end.len().checked_sub(5)?;
    end.get(cut..)
        .is_some_and(|t| t.eq_ignore_ascii_case("(fwd)"))
        .then(|| end[..cut].trim_end())
}

/// Base subject and whether a reply marker was seen.
fn analyse(subject: &str) -> (String, bool) {
    let mut s = subject.trim();
    let mut reply = false;
    let mut first_marker = true;
    loop {
        // Trailing "(fwd)" markers.
        if let Some(rest) = strip_fwd_suffix(s) {
            s = rest;
            continue;
        }
        if let Some(r) = strip_marker(s) {
            if first_marker {
                reply |= r.1;
            }
            first_marker = false;
            s = r.0;
            continue;
        }
        if let Some(r) = strip_blob(s) {
            // Only a prefix blob followed by something: "[forum] x", not "[x]" alone.
            if !r.is_empty() {
                s = r;
                continue;
            }
        }
        break;
    }
    let base = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (base, reply)
}

/// A subject as a thread list shows it: leading `Re:`, `AW:`, `Antw:`, `Fwd:` ... markers
/// (and trailing "(fwd)") removed, whitespace collapsed, case and `[...]` tags kept
/// (`Re: [PATCH v2] x` → `[PATCH v2] x`). The list's own prefix is the caller's to remove.
pub fn strip_reply_markers(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        if let Some(rest) = strip_fwd_suffix(s) {
            s = rest;
            continue;
        }
        match strip_marker(s) {
            Some((rest, _)) => s = rest,
            None => break,
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 5256 base subject, lower-cased and whitespace-collapsed, for comparing.
pub fn base_subject(subject: &str) -> String {
    analyse(subject).0
}

/// True when the subject, after optional `[prefix]` blobs, starts with a reply marker.
pub fn is_reply_subject(subject: &str) -> bool {
    let mut s = subject.trim();
    while let Some(r) = strip_blob(s) {
        s = r;
    }
    strip_marker(s).is_some_and(|(_, reply)| reply)
}

/// `<abc@x>` → `abc@x`: angle brackets, whitespace and comments removed. The case is kept:
/// the local part of a Message-ID is case-sensitive.
pub fn normalize_id(raw: &str) -> String {
    let s = raw.trim();
    let s = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The `<...>` ids in a header's text, in order.
fn ids_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(a) = rest.find('<') {
        let Some(len) = rest[a + 1..].find('>') else {
            break;
        };
        let id = normalize_id(&rest[a + 1..a + 1 + len]);
        if !id.is_empty() {
            out.push(id);
        }
        rest = &rest[a + 1 + len + 1..];
    }
    // No angle brackets at all: a bare id some clients write.
    if out.is_empty() {
        if let Some(w) = text.split_whitespace().find(|w| w.contains('@')) {
            out.push(normalize_id(w));
        }
    }
    out
}

/// The parent chain of a message, oldest first: References; In-Reply-To's first id when
/// References is missing, or appended when it is not References' last (Outlook).
pub fn references(msg: &mail_parser::Message) -> Vec<String> {
    let own = msg.message_id().map(normalize_id).unwrap_or_default();
    let refs = msg.header_raw("References").map(ids_in).unwrap_or_default();
    let irt = msg
        .header_raw("In-Reply-To")
        .map(ids_in)
        .unwrap_or_default()
        .into_iter()
        .next();
    let mut out: Vec<String> = Vec::with_capacity(refs.len() + 1);
    for r in refs.into_iter().chain(irt) {
        if r != own && !out.contains(&r) {
            out.push(r);
        } else if r != own && out.last() != Some(&r) {
            // Seen earlier in the chain: keep its first position, so no loop is implied.
        }
    }
    out
}

struct Container {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Earliest date in the subtree (for sorting and the subject window).
    date: i64,
    alive: bool,
}

struct Forest<'a> {
    msgs: &'a [Msg],
    order: Vec<usize>,
    c: Vec<Container>,
}

impl Forest<'_> {
    fn new_container(&mut self) -> usize {
        self.c.push(Container {
            msg: None,
            parent: None,
            children: Vec::new(),
            date: i64::MAX,
            alive: true,
        });
        self.c.len() - 1
    }

    /// Whether `a` is `b` or one of `b`'s ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut x = Some(b);
        while let Some(n) = x {
            if n == a {
                return true;
            }
            x = self.c[n].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.c[child].parent.take() {
            self.c[p].children.retain(|&k| k != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.c[child].parent = Some(parent);
        self.c[parent].children.push(child);
    }

    /// The sort key of a container: earliest date, then the smallest key in it.
    fn sort_key(&self, n: usize) -> (i64, u64) {
        let key = self.c[n]
            .msg
            .map(|m| self.msgs[m].key)
            .or_else(|| {
                self.c[n]
                    .children
                    .iter()
                    .filter_map(|&k| self.c[k].msg.map(|m| self.msgs[m].key))
                    .min()
            })
            .unwrap_or(u64::MAX);
        (self.c[n].date, key)
    }
}

/// JWZ over a set of messages: the threads, each flattened in display order (a root, then
/// its descendants depth-first). Siblings and threads are ordered by date, then key. Every
/// message appears exactly once, whatever its ids say (duplicates, cycles, self-references).
pub fn thread(msgs: &[Msg], opts: &Options) -> Vec<Vec<Placed>> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| (msgs[i].date_ms, msgs[i].key));
    let mut f = Forest {
        msgs,
        order: order.clone(),
        c: Vec::with_capacity(msgs.len() * 2),
    };
    let mut table: HashMap<&str, usize> = HashMap::with_capacity(msgs.len() * 2);

    // 1. A container per id; a message whose id is empty or taken gets its own container.
    let mut of_msg = vec![0usize; msgs.len()];
    for &i in &order {
        let id = msgs[i].message_id.as_str();
        let c = match table.get(id) {
            Some(&c) if !id.is_empty() && f.c[c].msg.is_none() => c,
            Some(_) => f.new_container(),
            None if id.is_empty() => f.new_container(),
            None => {
                let c = f.new_container();
                table.insert(id, c);
                c
            }
        };
        f.c[c].msg = Some(i);
        f.c[c].date = msgs[i].date_ms;
        of_msg[i] = c;
    }
    // 2. Link the reference chains, never making a loop; a message's own last reference
    // is its parent, replacing a guess made from another message's chain.
    for &i in &order {
        let mut prev: Option<usize> = None;
        for r in &msgs[i].references {
            if r.is_empty() || *r == msgs[i].message_id {
                continue;
            }
            let rc = match table.get(r.as_str()) {
                Some(&c) => c,
                None => {
                    let c = f.new_container();
                    table.insert(r.as_str(), c);
                    c
                }
            };
            if let Some(p) = prev {
                if f.c[rc].parent.is_none() && p != rc && !f.is_ancestor(rc, p) {
                    f.link(p, rc);
                }
            }
            prev = Some(rc);
        }
        let me = of_msg[i];
        match prev {
            Some(p) if p != me && !f.is_ancestor(me, p) => f.link(p, me),
            Some(_) => {}
            None => f.unlink(me),
        }
    }
    drop(table);

    // 3. Dates of subtrees, and pruning of containers without a message, bottom-up.
    let roots: Vec<usize> = (0..f.c.len())
        .filter(|&n| f.c[n].parent.is_none())
        .collect();
    let mut post = Vec::with_capacity(f.c.len());
    let mut stack: Vec<(usize, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
    while let Some((n, done)) = stack.pop() {
        if done {
            post.push(n);
            continue;
        }
        stack.push((n, true));
        for &k in f.c[n].children.iter().rev() {
            stack.push((k, false));
        }
    }
    for &n in &post {
        let d = f.c[n]
            .children
            .iter()
            .map(|&k| f.c[k].date)
            .min()
            .unwrap_or(i64::MAX);
        f.c[n].date = f.c[n].date.min(d);
        if f.c[n].msg.is_some() {
            continue;
        }
        let kids = std::mem::take(&mut f.c[n].children);
        match f.c[n].parent {
            Some(p) => {
                // Promote the children into the parent, where the empty one was.
                f.c[p].children.retain(|&k| k != n);
                for k in kids {
                    f.c[k].parent = Some(p);
                    f.c[p].children.push(k);
                }
                f.c[n].alive = false;
            }
            None if kids.len() == 1 => {
                f.c[kids[0]].parent = None;
                f.c[n].alive = false;
            }
            None if kids.is_empty() => f.c[n].alive = false,
            None => f.c[n].children = kids,
        }
    }
    let mut roots: Vec<usize> = (0..f.c.len())
        .filter(|&n| f.c[n].alive && f.c[n].parent.is_none())
        .collect();
    roots.sort_by_key(|&n| f.sort_key(n));

    // 4. Threads with the same base subject, close in time (JWZ step 5).
    if let Some(window) = opts.subject_window_ms {
        let subject_of = |f: &Forest, n: usize| -> Option<usize> {
            f.c[n].msg.or_else(|| {
                f.c[n]
                    .children
                    .iter()
                    .filter_map(|&k| f.c[k].msg)
                    .min_by_key(|&m| (msgs[m].date_ms, msgs[m].key))
            })
        };
        let mut by_subject: HashMap<String, usize> = HashMap::new();
        for &r in &roots {
            let Some(m) = subject_of(&f, r) else { continue };
            let (base, reply) = analyse(&msgs[m].subject);
            if base.is_empty() {
                continue;
            }
            match by_subject.get(&base) {
                None => {
                    by_subject.insert(base, r);
                }
                Some(&old) => {
                    let old_dummy = f.c[old].msg.is_none();
                    let old_reply =
                        subject_of(&f, old).is_some_and(|m| is_reply_subject(&msgs[m].subject));
                    let dummy = f.c[r].msg.is_none();
                    if (dummy && !old_dummy) || (old_reply && !reply && !old_dummy) {
                        by_subject.insert(base, r);
                    }
                }
            }
        }
        let mut merged_into: HashMap<usize, usize> = HashMap::new();
        for &r in &roots {
            let Some(m) = subject_of(&f, r) else { continue };
            let (base, reply) = analyse(&msgs[m].subject);
            let Some(&mut_t) = by_subject.get(&base) else {
                continue;
            };
            let mut t = mut_t;
            while let Some(&n) = merged_into.get(&t) {
                t = n;
            }
            if t == r || !f.c[r].alive || f.c[r].parent.is_some() {
                continue;
            }
            if (f.c[r].date - f.c[t].date).abs() > window {
                continue;
            }
            let t_dummy = f.c[t].msg.is_none();
            let r_dummy = f.c[r].msg.is_none();
            let t_reply = f.c[t]
                .msg
                .is_some_and(|m| is_reply_subject(&msgs[m].subject));
            let adopt = |f: &mut Forest, parent: usize, child: usize| {
                if f.c[child].msg.is_none() {
                    for k in std::mem::take(&mut f.c[child].children) {
                        f.c[k].parent = None;
                        f.link(parent, k);
                    }
                    f.c[child].alive = false;
                } else {
                    f.link(parent, child);
                }
                f.c[parent].date = f.c[parent].date.min(f.c[child].date);
            };
            if t_dummy || (!t_reply && reply && !r_dummy) {
                adopt(&mut f, t, r);
            } else if r_dummy {
                adopt(&mut f, r, t);
                by_subject.insert(base, r);
                merged_into.insert(t, r);
            } else {
                // Two roots with the same subject, neither a reply to the other: siblings
                // under a new dummy.
                let d = f.new_container();
                f.c[d].date = f.c[t].date.min(f.c[r].date);
                f.link(d, t);
                f.link(d, r);
                by_subject.insert(base, d);
                merged_into.insert(t, d);
            }
        }
        roots = (0..f.c.len())
            .filter(|&n| f.c[n].alive && f.c[n].parent.is_none())
            .collect();
        roots.sort_by_key(|&n| f.sort_key(n));
    }
    let _ = &f.order;

    // 5. Flatten: depth-first, siblings by date then key.
    let mut out = Vec::with_capacity(roots.len());
    for r in roots {
        let mut group = Vec::new();
        // (container, parent message key, depth)
        let mut stack: Vec<(usize, Option<u64>, usize)> = vec![(r, None, 0)];
        while let Some((n, parent, depth)) = stack.pop() {
            let (me, next_depth) = match f.c[n].msg {
                Some(m) => {
                    group.push(Placed {
                        key: msgs[m].key,
                        parent,
                        depth,
                    });
                    (Some(msgs[m].key), depth + 1)
                }
                None => (parent, depth),
            };
            let mut kids = f.c[n].children.clone();
            kids.sort_by_key(|&k| f.sort_key(k));
            for k in kids.into_iter().rev() {
                stack.push((k, me, next_depth));
            }
        }
        if !group.is_empty() {
            out.push(group);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(key: u64, id: &str, refs: &[&str], subject: &str, date: i64) -> Msg {
        Msg {
            key,
            message_id: id.to_string(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            subject: subject.to_string(),
            date_ms: date,
        }
    }

    /// (key, parent, depth) of every message, thread by thread.
    fn shape(msgs: &[Msg], opts: &Options) -> Vec<Vec<(u64, Option<u64>, usize)>> {
        thread(msgs, opts)
            .into_iter()
            .map(|g| g.into_iter().map(|p| (p.key, p.parent, p.depth)).collect())
            .collect()
    }

    fn no_subject() -> Options {
        Options {
            subject_window_ms: None,
        }
    }

    /// A small PRNG for shuffles (xorshift64*), so the property tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                let j = (self.next() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        // Heap's algorithm, iteratively.
        let mut a: Vec<usize> = (0..n).collect();
        let mut c = vec![0; n];
        let mut out = vec![a.clone()];
        let mut i = 0;
        while i < n {
            if c[i] < i {
                if i % 2 == 0 {
                    a.swap(0, i);
                } else {
                    a.swap(c[i], i);
                }
                out.push(a.clone());
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
        out
    }

    /// Every order of the input gives the same threads.
    fn order_independent(msgs: &[Msg], opts: &Options) {
        let want = shape(msgs, opts);
        if msgs.len() <= 6 {
            for p in permutations(msgs.len()) {
                let v: Vec<Msg> = p.iter().map(|&i| msgs[i].clone()).collect();
                assert_eq!(shape(&v, opts), want, "order {p:?}");
            }
        } else {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut v = msgs.to_vec();
            for _ in 0..200 {
                rng.shuffle(&mut v);
                assert_eq!(shape(&v, opts), want);
            }
        }
    }

    fn all_placed_once(msgs: &[Msg], opts: &Options) {
        let mut keys: Vec<u64> = thread(msgs, opts)
            .into_iter()
            .flatten()
            .map(|p| p.key)
            .collect();
        keys.sort();
        let mut want: Vec<u64> = msgs.iter().map(|m| m.key).collect();
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn a_simple_thread_in_tree_order() {
        let msgs = vec![
            m(1, "a", &[], "Vraag", 10),
            m(2, "b", &["a"], "Re: Vraag", 20),
            m(3, "c", &["a", "b"], "Re: Vraag", 30),
            m(4, "d", &["a"], "Re: Vraag", 25),
        ];
        assert_eq!(
            shape(&msgs, &Options::default()),
            vec![vec![
                (1, None, 0),
                (2, Some(1), 1),
                (3, Some(2), 2),
                (4, Some(1), 1)
            ]]
        );
        order_independent(&msgs, &Options::default());
    }

    #[test]
    fn missing_parent_keeps_its_children_together() {
        // JWZ: the parent "a" was never received; its replies stay one thread, as
        // siblings at the top (no phantom is shown).
        let msgs = vec![
            m(2, "b", &["a"], "Re: Vraag", 20),
            m(3, "c", &["a"], "Re: Vraag", 30),
            m(4, "d", &["a", "c"], "Re: Vraag", 40),
        ];
        let s = shape(&msgs, &no_subject());
        assert_eq!(s, vec![vec![(2, None, 0), (3, None, 0), (4, Some(3), 1)]]);
        order_independent(&msgs, &no_subject());
    }

    #[test]
    fn replies_before_their_parent_and_a_grandparent_missing() {
        let msgs = vec![
            m(5, "e", &["x", "a", "b"], "Re: Vraag", 50),
            m(1, "a", &["x"], "Vraag", 10),
            m(2, "b", &["x", "a"], "Re: Vraag", 20),
        ];
        let s = shape(&msgs, &no_subject());
        assert_eq!(
            s,
            vec![vec![(1, None, 0), (2, Some(1), 1), (5, Some(2), 2)]]
        );
        order_independent(&msgs, &no_subject());
    }

    #[test]
    fn disagreeing_references_take_the_message_own_chain_without_cycles() {
        // c says its parent is b; d's chain says a → c. c's own References win.
        let msgs = vec![
            m(1, "a", &[], "x", 10),
            m(2, "b", &["a"], "Re: x", 20),
            m(3, "c", &["a", "b"], "Re: x", 30),
            m(4, "d", &["a", "c"], "Re: x", 40),
            m(5, "e", &["c", "a"], "Re: x", 50),
        ];
        let s = shape(&msgs, &no_subject());
        assert_eq!(s.len(), 1);
        let parent_of = |k| s[0].iter().find(|p| p.0 == k).map(|p| p.1);
        assert_eq!(parent_of(3), Some(Some(2)));
        assert_eq!(parent_of(4), Some(Some(3)));
        all_placed_once(&msgs, &no_subject());
        order_independent(&msgs, &no_subject());
    }

    #[test]
    fn cycles_and_self_references_lose_nothing() {
        let msgs = vec![
            m(1, "a", &["b"], "x", 10),
            m(2, "b", &["a"], "x", 20),
            m(3, "c", &["c"], "y", 30),
            m(4, "d", &["e", "d", "e"], "z", 40),
        ];
        all_placed_once(&msgs, &no_subject());
        all_placed_once(&msgs, &Options::default());
        order_independent(&msgs, &no_subject());
        let s = shape(&msgs, &no_subject());
        // a and b are one thread (a's own References, read first, make b its parent; b's
        // would close a loop and are ignored), c and d alone.
        assert_eq!(s[0], vec![(2, None, 0), (1, Some(2), 1)]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn duplicate_ids_and_missing_ids_are_kept() {
        let msgs = vec![
            m(1, "a", &[], "x", 10),
            m(2, "a", &[], "x (again)", 20),
            m(3, "", &[], "no id", 30),
            m(4, "", &["a"], "Re: x", 40),
            m(5, "b", &["a"], "Re: x", 50),
        ];
        all_placed_once(&msgs, &no_subject());
        order_independent(&msgs, &no_subject());
        let s = shape(&msgs, &no_subject());
        // The earliest "a" owns the id; replies hang under it.
        assert_eq!(s[0], vec![(1, None, 0), (4, Some(1), 1), (5, Some(1), 1)]);
    }

    #[test]
    fn in_reply_to_only_and_references_only() {
        let raw = b"Message-ID: <r@x>\r\nIn-Reply-To: <p@x> (Jan's message of Monday)\r\nSubject: Re: q\r\n\r\nbody\r\n";
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert_eq!(references(&msg), vec!["p@x"]);
        let raw =
            b"Message-ID: <r@x>\r\nReferences: <a@x>\r\n <b@x>\r\nSubject: Re: q\r\n\r\nbody\r\n";
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert_eq!(references(&msg), vec!["a@x", "b@x"]);
        // notmuch: In-Reply-To that is not References' last is the parent (appended).
        let raw =
            b"Message-ID: <r@x>\r\nReferences: <a@x> <b@x>\r\nIn-Reply-To: <c@x>\r\n\r\nbody\r\n";
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert_eq!(references(&msg), vec!["a@x", "b@x", "c@x"]);
        // Own id and garbage are dropped.
        let raw = b"Message-ID: <r@x>\r\nReferences: junk <r@x> <a@x> <\r\n\r\nbody\r\n";
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert_eq!(references(&msg), vec!["a@x"]);
    }

    #[test]
    fn outlook_replies_join_by_subject_only_within_the_window() {
        let day = 86_400_000;
        let msgs = vec![
            m(1, "q", &[], "[forum] Vraag over leefloon", 0),
            m(2, "r", &[], "AW: [forum] Vraag over leefloon", day),
            m(3, "s", &[], "Antw: Vraag over leefloon", 2 * day),
        ];
        let s = shape(&msgs, &Options::default());
        assert_eq!(
            s,
            vec![vec![(1, None, 0), (2, Some(1), 1), (3, Some(1), 1)]]
        );
        order_independent(&msgs, &Options::default());
        // 60 days later: a new thread.
        let late = vec![
            m(1, "q", &[], "Vraag over leefloon", 0),
            m(2, "r", &[], "Re: Vraag over leefloon", 60 * day),
        ];
        assert_eq!(shape(&late, &Options::default()).len(), 2);
        // Forwards are not replies; two questions with the same subject become siblings
        // of one thread; an empty subject never groups.
        let fwd = vec![
            m(1, "q", &[], "Vraag", 0),
            m(2, "r", &[], "Doorst: Vraag", day),
        ];
        assert_eq!(
            shape(&fwd, &Options::default()),
            vec![vec![(1, None, 0), (2, None, 0)]]
        );
        let empty = vec![m(1, "q", &[], "Re:", 0), m(2, "r", &[], "", day)];
        assert_eq!(shape(&empty, &Options::default()).len(), 2);
        assert_eq!(shape(&fwd, &no_subject()).len(), 2);
    }

    #[test]
    fn base_subjects() {
        for (s, want) in [
            ("Re: [forum] Re: Fwd: x", "x"),
            ("AW: AW: Antw: SV: x (fwd)", "x"),
            ("Re[2]: x", "x"),
            ("RE:   Leefloon   en  huur ", "leefloon en huur"),
            ("[forum] ", "[forum]"),
            ("Doorst: WG: TR: x", "x"),
            ("Ré: ç", "ré: ç"),
            ("Re: [PATCH v2] man7/foo.7: fix", "man7/foo.7: fix"),
            ("", ""),
        ] {
            assert_eq!(base_subject(s), want, "{s:?}");
        }
        for (s, want) in [
            (
                "Re: RE: Antw: AW: Fwd: Leefloon  voor een cliënt",
                "Leefloon voor een cliënt",
            ),
            (
                "Re: [PATCH v2] man7/foo.7: fix",
                "[PATCH v2] man7/foo.7: fix",
            ),
            ("Vraag (fwd)", "Vraag"),
            ("Reactie: x", "Reactie: x"),
        ] {
            assert_eq!(strip_reply_markers(s), want, "{s:?}");
        }
        assert!(is_reply_subject("[forum] AW: x"));
        assert!(is_reply_subject("Re[3]: x"));
        assert!(!is_reply_subject("Fwd: x"));
        assert!(!is_reply_subject("Doorst: x"));
        assert!(!is_reply_subject("Reactie: x"));
    }

    #[test]
    fn every_delivery_order_of_a_larger_thread_gives_the_same_tree() {
        let mut msgs = vec![m(0, "m0", &[], "Vraag", 0)];
        let mut rng = Rng(42);
        for i in 1..40u64 {
            let parent = rng.next() % i;
            let mut refs: Vec<String> = msgs[parent as usize].references.clone();
            refs.push(format!("m{parent}"));
            // Some clients drop References (subject only), some lose the middle.
            let refs = match i % 7 {
                0 => Vec::new(),
                3 => refs.last().cloned().into_iter().collect(),
                _ => refs,
            };
            msgs.push(Msg {
                key: i,
                message_id: format!("m{i}"),
                references: refs,
                subject: "Re: Vraag".into(),
                date_ms: (i as i64) * 1000,
            });
        }
        // One missing from the set (a gap in the archive).
        msgs.remove(5);
        order_independent(&msgs, &Options::default());
        order_independent(&msgs, &no_subject());
        all_placed_once(&msgs, &Options::default());
    }

    #[test]
    fn deep_and_wide_threads_do_not_overflow() {
        let n = 10_000u64;
        let mut chain = Vec::with_capacity(n as usize);
        for i in 0..n {
            let refs: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("d{}", i - 1)]
            };
            chain.push(Msg {
                key: i,
                message_id: format!("d{i}"),
                references: refs,
                subject: "deep".into(),
                date_ms: i as i64,
            });
        }
        let t = thread(&chain, &Options::default());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].last().map(|p| p.depth), Some(n as usize - 1));
        let wide: Vec<Msg> = (0..100_000u64)
            .map(|i| Msg {
                key: i,
                message_id: format!("w{i}"),
                references: if i == 0 { vec![] } else { vec!["w0".into()] },
                subject: "wide".into(),
                date_ms: i as i64,
            })
            .collect();
        let t = thread(&wide, &Options::default());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].len(), 100_000);
    }
}
