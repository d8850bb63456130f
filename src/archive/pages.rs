//! The pages: which files a pass writes (thread pages in parallel, months, the front page,
//! tags, figures, the feed), each rendered from the thread index and the posts.

use super::*;

/// schema.org `QAPage` markup (JSON-LD) for a solved thread of a public archive: the
/// question, its accepted answer and the other answers. `msgs`: (seq, author, date, text).
pub(super) fn qa_page_json(
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

/// One rendered message of a thread page, and what the search index keeps of it.
pub(super) struct MessageView {
    ctx: minijinja::Value,
    text: String,
}

impl Site<'_> {
    pub(super) fn key(&self) -> &str {
        self.list.key()
    }

    /// A date as readers see it: in the list's time zone and language.
    pub(super) fn date(&self, ms: i64) -> String {
        self.arc
            .tpl
            .date_label(self.lang, local(ms, self.list.timezone))
    }

    pub(super) fn base_ctx(&self) -> (minijinja::Value, minijinja::Value, &'static str) {
        let list = context! {
            name => self.list.name.clone(),
            description => self.list.description.clone(),
        };
        (list, self.arc.tpl.texts(self.lang), self.lang.code())
    }

    pub(super) fn write(&self, rel: &str, bytes: &[u8], stats: &mut Stats) -> anyhow::Result<()> {
        let p = self.dir.join(rel);
        if write_if_changed(&p, bytes).with_context(|| format!("cannot write {}", p.display()))? {
            stats.files_written += 1;
        }
        Ok(())
    }

    pub(super) fn page(
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
    pub(super) fn render(&self, touched: &Touched, merge: bool) -> anyhow::Result<Stats> {
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

    pub(super) fn thread_url(id: u64) -> String {
        format!("t/{id}.html")
    }

    pub(super) fn render_thread(
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

    pub(super) fn render_message(
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

    pub(super) fn render_month(
        &self,
        month: &str,
        names: &[&str],
        stats: &mut Stats,
    ) -> anyhow::Result<()> {
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

    pub(super) fn render_front(
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
    pub(super) fn render_tags_and_figures(
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
    pub(super) fn question_author(&self, t: &ArchThread) -> anyhow::Result<String> {
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
    pub(super) fn thread_entry(
        &self,
        t: &ArchThread,
        root: &str,
    ) -> anyhow::Result<minijinja::Value> {
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

    pub(super) fn render_feed(&self, stats: &mut Stats) -> anyhow::Result<()> {
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
