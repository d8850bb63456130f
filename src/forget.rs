//! Being forgotten (GDPR art. 17): `forget` by mail (confirmed like unsubscribing) or
//! `vraagbaak members forget LIST ADDR`.
//!
//! Everything keyed by the address goes (member record, one-click id, pending requests,
//! bounce history, queued and failed deliveries, rate-limit counters, events, held and
//! quarantined mail); in every stored post, digest and queued mail the address and the
//! member's name become a neutral label, and the member's own posts get that label as
//! author, or are deleted with `forget_posts = "delete"`. The archive is then written anew
//! from the store (its pages, feed, search index, mbox files and message downloads), so
//! nothing derived keeps the old name. `vraagbaak store compact` (daemon stopped) rewrites
//! the database so that no deleted record survives in sled's log files.
//!
//! A request that came by mail is recorded (in the same transaction as its confirmation)
//! and carried out by the pipeline task, so a crash cannot lose it; it is idempotent.

use crate::config::{ForgetPosts, Language, ListConfig};
use crate::store::{ForgetReport, Relabel};
use crate::Services;

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
    let report = store.forget(
        list.key(),
        &Forget {
            addr: addr.to_string(),
            name,
            label_addr,
            label_name,
            delete_posts: list.forget_posts == ForgetPosts::Delete,
        },
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

/// What to forget, and what to put in its place.
#[derive(Debug, Clone)]
pub struct Forget {
    pub addr: String,
    /// The member's display name as it appears in mail (replaced when 4 characters or more).
    pub name: Option<String>,
    pub label_addr: String,
    pub label_name: String,
    pub delete_posts: bool,
}

impl Forget {
    /// `raw` with every occurrence of the address (any case) and the name replaced; `None`
    /// when neither occurs.
    pub fn relabel(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut out = replace_ci(raw, self.addr.as_bytes(), self.label_addr.as_bytes());
        if let Some(n) = self
            .name
            .as_deref()
            .filter(|n| n.trim().chars().count() >= 4)
        {
            out = replace_ci(&out, n.trim().as_bytes(), self.label_name.as_bytes());
        }
        (out != raw).then_some(out)
    }

    /// A whole stored message: its base64 and quoted-printable parts are decoded and
    /// relabelled too (text parts with the label, re-encoded; binary attachments with an
    /// `x` mask of the same length, so that offsets inside the file stay right), nested
    /// messages likewise; then the plain bytes as in [`Forget::relabel`].
    pub fn relabel_message(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let encoded = self.relabel_encoded(raw, 0);
        let base = encoded.as_deref().unwrap_or(raw);
        match (self.relabel(base), encoded.is_some()) {
            (Some(v), _) => Some(v),
            (None, true) => Some(base.to_vec()),
            (None, false) => None,
        }
    }

    fn relabel_encoded(&self, raw: &[u8], depth: usize) -> Option<Vec<u8>> {
        use base64::Engine;
        use mail_parser::{Encoding, PartType};
        if depth > 8 {
            return None;
        }
        let needle = self.addr.to_ascii_lowercase().into_bytes();
        let has = |b: &[u8]| {
            b.len() >= needle.len()
                && b.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(&needle))
        };
        let msg = mail_parser::MessageParser::default().parse(raw)?;
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for p in msg.parts.iter() {
            let (s, e) = (p.offset_body as usize, p.offset_end as usize);
            if s > e || e > raw.len() {
                continue;
            }
            let replacement = match (&p.body, p.encoding) {
                (PartType::Message(_), _) => self.relabel_encoded(&raw[s..e], depth + 1),
                (PartType::Multipart(_), _) | (_, Encoding::None) => None,
                (body, enc) => {
                    let decoded = p.contents();
                    if !has(decoded) {
                        continue;
                    }
                    let text = matches!(body, PartType::Text(_) | PartType::Html(_));
                    let new = if text {
                        self.relabel(decoded).unwrap_or_else(|| decoded.to_vec())
                    } else {
                        let mask: Vec<u8> = self
                            .addr
                            .bytes()
                            .map(|c| if c == b'@' { b'@' } else { b'x' })
                            .collect();
                        replace_ci(decoded, self.addr.as_bytes(), &mask)
                    };
                    Some(match enc {
                        Encoding::QuotedPrintable => quoted_printable::encode(&new),
                        _ => {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&new);
                            let mut o = Vec::with_capacity(b64.len() + b64.len() / 38);
                            for chunk in b64.as_bytes().chunks(76) {
                                o.extend_from_slice(chunk);
                                o.extend_from_slice(b"\r\n");
                            }
                            o
                        }
                    })
                }
            };
            if let Some(r) = replacement {
                edits.push((s, e, r));
            }
        }
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|x| x.0);
        let mut out = Vec::with_capacity(raw.len());
        let mut pos = 0;
        for (s, e, r) in edits {
            if s < pos {
                continue;
            }
            out.extend_from_slice(&raw[pos..s]);
            out.extend_from_slice(&r);
            pos = e;
        }
        out.extend_from_slice(&raw[pos..]);
        Some(out)
    }

    /// A post of the forgotten member: its author fields become the label, and the rest
    /// is relabelled as in [`Forget::relabel`].
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
        self.relabel_message(&out).unwrap_or(out)
    }
}

/// Replaces every ASCII-case-insensitive occurrence of `from` in `hay` by `to`.
fn replace_ci(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || hay.len() < from.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay.len() - i >= from.len() && hay[i..i + from.len()].eq_ignore_ascii_case(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
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
}
