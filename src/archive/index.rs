//! The thread index: each post read, parsed (in parallel) and put into its thread in seq
//! order, merges, solved marks settled, and the layout of a thread page; kept in the store.

use super::*;

/// The thread index while posts are being indexed: reads go to what this pass wrote, then
/// to the store; writes are kept here and written in one transaction per
/// [`Index::BATCH`] posts (and at the end). A crash between batches loses only index rows
/// of posts whose pages were not rendered yet; the next update indexes them again.
pub(super) struct Index<'a> {
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
    pub(super) const BATCH: usize = 1000;

    pub(super) fn new(store: &'a Store, key: &'a str) -> Self {
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

    pub(super) fn msg(&self, seq: u64) -> anyhow::Result<Option<ArchMsg>> {
        match self.msgs.get(&seq) {
            Some(m) => Ok(Some(m.clone())),
            None => Ok(self.store.arch_msg(self.key, seq)?),
        }
    }

    pub(super) fn thread(&self, id: u64) -> anyhow::Result<Option<ArchThread>> {
        match self.threads.get(&id) {
            Some(t) => Ok(Some(t.clone())),
            None => Ok(self.store.arch_thread(self.key, id)?),
        }
    }

    /// The thread a chain of merges ends in.
    pub(super) fn resolve(&self, mut id: u64) -> anyhow::Result<Option<ArchThread>> {
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

    pub(super) fn id(&self, message_id: &str) -> anyhow::Result<Option<u64>> {
        match self.ids.get(message_id) {
            Some(t) => Ok(Some(*t)),
            None => Ok(self.store.arch_id(self.key, message_id)?),
        }
    }

    pub(super) fn subject(&self, base: &str) -> anyhow::Result<Option<u64>> {
        match self.subjects.get(base) {
            Some(t) => Ok(Some(*t)),
            None => Ok(self.store.arch_subject(self.key, base)?),
        }
    }

    pub(super) fn month_count(&self, month: &str, thread: u64) -> anyhow::Result<u32> {
        match self.months.get(&(month.to_string(), thread)) {
            Some(n) => Ok(*n),
            None => Ok(self.store.arch_month_count(self.key, month, thread)?),
        }
    }

    pub(super) fn apply(&mut self, w: ArchWrite) -> anyhow::Result<()> {
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

    pub(super) fn flush(&mut self) -> anyhow::Result<()> {
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
pub(super) struct Prepared {
    meta: PostMeta,
    msg: ArchMsg,
    /// What the post says about its thread (`[opgelost]`, `#heropend`), not yet checked
    /// against who may say it.
    mark: Option<qa::Mark>,
    /// For a post that may start a thread (no references): its question's terms.
    terms: (Vec<String>, Vec<String>),
}

impl Archive {
    /// The thread a chain of merges ends in, as stored.
    pub(super) fn resolve(&self, list: &str, id: u64) -> anyhow::Result<Option<ArchThread>> {
        Index::new(&self.store, list).resolve(id)
    }

    /// Puts one post into the thread index.
    /// Reads and parses posts for indexing, in parallel (the expensive part of indexing;
    /// the thread assignment that follows must go in seq order).
    pub(super) fn prepare(&self, key: &str, seqs: &[u64]) -> anyhow::Result<Vec<Option<Prepared>>> {
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

    pub(super) fn prepare_one(&self, key: &str, seq: u64) -> anyhow::Result<Option<Prepared>> {
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
    pub(super) fn index_range(
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
    pub(super) fn index_post(
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
    pub(super) fn settle(
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
    pub(super) fn layout(
        &self,
        key: &str,
        t: &ArchThread,
    ) -> anyhow::Result<Vec<(ArchMsg, Placed)>> {
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
