//! Digests: one mail a day (or week) with every post, for members who ask for it.
//!
//! A digest is made from the store when it is due: at `digest_time` in the list's time
//! zone (on `digest_day` for weekly digests), earlier when its posts reach
//! `digest_max_size`, or at once with `vraagbaak digest send` (Mailman's `digests --send`).
//! It is stored in two forms, MIME (RFC 2046: a `multipart/mixed` with a plain-text table of
//! contents, a `multipart/digest` of the posts as `message/rfc822` parts, and the footer)
//! and plain text (RFC 1153), and queued for its members in the same transaction that
//! advances the list's digest state: a crash leaves either no digest (made again, with the
//! same number) or a stored one whose undelivered rows are sent after the restart, through
//! the same queue, retries, VERP and DKIM as posts. Volume and issue always advance: a new
//! volume each calendar year, issues counting from 1 within it.
//!
//! The digest state is written by the pipeline task and by `digest send` (through the
//! daemon's control socket, in the same process), one at a time.

use crate::clock::now_ms;
use crate::compose::{self, split_message};
use crate::config::{DigestPeriod, ListConfig};
use crate::store::{DigestMeta, DigestState, NewDigest, PostMeta, StoreError};
use crate::Services;
use chrono::{Datelike, TimeZone};
use mail_parser::MessageParser;

/// Header fields of a post kept in its digest copy; trace and list fields are not.
const KEEP: &[&str] = &[
    "date",
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
];

/// RFC 1153's separators.
const SEP70: &str = "----------------------------------------------------------------------";
const SEP30: &str = "------------------------------";

/// The next moment after `after_ms` at which a digest of `list` is due by the clock.
pub fn next_due_ms(list: &ListConfig, after_ms: i64) -> i64 {
    let tz = list.timezone;
    let Some(after) = tz.timestamp_millis_opt(after_ms).single() else {
        return after_ms + 86_400_000;
    };
    let mut day = after.date_naive();
    for _ in 0..15 {
        let weekday_ok = list.digest != DigestPeriod::Weekly || day.weekday() == list.digest_day;
        if weekday_ok {
            if let Some(t) = tz
                .from_local_datetime(&day.and_time(list.digest_time))
                .earliest()
            {
                if t.timestamp_millis() > after_ms {
                    return t.timestamp_millis();
                }
            }
        }
        day = day.succ_opt().unwrap_or(day);
    }
    after_ms + 7 * 86_400_000
}

/// What one pass did for a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing due (or digests are off).
    Nothing,
    /// Posts were pending but no member takes digests: they are marked done.
    NoReaders,
    /// Digest `volume`/`issue` with `posts` posts was queued for `recipients` members.
    Queued {
        volume: u32,
        issue: u32,
        posts: usize,
        recipients: usize,
    },
}

/// Makes and queues `list`'s digest if it is due at `now` (or at once with `force`).
pub fn run(
    svc: &Services,
    list: &ListConfig,
    now: i64,
    force: bool,
) -> crate::store::Result<Outcome> {
    if list.digest == DigestPeriod::Off {
        return Ok(Outcome::Nothing);
    }
    let store = &svc.store;
    let key = list.key();
    let last = store.last_seq(key)?;
    let Some(mut st) = store.digest_state(key)? else {
        // Digests begin now: posts from before are not sent again.
        store.set_digest_state(
            key,
            &DigestState {
                next_seq: last + 1,
                last_ms: now,
                ..Default::default()
            },
        )?;
        return Ok(Outcome::Nothing);
    };
    if st.next_seq > last {
        return Ok(Outcome::Nothing);
    }
    // This runs on every pipeline pass: when the clock does not make the digest due, only
    // the pending size is read (and no further than the limit).
    if !force && now < next_due_ms(list, st.last_ms) {
        let mut size = 0;
        for seq in st.next_seq..=last {
            size += store.raw(key, seq)?.map_or(0, |r| r.len());
            if size >= list.digest_max_size {
                break;
            }
        }
        if size < list.digest_max_size {
            return Ok(Outcome::Nothing);
        }
    }
    let mut posts = Vec::new();
    for seq in st.next_seq..=last {
        if let (Some(m), Some(raw)) = (store.post(key, seq)?, store.raw(key, seq)?) {
            posts.push((m, raw));
        }
    }
    let recipients: Vec<(String, bool)> = store
        .members(key)?
        .into_iter()
        .filter(|m| m.digest && m.receives_mail(now))
        .map(|m| (m.address, m.digest_plain))
        .collect();
    st.next_seq = last + 1;
    st.last_ms = now;
    // Members who muted a thread get the issue without that thread's posts: one digest
    // per set of posts left out (nearly always just one, the whole issue); a member whose
    // every post is muted gets none.
    let groups = if posts.is_empty() {
        Vec::new()
    } else {
        group_by_mutes(svc, key, &posts, recipients)?
    };
    if groups.is_empty() {
        store.set_digest_state(key, &st)?;
        return Ok(Outcome::NoReaders);
    }
    let year = list
        .timezone
        .timestamp_millis_opt(now)
        .single()
        .map_or(1970, |d| d.year());
    if st.volume == 0 || year != st.year {
        st.volume += 1;
        st.issue = 1;
        st.year = year;
    } else {
        st.issue += 1;
    }
    let total: usize = groups.iter().map(|(_, r)| r.len()).sum();
    let mut digests = Vec::new();
    for (left_out, recipients) in groups {
        let own: Vec<(PostMeta, Vec<u8>)> = posts
            .iter()
            .enumerate()
            .filter(|(i, _)| !left_out.contains(i))
            .map(|(_, p)| p.clone())
            .collect();
        let (mime, plain) =
            build(svc, list, &own, st.volume, st.issue, now).map_err(|e| StoreError::Corrupt {
                tree: "digests",
                msg: format!("cannot render the digest text: {e}"),
            })?;
        let meta = DigestMeta {
            list: key.to_string(),
            id: store.new_id()?,
            volume: st.volume,
            issue: st.issue,
            first_seq: own.first().map_or(0, |p| p.0.seq),
            last_seq: last,
            created_ms: now,
            recipients: recipients.len() as u64,
            variant_of: digests.first().map(|d: &NewDigest| d.meta.id),
        };
        digests.push(NewDigest {
            meta,
            mime,
            plain,
            recipients,
        });
    }
    crate::failpoint::hit("digest-before-store");
    store.create_digests(&st, &digests)?;
    store.flush()?;
    Ok(Outcome::Queued {
        volume: st.volume,
        issue: st.issue,
        posts: posts.len(),
        recipients: total,
    })
}

/// The digest's recipients grouped by the posts (indices into `posts`) each must not get
/// because they muted its thread; the group that misses nothing first. Members who would
/// get no post at all are left out.
type Groups = Vec<(Vec<usize>, Vec<(String, bool)>)>;

fn group_by_mutes(
    svc: &Services,
    key: &str,
    posts: &[(PostMeta, Vec<u8>)],
    recipients: Vec<(String, bool)>,
) -> crate::store::Result<Groups> {
    let store = &svc.store;
    let mut muted: std::collections::HashMap<String, std::collections::HashSet<u64>> =
        std::collections::HashMap::new();
    for (t, addr) in store.list_mutes(key)? {
        muted.entry(addr).or_default().insert(t);
    }
    if muted.is_empty() {
        let all = vec![(Vec::new(), recipients)];
        return Ok(all.into_iter().filter(|(_, r)| !r.is_empty()).collect());
    }
    // The threads each post reaches, as when it was accepted.
    let mut reaches = Vec::with_capacity(posts.len());
    for (m, raw) in posts {
        let refs = MessageParser::default()
            .parse_headers(raw.as_slice())
            .map(|h| crate::threading::references(&h))
            .unwrap_or_default();
        reaches.push(store.place_in_thread(key, &m.message_id, &refs)?.reaches);
    }
    let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<(String, bool)>> =
        std::collections::BTreeMap::new();
    for (addr, plain) in recipients {
        let left_out: Vec<usize> = match muted.get(&addr.to_lowercase()) {
            Some(threads) => (0..posts.len())
                .filter(|&i| reaches[i].iter().any(|t| threads.contains(t)))
                .collect(),
            None => Vec::new(),
        };
        if left_out.len() < posts.len() {
            groups.entry(left_out).or_default().push((addr, plain));
        }
    }
    // The empty set sorts first.
    Ok(groups.into_iter().collect())
}

/// Digests begin: every list that sends digests and has no digest state yet starts after
/// its last post (older posts are not sent again). Called before the daemon accepts mail.
pub fn init(svc: &Services) -> crate::store::Result<()> {
    for l in svc
        .cfg
        .lists
        .iter()
        .filter(|l| l.digest != DigestPeriod::Off)
    {
        if svc.store.digest_state(l.key())?.is_none() {
            let st = DigestState {
                next_seq: svc.store.last_seq(l.key())? + 1,
                last_ms: now_ms(),
                ..Default::default()
            };
            svc.store.set_digest_state(l.key(), &st)?;
        }
    }
    svc.store.flush()
}

/// Runs [`run`] for every list; logs what was queued. Returns how many digests.
pub fn run_all(
    svc: &Services,
    now: i64,
    force: bool,
    only: Option<&str>,
) -> crate::store::Result<usize> {
    // The pipeline task and `digest send` (through the control socket) may both get here:
    // one at a time, so that a digest is never made twice.
    static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    for l in &svc.cfg.lists {
        if only.is_some_and(|o| !o.eq_ignore_ascii_case(l.key())) {
            continue;
        }
        if let Outcome::Queued {
            volume,
            issue,
            posts,
            recipients,
        } = run(svc, l, now, force)?
        {
            tracing::info!(list = %l.local(), volume, issue, posts, recipients, "digest queued");
            n += 1;
        }
    }
    Ok(n)
}

/// The two forms of a digest: (MIME, RFC 1153 plain text).
fn build(
    svc: &Services,
    list: &ListConfig,
    posts: &[(PostMeta, Vec<u8>)],
    volume: u32,
    issue: u32,
    now: i64,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let date = list
        .timezone
        .timestamp_millis_opt(now)
        .single()
        .map(|d| d.format("%d-%m-%Y").to_string())
        .unwrap_or_default();
    let toc: Vec<minijinja::Value> = posts
        .iter()
        .enumerate()
        .map(|(i, (m, _))| {
            minijinja::context! {
                n => i + 1,
                subject => m.subject.clone(),
                author => m.from_name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| m.from_addr.clone()),
            }
        })
        .collect();
    let vars = minijinja::context! { volume, issue, date, count => posts.len(), toc };
    let text = svc
        .texts
        .render(&svc.cfg, list, list.language, "digest", vars)?;
    // The digest ends with the last week's questions that nobody answered yet.
    // (Those in this digest are in its table of contents already.)
    let mut open = crate::archive::qa::open_questions(&svc.store, list, now - 7 * 86_400_000)
        .map_err(|e| e.to_string())?;
    open.retain(|q| !posts.iter().any(|(m, _)| m.seq == q.seq));
    let open_text = if open.is_empty() {
        String::new()
    } else {
        let show = |ms: i64| {
            list.timezone
                .timestamp_millis_opt(ms)
                .single()
                .map(|d| d.format("%d-%m").to_string())
                .unwrap_or_default()
        };
        let items: Vec<minijinja::Value> = open
            .iter()
            .map(|q| {
                minijinja::context! {
                    subject => q.subject.clone(), author => q.author.clone(),
                    date => show(q.received_ms), url => q.url.clone(),
                }
            })
            .collect();
        let t = svc.texts.render(
            &svc.cfg,
            list,
            list.language,
            "digest-open",
            minijinja::context! { open => items },
        )?;
        format!("{}\n\n{}", t.subject, t.body.trim_end())
    };
    let footer = compose::footer_text(list);
    let id = format!(
        "digest.{volume}.{issue}.{:016x}.{}@{}",
        rand::random::<u64>(),
        list.local(),
        svc.cfg.smtp.hostname
    );
    let head = |content_type: &str, cte: &str| {
        let mut h = format!(
            "From: {} <{}>\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{id}>\r\n\
MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n",
            compose::phrase(&list.name),
            list.sub_address("request"),
            list.address,
            compose::encode_header_text(&text.subject),
            chrono::Utc::now().to_rfc2822(),
        );
        if !cte.is_empty() {
            h.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n"));
        }
        h.push_str(&compose::list_fields(list, svc.cfg.http.is_some()));
        h
    };

    // MIME (RFC 2046 5.1.5).
    let outer = format!("=_digest_{:016x}", rand::random::<u64>());
    let inner = format!("=_posts_{:016x}", rand::random::<u64>());
    let mut mime = head(&format!("multipart/mixed; boundary=\"{outer}\""), "8bit").into_bytes();
    mime.extend_from_slice(b"\r\n");
    mime.extend_from_slice(
        format!(
            "--{outer}\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\nContent-Description: {}\r\n\r\n",
            compose::encode_header_text(&text.subject)
        )
        .as_bytes(),
    );
    mime.extend_from_slice(&qp(&text.body));
    mime.extend_from_slice(
        format!("\r\n--{outer}\r\nContent-Type: multipart/digest; boundary=\"{inner}\"\r\n\r\n")
            .as_bytes(),
    );
    for (_, raw) in posts {
        mime.extend_from_slice(
            format!("--{inner}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
        mime.extend_from_slice(&digest_copy(raw, &inner));
        mime.extend_from_slice(b"\r\n");
    }
    mime.extend_from_slice(format!("--{inner}--\r\n\r\n--{outer}\r\n").as_bytes());
    mime.extend_from_slice(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
    );
    if open_text.is_empty() {
        mime.extend_from_slice(&qp(&footer));
    } else {
        mime.extend_from_slice(&qp(&format!("{open_text}\n\n{footer}")));
    }
    mime.extend_from_slice(format!("\r\n--{outer}--\r\n").as_bytes());

    // RFC 1153.
    let mut body = text.body.trim_end().to_string();
    body.push_str(&format!("\n\n{SEP70}\n\n"));
    for (i, (m, raw)) in posts.iter().enumerate() {
        let parsed = MessageParser::default().parse(raw.as_slice());
        let field = |name: &str| {
            split_message(raw)
                .0
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.value())
        };
        body.push_str(&format!("Message: {}\n", i + 1));
        if let Some(d) = field("date") {
            body.push_str(&format!("Date: {d}\n"));
        }
        let from = match &m.from_name {
            Some(n) if !n.trim().is_empty() => format!("{} <{}>", n.trim(), m.from_addr),
            _ => m.from_addr.clone(),
        };
        body.push_str(&format!("From: {from}\nSubject: {}\n", m.subject));
        body.push_str(&format!("Message-ID: <{}>\n\n", m.message_id));
        let text = parsed
            .as_ref()
            .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default();
        for line in text.replace("\r\n", "\n").lines() {
            // A line of exactly 30 dashes would end the message early for digest readers.
            if line.trim_end() == SEP30 {
                body.push(' ');
            }
            body.push_str(line);
            body.push('\n');
        }
        let attachments = parsed.as_ref().map_or(0, |p| p.attachment_count());
        if attachments > 0 {
            body.push_str(&format!("\n[{attachments} attachment(s) not included]\n"));
        }
        body.push_str(&format!("\n{SEP30}\n\n"));
    }
    if !open_text.is_empty() {
        body.push_str(&format!("{open_text}\n\n{SEP30}\n\n"));
    }
    let end = format!("End of {}", text.subject);
    body.push_str(&format!(
        "{end}\n{}\n\n{}\n",
        "*".repeat(end.chars().count()),
        footer.trim_end()
    ));
    let mut plain = head("text/plain; charset=utf-8", "quoted-printable").into_bytes();
    plain.extend_from_slice(b"\r\n");
    plain.extend_from_slice(&qp(&body));
    Ok((mime, plain))
}

/// Text as quoted-printable with CRLF line ends.
fn qp(text: &str) -> Vec<u8> {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    quoted_printable::encode(crlf.as_bytes())
}

/// A post as it goes into the digest: its own fields minus trace and list fields, its body
/// unchanged. A body line that would close the digest's boundary cannot occur: the
/// boundary is random and checked.
fn digest_copy(raw: &[u8], boundary: &str) -> Vec<u8> {
    let (fields, body) = split_message(raw);
    let mut out = Vec::with_capacity(raw.len());
    for f in &fields {
        if KEEP.contains(&f.name.to_ascii_lowercase().as_str()) {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    let marker = format!("--{boundary}");
    if body.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        // Practically impossible with a random boundary; never let it corrupt the digest.
        out.extend_from_slice(b"[this post's text could not be included]\r\n");
    } else {
        out.extend_from_slice(body);
    }
    out
}

/// `digest send`: every list's (or `only`'s) pending digest now.
pub fn send_now(svc: &Services, only: Option<&str>) -> crate::store::Result<usize> {
    run_all(svc, now_ms(), true, only)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ListConfig {
        crate::config::Config::embedded().unwrap().lists[0].clone()
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn due_times_in_the_lists_time_zone() {
        let mut l = list();
        // 07:00 in Brussels is 06:00 UTC in winter, 05:00 in summer.
        assert_eq!(
            next_due_ms(&l, at("2026-11-23T05:00:00Z")),
            at("2026-11-23T06:00:00Z")
        );
        assert_eq!(
            next_due_ms(&l, at("2026-11-23T06:00:00Z")),
            at("2026-11-24T06:00:00Z")
        );
        assert_eq!(
            next_due_ms(&l, at("2026-07-01T12:00:00Z")),
            at("2026-07-02T05:00:00Z")
        );
        // Weekly on Mondays: 2026-11-23 is a Monday.
        l.digest = DigestPeriod::Weekly;
        assert_eq!(
            next_due_ms(&l, at("2026-11-23T07:00:00Z")),
            at("2026-11-30T06:00:00Z")
        );
        assert_eq!(
            next_due_ms(&l, at("2026-11-20T07:00:00Z")),
            at("2026-11-23T06:00:00Z")
        );
    }

    #[test]
    fn queue_seq_round_trip() {
        for (id, plain) in [(1, false), (77, true), (u32::MAX as u64, true)] {
            let s = crate::store::digest_queue_seq(id, plain);
            assert_eq!(crate::store::digest_of_queue_seq(s), Some((id, plain)));
        }
        assert_eq!(crate::store::digest_of_queue_seq(12), None);
    }
}
