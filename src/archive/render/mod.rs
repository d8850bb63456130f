//! Mail to safe HTML for the archive, and addresses out of everything the archive writes.
//!
//! - text/plain is escaped by hand (format=flowed joined, quotes grouped and folded,
//!   Outlook's "Original Message" tails folded, signatures dimmed, http/https links);
//! - text/html goes through ammonia with a strict allow-list: no script, style, event
//!   handler, image, iframe, form, class or id survives, and links keep only http/https;
//! - every other part is an attachment, offered for download under a generated safe name;
//! - addresses are replaced in names, subjects, bodies and in the raw downloads.
//!
//! This file walks a message's parts ([`render`]) and lists its attachments; `text` turns
//! plain text into HTML, `html` sanitizes mail HTML, `privacy` finds what must not be
//! published (addresses, clients' numbers) and `download` scrubs the raw `.eml` and mbox.

use ammonia::UrlRelative;
use base64::Engine;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use unicode_normalization::UnicodeNormalization;

use super::closing::{
    self, is_closing, is_disclaimer, is_rule, signature_block, MAX_DISCLAIMER_LINES,
};
use crate::config::Language;
use crate::redact::{self, Redact};

mod download;
mod html;
mod privacy;
#[cfg(test)]
mod tests;
mod text;

pub use download::*;
pub use html::*;
pub use privacy::*;
pub use text::*;

/// Interface texts used inside rendered messages (from `archive-templates/i18n/`).
#[derive(Debug, Clone)]
pub struct Labels {
    /// "Show quote ({n} lines)"
    pub quoted_lines: String,
    pub attachments: String,
    pub forwarded_message: String,
    pub problem_undecodable: String,
    pub problem_truncated: String,
    pub problem_too_deep: String,
    pub problem_too_many_parts: String,
    pub problem_unreadable: String,
    pub signature_omitted: String,
    /// The one line a confidentiality disclaimer folds into.
    pub disclaimer: String,
    /// "[image: ...]" for an image's description.
    pub image: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            quoted_lines: "Show quote ({n} lines)".into(),
            attachments: "Attachments".into(),
            forwarded_message: "Forwarded message".into(),
            problem_undecodable: "Part of this message could not be decoded correctly; it is shown as well as possible. The original is in the download.".into(),
            problem_truncated: "A part longer than 1 MB is shortened here; the whole message is in the download.".into(),
            problem_too_deep: "This message is nested deeper than 32 levels; the deeper parts are offered as attachments.".into(),
            problem_too_many_parts: "This message has more than 500 parts; the rest is in the download.".into(),
            problem_unreadable: "This message could not be read as mail; the original is kept for download.".into(),
            signature_omitted: "This message was digitally signed; the signature is not published because it carries the sender's address.".into(),
            disclaimer: "Confidentiality notice".into(),
            image: "image".into(),
        }
    }
}

/// An attachment, to be written under `file_name` (already safe: `{index}-{ascii name}`).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub index: usize,
    pub file_name: String,
    /// The sender's own name for it (last path component, addresses and clients' numbers
    /// taken out), as readers see it; `file_name` when it had none.
    pub shown_name: String,
    pub declared_type: String,
    pub size: usize,
    pub bytes: Vec<u8>,
}

/// A rendered message.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Safe HTML for inside `<div class="content">`.
    pub html: String,
    /// The author's own text (no quotes, no signature), for the search index.
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// What could not be shown as sent, in the reader's language.
    pub problems: Vec<String>,
}

const MAX_DEPTH: usize = 32;
const MAX_PARTS: usize = 500;
const MAX_PART: usize = 1 << 20;
const MAX_SEARCH_TEXT: usize = 64 << 10;
/// Quotes up to this many lines are shown open; longer ones are folded.
const OPEN_QUOTE_LINES: usize = 4;

/// Renders a parsed message. `href(index, file_name)` gives the link to an attachment.
pub fn render(
    msg: &Message,
    privacy: Privacy,
    labels: &Labels,
    href: &dyn Fn(usize, &str) -> String,
) -> Rendered {
    let mut r = Renderer {
        privacy,
        labels,
        href,
        out: Rendered::default(),
        parts: 0,
        problems: HashSet::new(),
    };
    let mut html = String::new();
    r.message(msg, 0, &mut html);
    if !r.out.attachments.is_empty() {
        html.push_str("<section class=\"attachments\"><h3>");
        html.push_str(&escape(&labels.attachments));
        html.push_str("</h3><ul>");
        for a in &r.out.attachments {
            html.push_str("<li><a href=\"");
            html.push_str(&escape(&(r.href)(a.index, &a.file_name)));
            html.push_str("\" download=\"");
            html.push_str(&escape(&a.shown_name));
            html.push_str("\">");
            html.push_str(&escape(&a.shown_name));
            html.push_str("</a> <span class=\"meta\">");
            html.push_str(&escape(&a.declared_type));
            html.push_str(", ");
            html.push_str(&human_size(a.size));
            html.push_str("</span></li>");
        }
        html.push_str("</ul></section>");
    }
    r.out.html = html;
    if r.out.text.len() > MAX_SEARCH_TEXT {
        let mut cut = MAX_SEARCH_TEXT;
        while !r.out.text.is_char_boundary(cut) {
            cut -= 1;
        }
        r.out.text.truncate(cut);
    }
    r.out
}

struct Renderer<'a> {
    privacy: Privacy,
    labels: &'a Labels,
    href: &'a dyn Fn(usize, &str) -> String,
    out: Rendered,
    parts: usize,
    problems: HashSet<&'static str>,
}

impl Renderer<'_> {
    fn problem(&mut self, key: &'static str) {
        if self.problems.insert(key) {
            let text = match key {
                "undecodable" => &self.labels.problem_undecodable,
                "truncated" => &self.labels.problem_truncated,
                "deep" => &self.labels.problem_too_deep,
                _ => &self.labels.problem_too_many_parts,
            };
            self.out.problems.push(text.clone());
        }
    }

    /// Renders one message (the top one or an attached one). Attached messages nest at
    /// most as deep as mail-parser parses them (3), so this recursion is bounded.
    fn message(&mut self, msg: &Message, nesting: usize, html: &mut String) {
        if msg.parts.is_empty() {
            return;
        }
        // Multiparts are walked with an explicit stack: a hostile message may nest
        // thousands deep without touching our call stack.
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        let mut seen = HashSet::new();
        while let Some((id, depth)) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(part) = msg.parts.get(id) else {
                continue;
            };
            self.parts += 1;
            if self.parts > MAX_PARTS {
                self.problem("parts");
                break;
            }
            if part.is_encoding_problem {
                self.problem("undecodable");
            }
            match &part.body {
                PartType::Multipart(children) => {
                    if depth >= MAX_DEPTH {
                        self.problem("deep");
                        self.deep_rest(msg, children, &mut seen);
                        continue;
                    }
                    let alternative = part
                        .content_type()
                        .and_then(|c| c.subtype())
                        .is_some_and(|s| s.eq_ignore_ascii_case("alternative"));
                    if alternative {
                        if let Some(best) = choose_alternative(msg, children) {
                            stack.push((best, depth + 1));
                        }
                    } else {
                        for c in children.iter().rev() {
                            stack.push((*c as usize, depth + 1));
                        }
                    }
                }
                PartType::Text(text) => self.text_part(part, id, text, html),
                PartType::Html(text) => self.html_part(part, id, text, html),
                PartType::Binary(b) | PartType::InlineBinary(b) => {
                    self.attachment(part, id, b.to_vec());
                }
                PartType::Message(inner) => {
                    if nesting >= 3 || is_attachment(part) && attachment_name(part).is_some() {
                        let raw = scrub_raw(inner.raw_message.as_ref(), self.privacy);
                        self.attachment(part, id, raw);
                        continue;
                    }
                    html.push_str("<div class=\"attached-message\"><p class=\"meta\">");
                    html.push_str(&escape(&self.labels.forwarded_message));
                    let who = author_name(inner, self.privacy);
                    let subject = inner.subject().map(|s| self.privacy.text(s));
                    for v in [who.as_deref(), subject.as_deref()].into_iter().flatten() {
                        html.push_str(" · ");
                        html.push_str(&escape(v));
                    }
                    html.push_str("</p>");
                    self.message(inner, nesting + 1, html);
                    html.push_str("</div>");
                }
            }
        }
    }

    /// Parts below the depth limit: every leaf becomes an attachment.
    fn deep_rest(&mut self, msg: &Message, children: &[u32], seen: &mut HashSet<usize>) {
        let mut stack: Vec<usize> = children.iter().map(|c| *c as usize).collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            self.parts += 1;
            if self.parts > MAX_PARTS {
                self.problem("parts");
                return;
            }
            let Some(part) = msg.parts.get(id) else {
                continue;
            };
            match &part.body {
                PartType::Multipart(c) => stack.extend(c.iter().map(|c| *c as usize)),
                PartType::Text(t) | PartType::Html(t) => {
                    let b = self.privacy.text(t).into_owned().into_bytes();
                    self.attachment(part, id, b);
                }
                PartType::Binary(b) | PartType::InlineBinary(b) => {
                    self.attachment(part, id, b.to_vec())
                }
                PartType::Message(m) => {
                    let raw = scrub_raw(m.raw_message.as_ref(), self.privacy);
                    self.attachment(part, id, raw);
                }
            }
        }
    }

    fn text_part(&mut self, part: &MessagePart, id: usize, text: &str, html: &mut String) {
        let subtype = part
            .content_type()
            .map(|c| c.subtype().unwrap_or("plain").to_ascii_lowercase())
            .unwrap_or_else(|| "plain".into());
        let inline = matches!(subtype.as_str(), "plain" | "x-patch" | "x-diff" | "x-log")
            && !(is_attachment(part) && attachment_name(part).is_some());
        if !inline {
            let b = self.privacy.text(text).into_owned().into_bytes();
            self.attachment(part, id, b);
            return;
        }
        let text = self.cap(text);
        let text = self.privacy.text(text);
        if subtype != "plain" {
            html.push_str("<pre class=\"patch\">");
            html.push_str(&escape(&text));
            html.push_str("</pre>");
            push_text(&mut self.out.text, &text);
            return;
        }
        let ct = part.content_type();
        let flowed = ct
            .and_then(|c| c.attribute("format"))
            .is_some_and(|f| f.eq_ignore_ascii_case("flowed"));
        let delsp = ct
            .and_then(|c| c.attribute("delsp"))
            .is_some_and(|f| f.eq_ignore_ascii_case("yes"));
        let text = if flowed {
            Cow::Owned(unflow(&text, delsp))
        } else {
            text
        };
        let lines: Vec<&str> = text.lines().collect();
        plain(&lines, 0, self.labels, html, &mut self.out.text);
    }

    fn html_part(&mut self, part: &MessagePart, id: usize, text: &str, html: &mut String) {
        if is_attachment(part) && attachment_name(part).is_some() {
            let b = self.privacy.text(text).into_owned().into_bytes();
            self.attachment(part, id, b);
            return;
        }
        let text = self.cap(text);
        let clean = sanitize(&closing::mark_html_signatures(text), &self.labels.image);
        let clean = self.privacy.html(&clean);
        let clean = closing::html(&clean, &self.labels.disclaimer);
        html.push_str("<div class=\"html-mail\">");
        html.push_str(&clean);
        html.push_str("</div>");
        push_text(&mut self.out.text, &html_own_text(&clean, self.labels));
    }

    fn cap<'t>(&mut self, text: &'t str) -> &'t str {
        if text.len() <= MAX_PART {
            return text;
        }
        self.problem("truncated");
        let mut cut = MAX_PART;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        &text[..cut]
    }

    fn attachment(&mut self, part: &MessagePart, id: usize, mut bytes: Vec<u8>) {
        let declared_type = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(s) => format!("{}/{}", c.ctype(), s),
                None => c.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into())
            .to_ascii_lowercase();
        // S/MIME and PGP signatures: certificates carry the signer's address, and a
        // signature cannot be checked against the scrubbed message anyway.
        if matches!(
            declared_type.as_str(),
            "application/pkcs7-signature"
                | "application/x-pkcs7-signature"
                | "application/pgp-signature"
                | "application/pgp-keys"
        ) {
            if self.problems.insert("signature") {
                self.out
                    .problems
                    .push(self.labels.signature_omitted.clone());
            }
            return;
        }
        let index = self.out.attachments.len() + 1;
        // A name may carry an address or a number ("brief lid37@ocmw-37.example.pdf"):
        // taken out before the name is made safe (which would turn `@` into `_`).
        let name = attachment_name(part).map(|n| self.privacy.text(&n).into_owned());
        let mut file_name = safe_name(index, name.as_deref(), &declared_type, id);
        // Mail (message/rfc822, message/partial, ...) is a mail file whatever its name
        // says, with its addresses scrubbed like the message itself.
        if declared_type.starts_with("message/") {
            if !matches!(part.body, PartType::Message(_)) {
                bytes = scrub_raw(&bytes, self.privacy);
            }
            if !file_name.ends_with(".eml") {
                file_name.push_str(".eml");
            }
        }
        let shown_name = name
            .as_deref()
            .and_then(|n| n.rsplit(['/', '\\']).find(|s| !s.trim().is_empty()))
            .map(|n| {
                n.chars()
                    .filter(|c| !c.is_control())
                    .take(120)
                    .collect::<String>()
            })
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| file_name.clone());
        self.out.attachments.push(Attachment {
            index,
            file_name,
            shown_name,
            declared_type,
            size: bytes.len(),
            bytes,
        });
    }
}

/// In multipart/alternative: the plain text when it has any, else the last (richest) part.
fn choose_alternative(msg: &Message, children: &[u32]) -> Option<usize> {
    for c in children {
        if let Some(PartType::Text(t)) = msg.parts.get(*c as usize).map(|p| &p.body) {
            if !t.trim().is_empty() {
                return Some(*c as usize);
            }
        }
    }
    children.last().map(|c| *c as usize)
}

fn is_attachment(part: &MessagePart) -> bool {
    part.content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
}

fn attachment_name(part: &MessagePart) -> Option<String> {
    part.attachment_name()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// `{index}-{name}`: the last path component of the sender's name, folded to ASCII letters,
/// digits, `.`, `-` and `_`, no leading dot, no `..`, at most 80 characters.
pub fn safe_name(index: usize, name: Option<&str>, declared_type: &str, part: usize) -> String {
    let base = name
        .and_then(|n| n.rsplit(['/', '\\']).find(|s| !s.trim().is_empty()))
        .unwrap_or("");
    let mut s: String = base
        .nfkd()
        .filter(|c| c.is_ascii())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    let mut s = s.trim_matches(['.', '_', '-']).to_string();
    if s.len() > 80 {
        let ext = s
            .rsplit_once('.')
            .map(|(_, e)| e.to_string())
            .filter(|e| e.len() <= 10)
            .unwrap_or_default();
        s.truncate(80 - ext.len() - 1);
        if !ext.is_empty() {
            s.push('.');
            s.push_str(&ext);
        }
    }
    if s.is_empty() || s.starts_with('.') {
        s = format!("part{part}.{}", extension_for(declared_type));
    }
    format!("{index}-{s}")
}

fn extension_for(t: &str) -> &'static str {
    match t {
        "text/plain" => "txt",
        "text/html" => "html",
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "message/rfc822" => "eml",
        "text/calendar" => "ics",
        _ => "bin",
    }
}

fn human_size(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.0} kB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    }
}

fn push_text(out: &mut String, text: &str) {
    if out.len() >= MAX_SEARCH_TEXT {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(text);
}

/// HTML escaping for text and attribute values.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}
