//! Being forgotten (GDPR art. 17): `forget` by mail (confirmed like unsubscribing) or
//! `vraagbaak members forget LIST ADDR`.
//!
//! Everything keyed by the address goes (member record, one-click id, pending requests,
//! bounce history, queued and failed deliveries, rate-limit counters, events, held and
//! quarantined mail); in every stored post, digest and queued mail the address and the
//! member's name become a neutral label, and the member's own posts get that label as
//! author, or are deleted with `forget_posts = "delete"`. Only the member's own address and
//! name are replaced: the address only as a whole address (forgetting `an@ocmw.be` leaves
//! `jan@ocmw.be` alone), the name only as whole words where a name stands (address fields,
//! attribution lines; `Anna` is never taken out of `Joanna`); see [`scan`] for the rules. The archive is then written anew
//! from the store (its pages, feed, search index, mbox files and message downloads), so
//! nothing derived keeps the old name. `vraagbaak store compact` (daemon stopped) rewrites
//! the database so that no deleted record survives in the storage engine's log files.
//!
//! A request that came by mail is recorded (in the same transaction as its confirmation)
//! and carried out by the pipeline task, so a crash cannot lose it; it is idempotent.

mod scan;

use crate::config::{ForgetPosts, Language, ListConfig};
use crate::store::{ForgetReport, Relabel};
use crate::Services;
use scan::{contains_ci, replace_addr, Name, NamePass, Scope};

/// The neutral author of a forgotten member's posts.
pub fn label(list: &ListConfig) -> (String, String) {
    let name = match list.language {
        Language::Nl => "Vergeten lid",
        Language::En => "Former member",
    };
    (name.to_string(), "forgotten-member@invalid".to_string())
}

/// Forgets `addr` on `list` and rewrites the list's archive.
pub fn run(svc: &Services, list: &ListConfig, addr: &str) -> anyhow::Result<ForgetReport> {
    let store = &svc.store;
    // The name as the member gave it, else as their posts showed it.
    let name = match store.member(list.key(), addr)?.and_then(|m| m.name) {
        Some(n) => Some(n),
        None => store
            .posts(list.key())?
            .into_iter()
            .find(|p| p.from_addr.eq_ignore_ascii_case(addr))
            .and_then(|p| p.from_name),
    };
    let (label_name, label_addr) = label(list);
    // Envelope addresses (spooled mail's recipient, queued mail's bounce address) that
    // route to this list: another list's records are never touched.
    let of_list = |a: &str| {
        crate::router::route(&svc.cfg, a)
            .is_some_and(|(l, _)| l.key().eq_ignore_ascii_case(list.key()))
    };
    let report = store.forget(
        list.key(),
        &Forget {
            addr: addr.to_string(),
            name,
            label_addr,
            label_name,
            delete_posts: list.forget_posts == ForgetPosts::Delete,
        },
        &of_list,
    )?;
    crate::failpoint::hit("forget-before-archive");
    svc.archive.rewrite(list)?;
    tracing::info!(
        list = %list.local(),
        domain = addr.rsplit('@').next().unwrap_or(""),
        member = report.member,
        records = report.records,
        relabelled = report.relabelled,
        posts_deleted = report.posts_deleted,
        "member forgotten"
    );
    Ok(report)
}

/// The configured lists `addr` is a member of or has posts (accepted or held) on, in
/// configuration order: what `members forget LIST ADDR --all-lists` forgets it on.
pub fn lists_of<'c>(svc: &'c Services, addr: &str) -> anyhow::Result<Vec<&'c ListConfig>> {
    let held = svc.store.held()?;
    let mut out = Vec::new();
    for l in &svc.cfg.lists {
        let key = l.key();
        let found = svc.store.is_member(key, addr)?
            || held.iter().any(|h| {
                h.list.eq_ignore_ascii_case(key) && h.from_addr.eq_ignore_ascii_case(addr)
            })
            || svc
                .store
                .posts(key)?
                .iter()
                .any(|p| p.from_addr.eq_ignore_ascii_case(addr));
        if found {
            out.push(l);
        }
    }
    Ok(out)
}

/// Carries out the forget requests confirmed by mail or on the web.
pub fn run_requested(svc: &Services) -> anyhow::Result<usize> {
    let mut n = 0;
    for (list, addr) in svc.store.forget_requests()? {
        if let Some(l) = svc.cfg.list(&list) {
            run(svc, l, &addr)?;
            n += 1;
        }
        svc.store.forget_request_done(&list, &addr)?;
    }
    Ok(n)
}

/// Where `addr` occurs in `h` as a whole address (for the store's tests).
#[cfg(test)]
pub(crate) fn scan_find_addr(h: &[u8], addr: &str) -> Vec<usize> {
    scan::find_addr(h, addr.as_bytes())
}

/// What to forget, and what to put in its place.
#[derive(Debug, Clone)]
pub struct Forget {
    pub addr: String,
    /// The member's display name as it appears in mail (replaced when 4 characters or
    /// more, as whole words where a name stands: see [`scan`]).
    pub name: Option<String>,
    pub label_addr: String,
    pub label_name: String,
    pub delete_posts: bool,
}

impl Forget {
    fn name(&self) -> Option<Name> {
        self.name.as_deref().and_then(Name::new)
    }

    /// Whether `raw` may hold anything to replace (a quick test before the real work):
    /// the address, the name's first word, encoded-words or encoded parts.
    fn may_mention(&self, raw: &[u8], name: Option<&Name>) -> bool {
        contains_ci(raw, self.addr.as_bytes())
            || name.is_some_and(|n| {
                n.ascii_hint()
                    .is_none_or(|w| contains_ci(raw, w.as_bytes()) || contains_ci(raw, b"=?"))
            })
            || contains_ci(raw, b"base64")
            || contains_ci(raw, b"quoted-printable")
    }

    /// `raw` (a message, a header, a Message-ID, a record's metadata) with every whole
    /// occurrence of the address (any ASCII case) replaced, and the name where a name
    /// stands in others' text; `None` when neither occurs.
    pub fn relabel(&self, raw: &[u8]) -> Option<Vec<u8>> {
        self.relabel_plain(raw, true, Scope::Others, Scope::Others)
    }

    /// The name in the header block (when `headers`) read as `head`'s text and in the
    /// body as `body`'s, then the address everywhere.
    fn relabel_plain(
        &self,
        raw: &[u8],
        headers: bool,
        head: Scope,
        body: Scope,
    ) -> Option<Vec<u8>> {
        // The name pass only where the name's first word (or an encoded-word) occurs.
        let name = self.name().filter(|n| {
            n.ascii_hint()
                .is_none_or(|w| contains_ci(raw, w.as_bytes()) || contains_ci(raw, b"=?"))
        });
        let named = name.as_ref().and_then(|n| {
            let pass = NamePass {
                name: n,
                addr: self.addr.as_bytes(),
                label: &self.label_name,
            };
            let edits = pass.edits(raw, headers, head, body);
            (!edits.is_empty()).then(|| scan::apply(raw, edits))
        });
        let base = named.as_deref().unwrap_or(raw);
        match replace_addr(base, self.addr.as_bytes(), self.label_addr.as_bytes()) {
            Some(v) => Some(v),
            None => named,
        }
        .filter(|v| v != raw)
    }

    /// A whole stored message: its base64 and quoted-printable parts are decoded and
    /// relabelled too (text parts with the label, re-encoded; binary attachments with an
    /// `x` mask of the same length, so that offsets inside the file stay right), nested
    /// messages likewise (a nested message from the member as one of its posts: digests);
    /// then the plain bytes as in [`Forget::relabel`]. Parts where nothing is found keep
    /// every byte.
    pub fn relabel_message(&self, raw: &[u8]) -> Option<Vec<u8>> {
        self.relabel_message_as(raw, Scope::Others)
    }

    fn relabel_message_as(&self, raw: &[u8], scope: Scope) -> Option<Vec<u8>> {
        if scope == Scope::Others && !self.may_mention(raw, self.name().as_ref()) {
            return None;
        }
        let (encoded, parsed) = self.relabel_parts(raw, 0, scope);
        let base = encoded.as_deref().unwrap_or(raw);
        // Text parts of the member's own post were done part by part when the message
        // could be parsed (a plain pass would also see base64 lines as text).
        let body = if parsed { Scope::Others } else { scope };
        match (self.relabel_plain(base, true, scope, body), encoded) {
            (Some(v), _) => Some(v),
            (None, Some(e)) => Some(e),
            (None, None) => None,
        }
        .filter(|v| v != raw)
    }

    /// The edits of [`Forget::relabel_message`] inside MIME parts, and whether `raw` could
    /// be parsed as a message at all.
    fn relabel_parts(&self, raw: &[u8], depth: usize, scope: Scope) -> (Option<Vec<u8>>, bool) {
        use mail_parser::{Encoding, PartType};
        if depth > 8 {
            return (None, false);
        }
        let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
            return (None, false);
        };
        let mut edits: Vec<scan::Edit> = Vec::new();
        for p in msg.parts.iter() {
            let (s, e) = (p.offset_body as usize, p.offset_end as usize);
            if s > e || e > raw.len() {
                continue;
            }
            let part = &raw[s..e];
            let text = matches!(p.body, PartType::Text(_) | PartType::Html(_));
            let replacement = match (&p.body, p.encoding) {
                (PartType::Message(_), Encoding::None) => {
                    if scan::from_is(part, self.addr.as_bytes()) {
                        Some(self.relabel_author(part)).filter(|v| v != part)
                    } else {
                        self.relabel_parts(part, depth + 1, Scope::Others).0
                    }
                }
                (PartType::Multipart(_), _) => None,
                (_, Encoding::None) if text && scope == Scope::Own => {
                    self.relabel_plain(part, false, Scope::Own, Scope::Own)
                }
                (_, Encoding::None) => None,
                (_, enc) => {
                    let Some(decoded) = decode_transfer(part, enc) else {
                        continue;
                    };
                    let new = if text {
                        self.relabel_plain(&decoded, false, scope, scope)
                    } else {
                        let mask: Vec<u8> = self
                            .addr
                            .bytes()
                            .map(|c| if c == b'@' { b'@' } else { b'x' })
                            .collect();
                        replace_addr(&decoded, self.addr.as_bytes(), &mask)
                    };
                    new.map(|new| encode_transfer(&new, enc))
                }
            };
            if let Some(r) = replacement {
                edits.push((s, e, r));
            }
        }
        if edits.is_empty() {
            return (None, true);
        }
        (Some(scan::apply(raw, edits)), true)
    }

    /// A post of the forgotten member: its author fields become the label, and the rest
    /// is relabelled as in [`Forget::relabel_message`], the name also in free text (it is
    /// the member's own: signature, subject).
    pub fn relabel_author(&self, raw: &[u8]) -> Vec<u8> {
        let (fields, body) = crate::compose::split_message(raw);
        let mut out = Vec::with_capacity(raw.len());
        for fl in &fields {
            let n = fl.name.to_ascii_lowercase();
            if matches!(n.as_str(), "from" | "sender" | "reply-to" | "return-path") {
                out.extend_from_slice(
                    format!("{}: {} <{}>\r\n", fl.name, self.label_name, self.label_addr)
                        .as_bytes(),
                );
            } else {
                out.extend_from_slice(fl.raw);
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.relabel_message_as(&out, Scope::Own).unwrap_or(out)
    }
}

/// A part's body without its transfer encoding, as bytes (in the part's own charset);
/// `None` when it does not decode.
fn decode_transfer(body: &[u8], enc: mail_parser::Encoding) -> Option<Vec<u8>> {
    match enc {
        mail_parser::Encoding::QuotedPrintable => {
            quoted_printable::decode(body, quoted_printable::ParseMode::Robust).ok()
        }
        mail_parser::Encoding::Base64 => crate::compose::decode_base64_lenient(body),
        mail_parser::Encoding::None => Some(body.to_vec()),
    }
}

fn encode_transfer(new: &[u8], enc: mail_parser::Encoding) -> Vec<u8> {
    match enc {
        mail_parser::Encoding::QuotedPrintable => quoted_printable::encode(new),
        mail_parser::Encoding::None => new.to_vec(),
        mail_parser::Encoding::Base64 => crate::compose::base64_lines(new, b"\r\n"),
    }
}

impl Relabel for Forget {
    fn addr(&self) -> &str {
        &self.addr
    }
    fn delete_posts(&self) -> bool {
        self.delete_posts
    }
    fn label(&self) -> (&str, &str) {
        (&self.label_name, &self.label_addr)
    }
    fn relabel(&self, raw: &[u8]) -> Option<Vec<u8>> {
        Forget::relabel(self, raw)
    }
    fn relabel_message(&self, raw: &[u8]) -> Option<Vec<u8>> {
        Forget::relabel_message(self, raw)
    }
    fn relabel_author(&self, raw: &[u8]) -> Vec<u8> {
        Forget::relabel_author(self, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_relabels_encoded_parts() {
        use base64::Engine;
        let f = Forget {
            addr: "jan@ocmw.be".into(),
            name: None,
            label_addr: "forgotten-member@invalid".into(),
            label_name: "Former member".into(),
            delete_posts: false,
        };
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let raw = format!(
            "From: an@x.be\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            b64("Vraag van Jan@ocmw.be over leefloon".as_bytes()),
            b64(b"\x00\x01bin jan@ocmw.be bin\xff"),
        );
        let out = f.relabel_message(raw.as_bytes()).unwrap();
        let m = mail_parser::MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.body_text(0).unwrap(),
            "Vraag van forgotten-member@invalid over leefloon"
        );
        let att = m.attachment(0).unwrap().contents();
        assert_eq!(att, b"\x00\x01bin xxx@xxxxxxx bin\xff");
        assert!(f
            .relabel_message(b"From: an@x.be\r\n\r\nniets\r\n")
            .is_none());
    }

    fn an() -> Forget {
        Forget {
            addr: "an@ocmw.be".into(),
            name: Some("Anna".into()),
            label_addr: "forgotten-member@invalid".into(),
            label_name: "Former member".into(),
            delete_posts: false,
        }
    }

    fn text(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.expect("something relabelled")).unwrap()
    }

    #[test]
    fn another_address_that_ends_in_the_forgotten_one_is_untouched() {
        use base64::Engine;
        let f = an();
        let raw = format!(
            "From: Joanna Jansen <jan@ocmw.be>\r\nTo: forum@x.org\r\nCc: JAN@OCMW.BE\r\n\
Message-ID: <20240101120000.1-1-jan@ocmw.be>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
Schrijf naar jan@ocmw.be of j.an@ocmw.be of an@ocmw.be.nl.\r\n--B\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            base64::engine::general_purpose::STANDARD.encode(b"\x00jan@ocmw.be\xff")
        );
        assert!(f.relabel_message(raw.as_bytes()).is_none());
        assert!(f.relabel(raw.as_bytes()).is_none());
        assert!(f.relabel(b"20240101120000.1-1-jan@ocmw.be").is_none());
        // An's own git send-email Message-ID is relabelled.
        assert_eq!(
            text(f.relabel(b"20240101120000.1-1-an@ocmw.be")),
            "20240101120000.1-1-forgotten-member@invalid"
        );
    }

    #[test]
    fn a_name_inside_another_word_is_untouched() {
        let f = an();
        let raw = b"From: Joanna Jansen <jan@ocmw.be>\r\nTo: Anna-Lena <al@x.be>\r\n\
Subject: Vraag van Joanna\r\n\r\nDag Joanna, Annabel en Anna-Lena,\r\n\r\nJoanna\r\n";
        assert!(f.relabel_message(raw).is_none());
        assert!(f.relabel_author(raw).windows(6).any(|w| w == b"Joanna"));
        let own = String::from_utf8(f.relabel_author(raw)).unwrap();
        assert!(own.contains("Subject: Vraag van Joanna\r\n"), "{own}");
        assert!(
            own.contains("Dag Joanna, Annabel en Anna-Lena,\r\n\r\nJoanna\r\n"),
            "{own}"
        );
    }

    #[test]
    fn the_address_at_the_end_of_a_sentence_and_in_upper_case_is_replaced() {
        let f = an();
        assert_eq!(
            text(f.relabel(b"Mail an@ocmw.be.\r\nOf AN@OCMW.BE, of An@Ocmw.Be!\r\n")),
            "Mail forgotten-member@invalid.\r\nOf forgotten-member@invalid, of \
forgotten-member@invalid!\r\n"
        );
    }

    #[test]
    fn the_name_is_replaced_where_a_name_stands() {
        let f = an();
        let raw = "From: Joanna Jansen <jan@ocmw.be>\r\nTo: Anna <an@ocmw.be>, \"ANNA\" <a2@x.be>\r\n\
Cc: =?utf-8?q?Anna?= <an@ocmw.be>, =?utf-8?b?Sm9hbm5h?= <jan@ocmw.be>\r\nSubject: Anna's vraag\r\n\r\n\
Anna vroeg het al.\r\n\r\nOp ma 23 nov. 2026 om 09:00 schreef Anna <\r\nan@ocmw.be>:\r\n> Groet, Anna\r\n\
> Van: Anna\r\n> Aan: Joanna\r\nOn Mon, Anna wrote:\r\nSigned-off-by: Anna <an@ocmw.be>\r\n";
        let out = text(f.relabel_message(raw.as_bytes()));
        assert_eq!(
            out,
            "From: Joanna Jansen <jan@ocmw.be>\r\nTo: Former member <forgotten-member@invalid>, \
\"Former member\" <a2@x.be>\r\nCc: Former member <forgotten-member@invalid>, =?utf-8?b?Sm9hbm5h?= \
<jan@ocmw.be>\r\nSubject: Anna's vraag\r\n\r\nAnna vroeg het al.\r\n\r\nOp ma 23 nov. 2026 om 09:00 \
schreef Former member <\r\nforgotten-member@invalid>:\r\n> Groet, Anna\r\n> Van: Former member\r\n\
> Aan: Joanna\r\nOn Mon, Former member wrote:\r\nSigned-off-by: Former member \
<forgotten-member@invalid>\r\n"
        );
        // In the member's own post, the name goes from free text too.
        let own = String::from_utf8(f.relabel_author(
            b"From: Anna <an@ocmw.be>\r\nSubject: Anna stelt zich voor\r\n\r\nGroet,\r\nAnna\r\n\
anna@example.org\r\n",
        ))
        .unwrap();
        assert_eq!(
            own,
            "From: Former member <forgotten-member@invalid>\r\nSubject: Former member stelt zich \
voor\r\n\r\nGroet,\r\nFormer member\r\nanna@example.org\r\n"
        );
    }

    #[test]
    fn digests_lose_the_name_in_their_contents_and_the_members_sections() {
        let f = an();
        let sep = "-".repeat(30);
        let body = format!(
            "Today's topics:\r\n\r\n  1. Vraag (Anna)\r\n  2. Re: Vraag (Joanna Jansen)\r\n\r\n{}\r\n\r\n\
Message: 1\r\nFrom: Anna <an@ocmw.be>\r\nSubject: Vraag\r\n\r\nWie weet het?\r\nAnna\r\n\r\n{sep}\r\n\r\n\
Message: 2\r\nFrom: Joanna Jansen <jan@ocmw.be>\r\nSubject: Re: Vraag\r\n\r\nZo.\r\nAnna\r\n\r\n{sep}\r\n",
            "-".repeat(70)
        );
        let raw = format!(
            "From: Forum <forum-request@x.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n{}",
            String::from_utf8(quoted_printable::encode(body.as_bytes())).unwrap()
        );
        let out = f.relabel_message(raw.as_bytes()).unwrap();
        let m = mail_parser::MessageParser::default().parse(&out).unwrap();
        let got = m.body_text(0).unwrap().into_owned();
        let want = body
            .replace("(Anna)", "(Former member)")
            .replace(
                "From: Anna <an@ocmw.be>",
                "From: Former member <forgotten-member@invalid>",
            )
            .replacen("Wie weet het?\r\nAnna", "Wie weet het?\r\nFormer member", 1);
        assert_eq!(got, want);
        // Joanna's section keeps its "Anna" (it is Joanna's text, not a name line).
        assert!(got.contains("Zo.\r\nAnna\r\n"));
    }
}
