//! Mail to safe HTML for the archive, and addresses out of everything the archive writes.
//!
//! - text/plain is escaped by hand (format=flowed joined, quotes grouped and folded,
//!   Outlook's "Original Message" tails folded, signatures dimmed, http/https links);
//! - text/html goes through ammonia with a strict allow-list: no script, style, event
//!   handler, image, iframe, form, class or id survives, and links keep only http/https;
//! - every other part is an attachment, offered for download under a generated safe name;
//! - addresses are replaced in names, subjects, bodies and in the raw downloads.
//!
//! The address scanner and the raw-mail scrubber are written by hand: the crates that find
//! addresses validate a given string, none finds and replaces them inside running text or
//! inside base64/quoted-printable encoded MIME parts while leaving the rest byte for byte.

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

/// How addresses are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressMode {
    /// Names only; an address in a body becomes `…@…`.
    #[default]
    Hidden,
    /// The local part stays: `jan.peeters@…`.
    Local,
}

/// What the archive takes out of everything it publishes: addresses (as `mode` says), in
/// every spelling (`@`, `%40`, `=40`, `&#64;`), and clients' identifiers (`redact`, shown as
/// labels in `lang`); Message-IDs in downloads become opaque ones keyed by `id_key`.
#[derive(Debug, Clone, Copy)]
pub struct Privacy {
    pub mode: AddressMode,
    pub redact: Redact,
    pub lang: Language,
    pub id_key: [u8; 32],
}

impl Privacy {
    /// Addresses hidden, every identifier masked, in Dutch (tests and tools).
    pub fn hidden() -> Privacy {
        Privacy {
            mode: AddressMode::Hidden,
            redact: Redact::ALL,
            lang: Language::Nl,
            id_key: [0; 32],
        }
    }

    /// Bytes with addresses hidden and identifiers masked.
    pub fn bytes<'a>(&self, b: &'a [u8]) -> Cow<'a, [u8]> {
        match hide_bytes(b, self.mode) {
            Cow::Borrowed(b) => redact::mask(b, self.redact, self.lang),
            Cow::Owned(h) => match redact::mask(&h, self.redact, self.lang) {
                Cow::Borrowed(_) => Cow::Owned(h),
                Cow::Owned(m) => Cow::Owned(m),
            },
        }
    }

    /// [`Privacy::bytes`] for text.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match self.bytes(s.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(s),
            Cow::Owned(v) => Cow::Owned(
                String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
            ),
        }
    }

    /// HTML (sanitized, or a raw text/html part): judged on the text a reader sees, so that
    /// an address or number split over elements (`<b>lid</b>@<b>x.example</b>`) or written
    /// with entities is found; then byte by byte (attribute values, `%40` in links).
    pub fn html<'a>(&self, html: &'a str) -> Cow<'a, str> {
        let seen = self.html_text(html);
        match seen {
            Cow::Borrowed(h) => self.text(h),
            Cow::Owned(h) => Cow::Owned(self.text(&h).into_owned()),
        }
    }

    fn html_text<'a>(&self, html: &'a str) -> Cow<'a, str> {
        let (text, at) = project_html(html);
        let tb = text.as_bytes();
        let mut found: Vec<(usize, usize, String)> = address_spans(tb)
            .into_iter()
            .map(|span| {
                let label = String::from_utf8_lossy(&address_label(tb, span, self.mode)).into();
                (span.0, span.2, label)
            })
            .collect();
        for f in redact::find(tb, self.redact) {
            found.push((f.start, f.end, f.kind.label(self.lang).to_string()));
        }
        if found.is_empty() {
            return Cow::Borrowed(html);
        }
        found.sort();
        // Each found span of the text: its label where its first character was written,
        // the rest of its characters removed from their elements, the tags kept.
        let mut cuts: Vec<(usize, usize, String)> = Vec::new();
        let mut last_end = 0;
        for (s, e, label) in found {
            if s < last_end {
                continue;
            }
            last_end = e;
            let mut first = true;
            let mut k = s;
            while k < e {
                let (hs, _) = at[k];
                let mut j = k;
                // A run of text bytes that are contiguous in the HTML.
                while j + 1 < e && at[j + 1].0 == at[j].1 {
                    j += 1;
                }
                let he = at[j].1;
                cuts.push((hs, he, if first { label.clone() } else { String::new() }));
                first = false;
                k = j + 1;
            }
        }
        cuts.sort_by_key(|c| c.0);
        let mut out = String::with_capacity(html.len());
        let mut pos = 0;
        for (hs, he, label) in cuts {
            if hs < pos || he > html.len() {
                continue;
            }
            out.push_str(&html[pos..hs]);
            out.push_str(&escape(&label));
            pos = he;
        }
        out.push_str(&html[pos..]);
        Cow::Owned(out)
    }
}

/// The text a reader sees in HTML, and for each of its bytes the HTML bytes it came from:
/// tags left out (block elements and `<br>` as a line end, mapped to nothing), entities
/// decoded (every byte of a decoded character maps to the whole entity).
fn project_html(html: &str) -> (String, Vec<(usize, usize)>) {
    const BLOCK: &[&str] = &[
        "br",
        "p",
        "div",
        "li",
        "tr",
        "td",
        "th",
        "pre",
        "table",
        "ul",
        "ol",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "dd",
        "dt",
        "blockquote",
        "section",
        "article",
    ];
    let b = html.as_bytes();
    let mut text = String::with_capacity(html.len());
    let mut at: Vec<(usize, usize)> = Vec::with_capacity(html.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => {
                let end = html[i..].find('>').map(|e| i + e + 1).unwrap_or(b.len());
                let name: String = html[i + 1..end]
                    .trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                if BLOCK.contains(&name.as_str()) {
                    text.push('\n');
                    at.push((end, end));
                }
                i = end;
            }
            b'&' => {
                let semi = html[i..].find(';').filter(|e| *e <= 10).map(|e| i + e);
                let c = semi.and_then(|e| decode_entity(&html[i + 1..e]));
                match (c, semi) {
                    (Some(c), Some(e)) => {
                        let mut buf = [0u8; 4];
                        for _ in c.encode_utf8(&mut buf).bytes() {
                            at.push((i, e + 1));
                        }
                        text.push(c);
                        i = e + 1;
                    }
                    _ => {
                        text.push('&');
                        at.push((i, i + 1));
                        i += 1;
                    }
                }
            }
            _ => {
                let ch = html[i..].chars().next().unwrap_or('\u{fffd}');
                let n = ch.len_utf8();
                for k in 0..n {
                    at.push((i + k, i + k + 1));
                }
                text.push(ch);
                i += n;
            }
        }
    }
    (text, at)
}

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "nbsp" => ' ',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "amp" => '&',
        "commat" => '@',
        "period" => '.',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

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

/// RFC 3676: joins flowed lines (ending in a space) of the same quote depth, undoes space
/// stuffing; the signature separator `-- ` is never joined.
pub fn unflow(text: &str, delsp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut cur: Option<(usize, String)> = None;
    let flush = |out: &mut String, depth: usize, content: &str| {
        for _ in 0..depth {
            out.push('>');
        }
        if depth > 0 && !content.is_empty() {
            out.push(' ');
        }
        out.push_str(content);
        out.push('\n');
    };
    for line in text.lines() {
        let depth = line.bytes().take_while(|b| *b == b'>').count();
        let rest = &line[depth..];
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let is_sig = rest == "-- ";
        let flowed = rest.ends_with(' ') && !is_sig;
        let piece = if flowed && delsp {
            &rest[..rest.len() - 1]
        } else {
            rest
        };
        match &mut cur {
            Some((d, s)) if *d == depth => s.push_str(piece),
            Some((d, s)) => {
                flush(&mut out, *d, s);
                cur = Some((depth, piece.to_string()));
            }
            None => cur = Some((depth, piece.to_string())),
        }
        if !flowed {
            if let Some((d, s)) = cur.take() {
                flush(&mut out, d, &s);
            }
        }
    }
    if let Some((d, s)) = cur.take() {
        flush(&mut out, d, &s);
    }
    out
}

fn quote_level(line: &str) -> Option<&str> {
    let t = line.strip_prefix(' ').unwrap_or(line);
    let rest = t.strip_prefix('>')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Where Outlook (and others) put the whole previous message under the reply without `>`.
pub(super) fn is_original_header(lines: &[&str], i: usize) -> bool {
    let l = lines[i].trim();
    let lower = l.to_lowercase();
    if lower.starts_with("-----") && lower.ends_with("-----") {
        let inner = lower.trim_matches('-').trim();
        return [
            "original message",
            "oorspronkelijk bericht",
            "origineel bericht",
            "message d'origine",
            "ursprüngliche nachricht",
            "forwarded message",
            "doorgestuurd bericht",
        ]
        .contains(&inner);
    }
    let starts = |s: &str, ps: &[&str]| ps.iter().any(|p| s.starts_with(p));
    if starts(&lower, &["van:", "from:", "de :", "von:"]) {
        let next: Vec<String> = lines[i + 1..]
            .iter()
            .take(4)
            .map(|s| s.trim().to_lowercase())
            .collect();
        return next.iter().any(|n| {
            starts(
                n,
                &[
                    "verzonden:",
                    "sent:",
                    "envoyé :",
                    "gesendet:",
                    "datum:",
                    "date:",
                ],
            )
        }) && next
            .iter()
            .any(|n| starts(n, &["aan:", "to:", "onderwerp:", "subject:", "à :", "an:"]));
    }
    false
}

/// Renders text/plain lines: own text, quotes (recursively, folded when long), a
/// signature, and an Outlook-style original below the reply.
fn plain(lines: &[&str], level: usize, labels: &Labels, html: &mut String, text: &mut String) {
    let mut i = 0;
    let mut own: Vec<&str> = Vec::new();
    // `before_quote`: a quote follows, so an attribution line ("Op ... schreef Jan:") at the
    // end is shown but not searched (it names the quoted author).
    let flush_own =
        |own: &mut Vec<&str>, before_quote: bool, html: &mut String, text: &mut String| {
            while own.last().is_some_and(|l| l.trim().is_empty()) {
                own.pop();
            }
            let start = own
                .iter()
                .position(|l| !l.trim().is_empty())
                .unwrap_or(own.len());
            if start < own.len() {
                html.push_str("<div class=\"body-text\">");
                let joined = own[start..].join("\n");
                paragraphs(&own[start..], html);
                html.push_str("</div>");
                if level == 0 {
                    let cut = if before_quote {
                        attribution_lines(&own[start..])
                    } else {
                        0
                    };
                    if cut == 0 {
                        push_text(text, &joined);
                    } else {
                        let mut kept = &own[start..own.len() - cut];
                        while kept.last().is_some_and(|l| l.trim().is_empty()) {
                            kept = &kept[..kept.len() - 1];
                        }
                        if !kept.is_empty() {
                            push_text(text, &kept.join("\n"));
                        }
                    }
                }
            }
            own.clear();
        };
    while i < lines.len() {
        let line = lines[i];
        if quote_level(line).is_some() && level < MAX_DEPTH {
            flush_own(&mut own, true, html, text);
            let mut inner = Vec::new();
            while i < lines.len() {
                match quote_level(lines[i]) {
                    Some(rest) => inner.push(rest),
                    None if lines[i].trim().is_empty()
                        && lines.get(i + 1).and_then(|l| quote_level(l)).is_some() =>
                    {
                        inner.push("")
                    }
                    None => break,
                }
                i += 1;
            }
            quote(&inner, level, false, labels, html, text);
            continue;
        }
        if level == 0 {
            let tail = own_tail_end(lines, i);
            let sig = if line == "-- " || line == "--" {
                Some(i + 1)
            } else if is_closing(line) {
                Some(i)
            } else {
                None
            };
            if let Some(from) = sig {
                let end = (from..tail)
                    .find(|&j| is_disclaimer(lines, j))
                    .unwrap_or(tail);
                if signature_block(&lines[from..end], from == i) {
                    flush_own(&mut own, false, html, text);
                    let block = lines[from..end].join("\n");
                    if !block.trim().is_empty() {
                        html.push_str("<div class=\"signature\">");
                        linkify(block.trim_matches('\n').trim_end(), html);
                        html.push_str("</div>");
                    }
                    disclaimer(&lines[end..tail], labels, html);
                    i = tail;
                    continue;
                }
            }
            if is_disclaimer(lines, i) && tail - i <= MAX_DISCLAIMER_LINES {
                flush_own(&mut own, false, html, text);
                disclaimer(&lines[i..tail], labels, html);
                i = tail;
                continue;
            }
        }
        if level == 0 && is_original_header(lines, i) {
            flush_own(&mut own, false, html, text);
            let rest: Vec<&str> = lines[i..].to_vec();
            quote(&rest, level, true, labels, html, text);
            return;
        }
        own.push(line);
        i += 1;
    }
    flush_own(&mut own, false, html, text);
}

/// A line this long or longer was wrapped by the sender's mail program (at 72-76
/// columns), so the line break after it is not the author's.
const WRAPPED_LINE: usize = 50;

/// The author's text as paragraphs for any screen width: hard-wrapped lines are joined
/// into one paragraph (a short line ends a line of its own: "Hallo,"); a paragraph with
/// a line that looks like code, a patch, a table or a list keeps every line break.
fn paragraphs(lines: &[&str], html: &mut String) {
    let mut rest = lines;
    while !rest.is_empty() {
        let n = rest
            .iter()
            .position(|l| l.trim().is_empty())
            .unwrap_or(rest.len());
        let para = &rest[..n];
        rest = &rest[n..];
        while rest.first().is_some_and(|l| l.trim().is_empty()) {
            rest = &rest[1..];
        }
        if para.is_empty() {
            continue;
        }
        if para.iter().any(|l| is_structured(l)) {
            html.push_str("<p class=\"lines\">");
            match list_lines(para) {
                Some(items) => linkify(&items.join("\n"), html),
                None => linkify(&para.join("\n"), html),
            }
            html.push_str("</p>");
            continue;
        }
        html.push_str("<p>");
        for (k, line) in para.iter().enumerate() {
            linkify(line.trim_end(), html);
            if k + 1 < para.len() {
                if line.trim_end().chars().count() >= WRAPPED_LINE {
                    html.push(' ');
                } else {
                    html.push_str("<br>");
                }
            }
        }
        html.push_str("</p>");
    }
}

/// A line whose breaks matter: indented (code, a wrapped list item), a list item, a
/// table row, a patch line, a line of code, a rule, or spaced into columns.
fn is_structured(line: &str) -> bool {
    let t = line.trim_end();
    if t.starts_with("  ") || t.starts_with('\t') || t.contains('\t') || t.contains("   ") {
        return true;
    }
    let s = t.trim_start();
    is_list_item(s) || s.ends_with(';') || is_code_like(s)
}

/// "- item", "* item", "1. item", "2) item", "a) item" (already trimmed at the start).
fn is_list_item(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let numbered = (1..=3).contains(&digits)
        && matches!(b.get(digits), Some(b'.' | b')'))
        && b.get(digits + 1) == Some(&b' ');
    let lettered = b.len() > 3 && b[0].is_ascii_lowercase() && b[1] == b')' && b[2] == b' ';
    ["- ", "* ", "• ", "+ ", "– "]
        .iter()
        .any(|p| s.starts_with(p))
        || numbered
        || lettered
}

/// A table row, a patch line, a brace of code or a rule (trimmed at the start).
fn is_code_like(s: &str) -> bool {
    s.matches('|').count() >= 2
        || s.starts_with("@@")
        || s.starts_with("diff ")
        || s.starts_with("+++")
        || s.starts_with("---")
        || s.ends_with('{')
        || s == "}"
        || is_rule(s)
}

/// A paragraph that is a list (with perhaps a line or two before it), one line per item:
/// a line after a wrapped one (as long as the sender's program wraps) that does not start
/// an item continues it, so that an item wrapped at 76 columns reads as one on a phone.
/// `None` when the paragraph holds code, a table, a patch or tabs: every break stays.
fn list_lines(para: &[&str]) -> Option<Vec<String>> {
    if !para.iter().any(|l| is_list_item(l.trim_start())) {
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(para.len());
    let mut wrapped = false;
    for line in para {
        let t = line.trim_end();
        let s = t.trim_start();
        if t.contains('\t') || is_code_like(s) {
            return None;
        }
        match out.last_mut() {
            Some(last) if wrapped && !is_list_item(s) => {
                last.push(' ');
                last.push_str(s);
            }
            _ => out.push(t.to_string()),
        }
        wrapped = t.chars().count() >= WRAPPED_LINE;
    }
    Some(out)
}

/// Where the author's own text below line `from` ends: at a quote or at Outlook's
/// original below the reply, else at the end.
fn own_tail_end(lines: &[&str], from: usize) -> usize {
    (from..lines.len())
        .find(|&j| quote_level(lines[j]).is_some() || is_original_header(lines, j))
        .unwrap_or(lines.len())
}

/// A disclaimer, folded into one line; never searched.
fn disclaimer(block: &[&str], labels: &Labels, html: &mut String) {
    let body = block.join("\n");
    let body = body.trim();
    if body.is_empty() {
        return;
    }
    html.push_str("<details class=\"disclaimer\"><summary>");
    html.push_str(&escape(&labels.disclaimer));
    html.push_str("</summary><div class=\"disclaimer-text\">");
    linkify(body, html);
    html.push_str("</div></details>");
}

/// How many of the last lines of `own` (just above a quote) are an attribution: "On Mon,
/// 2 Nov 2026, Jan Peeters <…@…> wrote:", "Op 2 nov. 2026 schreef An:", possibly wrapped
/// over two lines. 0 when the last line is not one.
fn attribution_lines(own: &[&str]) -> usize {
    const SAID: &[&str] = &[
        "wrote",
        "writes",
        "schreef",
        "schrijft",
        "a écrit",
        "schrieb",
        "escribió",
        "scritto",
    ];
    let Some(last) = own.last().map(|l| l.trim().to_lowercase()) else {
        return 0;
    };
    if !last.ends_with(':') || last.chars().count() > 300 || !SAID.iter().any(|w| last.contains(w))
    {
        return 0;
    }
    let starts_like_one = |l: &str| {
        let l = l.trim().to_lowercase();
        ["on ", "op ", "am ", "le ", "el ", "il "]
            .iter()
            .any(|p| l.starts_with(p))
    };
    if own.len() >= 2 && !starts_like_one(&last) && starts_like_one(own[own.len() - 2]) {
        2
    } else {
        1
    }
}

fn quote(
    inner: &[&str],
    level: usize,
    fold: bool,
    labels: &Labels,
    html: &mut String,
    text: &mut String,
) {
    let n = inner.iter().filter(|l| !l.trim().is_empty()).count();
    if n == 0 {
        return;
    }
    if fold || n > OPEN_QUOTE_LINES {
        html.push_str("<details class=\"quote\"><summary>");
        html.push_str(&escape(&labels.quoted_lines.replace("{n}", &n.to_string())));
        html.push_str("</summary><blockquote>");
        plain(inner, level + 1, labels, html, text);
        html.push_str("</blockquote></details>");
    } else {
        html.push_str("<blockquote class=\"quote\">");
        plain(inner, level + 1, labels, html, text);
        html.push_str("</blockquote>");
    }
}

/// Escapes text and links http/https URLs.
fn linkify(s: &str, html: &mut String) {
    let lower = s.to_ascii_lowercase();
    let mut pos = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("http") {
        let start = search + found;
        let rest = &lower[start..];
        let scheme = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            search = start + 4;
            continue;
        };
        let prev_ok = start == 0
            || !s[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric());
        let mut end = start
            + s[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
                .unwrap_or(s.len() - start);
        // Trailing punctuation belongs to the sentence; a ')' only when unbalanced.
        loop {
            let url = &s[start..end];
            let Some(last) = url.chars().next_back() else {
                break;
            };
            let trim = match last {
                '.' | ',' | ';' | ':' | '!' | '?' | ']' | '}' | '*' => true,
                ')' => url.matches('(').count() < url.matches(')').count(),
                _ => false,
            };
            if !trim {
                break;
            }
            end -= last.len_utf8();
        }
        if !prev_ok || end <= start + scheme {
            search = start + scheme;
            continue;
        }
        html.push_str(&escape(&s[pos..start]));
        let url = escape(&s[start..end]);
        html.push_str("<a href=\"");
        html.push_str(&url);
        html.push_str("\" rel=\"nofollow noopener noreferrer\">");
        html.push_str(&url);
        html.push_str("</a>");
        pos = end;
        search = end;
    }
    html.push_str(&escape(&s[pos..]));
}

/// Sanitizes mail HTML with ammonia: structure and text only. Images are not loaded
/// (they would tell the sender who reads, and inline ones are not published); an image
/// with a description leaves it as text: "[afbeelding: Logo Stad Antwerpen]".
pub fn sanitize(html: &str, image: &str) -> String {
    let tags = [
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    ];
    let mut b = ammonia::Builder::empty();
    b.add_tags(tags)
        .add_tag_attributes("a", ["href"])
        // Only the description: no `src`, so nothing is fetched; replaced below.
        .add_tag_attributes("img", ["alt"])
        .add_tag_attributes("td", ["colspan", "rowspan"])
        .add_tag_attributes("th", ["colspan", "rowspan"])
        .url_schemes(HashSet::from(["http", "https"]))
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("nofollow noopener noreferrer"))
        .clean_content_tags(HashSet::from(["script", "style", "title", "template"]))
        .strip_comments(true);
    images_as_text(&b.clean(html).to_string(), image)
}

/// Replaces each `<img alt="...">` of ammonia's output (the only form it leaves: `alt` is
/// the one attribute allowed, in double quotes, with `"&<>` as entities) by its
/// description as text, at most 200 characters; an image without one is dropped.
/// By hand because ammonia has no hook to turn an element into text.
fn images_as_text(html: &str, image: &str) -> String {
    if !html.contains("<img") {
        return html.to_string();
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find("<img") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let alt_end = tag.strip_prefix("<img alt=\"").and_then(|v| {
            let q = v.find('"')?;
            Some((&v[..q], q))
        });
        match alt_end {
            Some((value, q)) => {
                let value = value
                    .replace("&quot;", "\"")
                    .replace("&nbsp;", " ")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&");
                let value: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
                let value: String = value.chars().take(200).collect();
                let after = &tag["<img alt=\"".len() + q + 1..];
                rest = after.find('>').map_or("", |g| &after[g + 1..]);
                if !value.is_empty() {
                    out.push_str("<span class=\"img-alt\">[");
                    out.push_str(&escape(image));
                    out.push_str(": ");
                    out.push_str(&escape(&value));
                    out.push_str("]</span>");
                }
            }
            None => rest = tag.find('>').map_or("", |g| &tag[g + 1..]),
        }
    }
    out.push_str(rest);
    out
}

/// The text of sanitized HTML, for the search index.
/// The author's own text of a sanitized HTML part, for the search index: what is inside
/// `<blockquote>` left out (a `>` line stands in for it, so that the attribution above is
/// recognised), block elements and `<br>` as line ends, entities decoded, then the same
/// rules as plain text (quotes, signature after `-- `, Outlook's original below a reply).
fn html_own_text(html: &str, labels: &Labels) -> String {
    const BLOCK: &[&str] = &[
        "br", "p", "div", "li", "tr", "td", "th", "pre", "table", "ul", "ol", "hr", "h1", "h2",
        "h3", "h4", "h5", "h6", "dd", "dt", "section", "article",
    ];
    const INLINE: &[&str] = &[
        "a", "b", "i", "u", "s", "em", "strong", "span", "font", "code", "small", "big", "sub",
        "sup", "mark", "abbr", "tt",
    ];
    let mut out = String::with_capacity(html.len() / 2);
    let mut quoted = 0usize;
    // Inside our own signature or disclaimer wrapper: (its tag, nesting).
    let mut skipped: Option<(String, usize)> = None;
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        if quoted == 0 && skipped.is_none() {
            out.push_str(&rest[..lt]);
        }
        let after = &rest[lt + 1..];
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = &after[..gt];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some((tag, depth)) = &mut skipped {
            if *tag == name {
                if closing {
                    *depth -= 1;
                } else {
                    *depth += 1;
                }
            }
            if *depth == 0 {
                skipped = None;
            }
        } else if !closing
            && (tag.starts_with("div class=\"signature\"")
                || tag.starts_with("details class=\"disclaimer\""))
        {
            skipped = Some((name, 1));
        } else if name == "blockquote" {
            if closing {
                quoted = quoted.saturating_sub(1);
            } else {
                if quoted == 0 {
                    out.push_str("\n>\n");
                }
                quoted += 1;
            }
        } else if quoted == 0 {
            if BLOCK.contains(&name.as_str()) {
                out.push('\n');
            } else if !INLINE.contains(&name.as_str()) {
                out.push(' ');
            }
        }
        rest = &after[gt + 1..];
    }
    if quoted == 0 && skipped.is_none() {
        out.push_str(rest);
    }
    let decoded = decode_entities(&out);
    let lines: Vec<&str> = decoded.lines().map(str::trim).collect();
    let mut text = String::new();
    let mut scratch = String::new();
    plain(&lines, 0, labels, &mut scratch, &mut text);
    text
}

/// The entities ammonia writes (and numeric ones), decoded.
pub(super) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after
            .find(';')
            .filter(|e| *e <= 10)
            .and_then(|e| Some((decode_entity(&after[..e])?, e)));
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The author as shown: the display name, or the local part when there is none.
pub fn author_name(msg: &Message, privacy: Privacy) -> Option<String> {
    let mode = privacy.mode;
    let addr = msg.from()?.first()?;
    let name = addr
        .name()
        .map(|n| n.trim().trim_matches(['"', '\'']).trim())
        .filter(|n| !n.is_empty() && !n.contains('@'));
    if let Some(n) = name {
        return Some(privacy.text(n).into_owned());
    }
    let local = addr
        .address()
        .or(addr.name())
        .and_then(|a| a.trim().split('@').next())
        .map(str::trim)
        .filter(|l| !l.is_empty())?;
    Some(match mode {
        AddressMode::Hidden => local.to_string(),
        AddressMode::Local => format!("{local}@…"),
    })
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'=')
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-') || c >= 0x80
}

/// How many bytes an at sign takes at `i`: `@`, or written as `%40` (URLs, RFC 2231
/// parameters), `=40` (quoted-printable left undecoded), `&#64;`, `&#x40;`, `&commat;`
/// (HTML). 0 when there is none.
fn at_sign(b: &[u8], i: usize) -> usize {
    let rest = &b[i..];
    match b[i] {
        b'@' => 1,
        b'%' | b'=' if rest.get(1..3) == Some(b"40") => 3,
        b'&' => [&b"&#64;"[..], b"&#x40;", b"&#X40;", b"&commat;"]
            .iter()
            .find(|f| rest.len() >= f.len() && rest[..f.len()].eq_ignore_ascii_case(f))
            .map_or(0, |f| f.len()),
        _ => 0,
    }
}

/// Every address (`local@domain.tld`, the at sign in any of [`at_sign`]'s spellings) in
/// bytes: (start, at sign, end).
fn address_spans(b: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut done = 0;
    let mut i = 0;
    while i < b.len() {
        if !matches!(b[i], b'@' | b'%' | b'=' | b'&') {
            i += 1;
            continue;
        }
        let n = at_sign(b, i);
        if n == 0 {
            i += 1;
            continue;
        }
        let mut s = i;
        while s > done && is_local_char(b[s - 1]) {
            s -= 1;
        }
        while s < i && matches!(b[s], b'.' | b'=' | b'-') {
            s += 1;
        }
        let mut e = i + n;
        while e < b.len() && is_domain_char(b[e]) {
            e += 1;
        }
        while e > i + n && matches!(b[e - 1], b'.' | b'-') {
            e -= 1;
        }
        let domain = &b[i + n..e];
        if s == i || domain.is_empty() || !domain.contains(&b'.') || domain[0] == b'.' {
            i += 1;
            continue;
        }
        out.push((s, i, e));
        done = e;
        i = e;
    }
    out
}

/// What an address is replaced with.
fn address_label(b: &[u8], (s, at, _): (usize, usize, usize), mode: AddressMode) -> Vec<u8> {
    match mode {
        AddressMode::Hidden => "…@…".as_bytes().to_vec(),
        AddressMode::Local => {
            let mut o = b[s..at].to_vec();
            o.extend_from_slice("@…".as_bytes());
            o
        }
    }
}

/// Replaces every address (`local@domain.tld`, the at sign in any spelling) in bytes.
/// Works on any ASCII-compatible charset; replacements begin and end at ASCII bytes, so
/// UTF-8 stays valid.
pub fn hide_bytes(b: &[u8], mode: AddressMode) -> Cow<'_, [u8]> {
    let spans = address_spans(b);
    if spans.is_empty() {
        return Cow::Borrowed(b);
    }
    let mut o = Vec::with_capacity(b.len());
    let mut copied = 0;
    for span in spans {
        o.extend_from_slice(&b[copied..span.0]);
        o.extend_from_slice(&address_label(b, span, mode));
        copied = span.2;
    }
    o.extend_from_slice(&b[copied..]);
    Cow::Owned(o)
}

/// [`hide_bytes`] for text.
pub fn hide_addresses(s: &str, mode: AddressMode) -> Cow<'_, str> {
    match hide_bytes(s.as_bytes(), mode) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(v) => Cow::Owned(
            String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
    }
}

/// Header fields dropped from downloads: delivery paths and signatures that carry
/// addresses, host names and IP numbers of members and mean nothing to a reader.
const DROPPED_HEADERS: &[&str] = &[
    "received",
    "x-received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-from",
    "x-envelope-to",
    "x-originating-ip",
    "received-spf",
    "authentication-results",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "dkim-signature",
    "x-google-dkim-signature",
];

/// Header fields of Message-IDs: each ID becomes an opaque one ([`opaque_ids`]), the same
/// wherever it occurs, so that a downloaded mbox still threads.
const ID_HEADERS: &[&str] = &[
    "message-id",
    "in-reply-to",
    "references",
    "resent-message-id",
];

/// The raw message for download, with every address replaced and every identifier
/// masked: in header fields (encoded words decoded first), in bodies, also inside base64
/// and quoted-printable encoded text parts (re-encoded in their own charset), in HTML as a
/// reader sees it, and in attached messages; Message-IDs made opaque.
pub fn scrub_raw(raw: &[u8], privacy: Privacy) -> Vec<u8> {
    scrub_message(&without_trace(raw), privacy, 0)
}

/// The message without the header fields in [`DROPPED_HEADERS`] (delivery traces), which
/// the archive never shows and which cost mail-parser most of its time (`Received`).
pub fn without_trace(raw: &[u8]) -> Cow<'_, [u8]> {
    let end = header_end(raw);
    let h = &raw[..end];
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    // Field by field: a field is a line and its continuation lines.
    let mut start = 0;
    while start < h.len() {
        let mut stop = start;
        loop {
            stop = match h[stop..].iter().position(|c| *c == b'\n') {
                Some(p) => stop + p + 1,
                None => h.len(),
            };
            if stop >= h.len() || !matches!(h[stop], b' ' | b'\t') {
                break;
            }
        }
        let f = &h[start..stop];
        let drop = matches!(f[0] | 0x20, b'r' | b'x' | b'd' | b'e' | b'a')
            && f.iter().position(|c| *c == b':').is_some_and(|n| {
                let name = f[..n].trim_ascii();
                DROPPED_HEADERS
                    .iter()
                    .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
            });
        if drop {
            let o = out.get_or_insert_with(|| Vec::with_capacity(raw.len()));
            o.extend_from_slice(&raw[copied..start]);
            copied = stop;
        }
        start = stop;
    }
    match out {
        None => Cow::Borrowed(raw),
        Some(mut o) => {
            o.extend_from_slice(&raw[copied..]);
            Cow::Owned(o)
        }
    }
}

fn header_end(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\n' {
            if raw.get(i + 1) == Some(&b'\n') {
                return i + 1;
            }
            if raw.get(i + 1) == Some(&b'\r') && raw.get(i + 2) == Some(&b'\n') {
                return i + 1;
            }
        }
        i += 1;
    }
    raw.len()
}

fn scrub_headers(h: &[u8], privacy: Privacy) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.len());
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (i, &c) in h.iter().enumerate() {
        if c == b'\n' {
            let next = h.get(i + 1);
            if !matches!(next, Some(b' ') | Some(b'\t')) {
                fields.push(&h[start..=i]);
                start = i + 1;
            }
        }
    }
    if start < h.len() {
        fields.push(&h[start..]);
    }
    for f in fields {
        let name = f
            .iter()
            .position(|c| *c == b':')
            .map(|p| String::from_utf8_lossy(&f[..p]).trim().to_ascii_lowercase())
            .unwrap_or_default();
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if ID_HEADERS.contains(&name.as_str()) {
            out.extend_from_slice(&opaque_ids(f, &privacy.id_key));
        } else {
            out.extend_from_slice(&scrub_header_bytes(f, privacy));
        }
    }
    out
}

/// Header bytes (a field, or the part headers and boundaries between MIME leaves): each
/// RFC 2047 encoded word decoded and judged as text, rewritten as UTF-8 base64 words when
/// something in it is taken out; the bytes around them as they are.
fn scrub_header_bytes(b: &[u8], privacy: Privacy) -> Cow<'_, [u8]> {
    if !b.windows(2).any(|w| w == b"=?") {
        return privacy.bytes(b);
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut plain_from = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if !(b[i] == b'=' && b[i + 1] == b'?') {
            i += 1;
            continue;
        }
        let mut stream = mail_parser::parsers::MessageStream::new(&b[i + 1..]);
        let Some(decoded) = stream.decode_rfc2047() else {
            i += 2;
            continue;
        };
        let end = i + 1 + stream.offset();
        out.extend_from_slice(&privacy.bytes(&b[plain_from..i]));
        match privacy.text(&decoded) {
            Cow::Borrowed(_) => out.extend_from_slice(&b[i..end]),
            Cow::Owned(clean) => out.extend_from_slice(encode_words(&clean).as_bytes()),
        }
        plain_from = end;
        i = end;
    }
    out.extend_from_slice(&privacy.bytes(&b[plain_from..]));
    // An address assembled across words ("=?utf-8?q?lid?= =?utf-8?q?=40x.example?=") is
    // caught by the whole field's decoded text: then the field is written anew.
    Cow::Owned(out)
}

/// Text as RFC 2047 encoded words (UTF-8, base64), at most 75 characters each.
fn encode_words(s: &str) -> String {
    let mut out = String::new();
    let mut chunk = String::new();
    let flush = |chunk: &mut String, out: &mut String| {
        if chunk.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("=?utf-8?b?");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(chunk.as_bytes()));
        out.push_str("?=");
        chunk.clear();
    };
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            flush(&mut chunk, &mut out);
        }
        chunk.push(c);
    }
    flush(&mut chunk, &mut out);
    out
}

/// A Message-ID field with each `<id>` replaced by an opaque one: `<` + 26 base32
/// characters of an HMAC over the ID (keyed by the installation's secret, so that nobody
/// can test a guessed ID) + `@archive.invalid>`. git send-email and many clients build IDs
/// from the author's address; every ID carries an `@` and a domain, so every one is
/// replaced. The archive's own links use sequence numbers, never Message-IDs.
pub fn opaque_ids(field: &[u8], key: &[u8; 32]) -> Vec<u8> {
    let colon = field.iter().position(|c| *c == b':').map_or(0, |p| p + 1);
    let mut out = field[..colon].to_vec();
    let mut rest = &field[colon..];
    while let Some(open) = rest.iter().position(|c| *c == b'<') {
        let Some(close) = rest[open..].iter().position(|c| *c == b'>') else {
            break;
        };
        out.extend_from_slice(&rest[..open]);
        let id = &rest[open + 1..open + close];
        out.extend_from_slice(opaque_id(id, key).as_bytes());
        rest = &rest[open + close + 1..];
    }
    // Text outside angle brackets (comments, a bare ID) keeps no address either.
    out.extend_from_slice(&hide_bytes(rest, AddressMode::Hidden));
    out
}

/// One Message-ID (without angle brackets) as its opaque form, with angle brackets.
pub fn opaque_id(id: &[u8], key: &[u8; 32]) -> String {
    use hmac::{Hmac, Mac};
    let trimmed: Vec<u8> = id
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).map(|mut m| {
        m.update(b"message-id\0");
        m.update(&trimmed);
        m.finalize().into_bytes()
    });
    let code = match mac {
        Ok(d) => data_encoding::BASE32_NOPAD
            .encode(&d[..16])
            .to_ascii_lowercase(),
        Err(_) => String::from("0"),
    };
    format!("<{}@archive.invalid>", &code[..code.len().min(26)])
}

/// [`scrub_raw`] for a message already stripped by [`without_trace`] and parsed (or not
/// parseable): the archive renders and scrubs from one parse.
pub fn scrub_parsed(lean: &[u8], msg: Option<&Message>, privacy: Privacy) -> Vec<u8> {
    scrub_with(lean, msg, privacy, 0)
}

fn scrub_message(raw: &[u8], privacy: Privacy, depth: usize) -> Vec<u8> {
    let parsed = if depth < 4 {
        MessageParser::default().parse(raw)
    } else {
        None
    };
    scrub_with(raw, parsed.as_ref(), privacy, depth)
}

fn scrub_with(raw: &[u8], msg: Option<&Message>, privacy: Privacy, depth: usize) -> Vec<u8> {
    let body_at = header_end(raw);
    let mut out = scrub_headers(&raw[..body_at], privacy);
    let Some(msg) = msg else {
        out.extend_from_slice(&privacy.bytes(&raw[body_at..]));
        return out;
    };
    let mut leaves: Vec<(usize, usize, &MessagePart)> = msg
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)))
        .map(|p| (p.offset_body as usize, p.offset_end as usize, p))
        .collect();
    leaves.sort_by_key(|l| l.0);
    let mut pos = body_at;
    for (s, e, p) in leaves {
        if s < pos || e < s || e > raw.len() {
            continue;
        }
        out.extend_from_slice(&scrub_header_bytes(&raw[pos..s], privacy));
        out.extend_from_slice(&scrub_leaf(&raw[s..e], p, privacy, depth));
        pos = e;
    }
    out.extend_from_slice(&scrub_header_bytes(&raw[pos..], privacy));
    out
}

/// A text leaf's decoded bytes scrubbed: HTML (in UTF-8) as a reader sees it, any other
/// text (or HTML in another charset) byte by byte.
fn scrub_text<'a>(b: &'a [u8], html: bool, privacy: Privacy) -> Cow<'a, [u8]> {
    if html {
        if let Ok(s) = std::str::from_utf8(b) {
            return match privacy.html(s) {
                Cow::Borrowed(_) => Cow::Borrowed(b),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            };
        }
    }
    privacy.bytes(b)
}

fn scrub_leaf<'r>(
    raw: &'r [u8],
    part: &MessagePart,
    privacy: Privacy,
    depth: usize,
) -> Cow<'r, [u8]> {
    let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
    let html = matches!(part.body, PartType::Html(_));
    match (&part.body, part.encoding) {
        (PartType::Message(_), Encoding::None) => {
            Cow::Owned(scrub_message(raw, privacy, depth + 1))
        }
        (_, Encoding::None) => scrub_text(raw, html, privacy),
        (_, Encoding::Base64) if text => {
            let Some(decoded) = crate::compose::decode_base64_lenient(raw) else {
                return privacy.bytes(raw);
            };
            match scrub_text(&decoded, html, privacy) {
                Cow::Borrowed(_) => Cow::Borrowed(raw),
                Cow::Owned(h) => {
                    let nl: &[u8] = if raw.windows(2).any(|w| w == b"\r\n") {
                        b"\r\n"
                    } else {
                        b"\n"
                    };
                    let enc = base64::engine::general_purpose::STANDARD.encode(&h);
                    let mut o = Vec::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
                    for chunk in enc.as_bytes().chunks(76) {
                        o.extend_from_slice(chunk);
                        o.extend_from_slice(nl);
                    }
                    Cow::Owned(o)
                }
            }
        }
        (_, Encoding::QuotedPrintable) if text => {
            let Ok(decoded) = quoted_printable::decode(raw, quoted_printable::ParseMode::Robust)
            else {
                return privacy.bytes(raw);
            };
            match scrub_text(&decoded, html, privacy) {
                Cow::Borrowed(_) => Cow::Borrowed(raw),
                Cow::Owned(h) => {
                    let mut o = quoted_printable::encode(&h);
                    if raw.ends_with(b"\n") && !o.ends_with(b"\n") {
                        o.extend_from_slice(b"\r\n");
                    }
                    Cow::Owned(o)
                }
            }
        }
        // Encoded binary attachments (PDF, images) are left as they are.
        _ => Cow::Borrowed(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Message<'_> {
        MessageParser::default().parse(raw.as_bytes()).unwrap()
    }

    fn html_of(raw: &str) -> Rendered {
        render(
            &parse(raw),
            Privacy::hidden(),
            &Labels::default(),
            &|_, n| format!("../a/1/{n}"),
        )
    }

    #[test]
    fn addresses_are_hidden_everywhere_in_text() {
        let t = "mail jan.peeters@ocmw-gent.be, or <an+x@x.example>. user@localhost stays; a@b";
        let h = hide_addresses(t, AddressMode::Hidden);
        assert_eq!(h, "mail …@…, or <…@…>. user@localhost stays; a@b");
        let l = hide_addresses(t, AddressMode::Local);
        assert_eq!(
            l,
            "mail jan.peeters@…, or <an+x@…>. user@localhost stays; a@b"
        );
        assert!(matches!(
            hide_addresses("geen adres", AddressMode::Hidden),
            Cow::Borrowed(_)
        ));
        assert_eq!(hide_addresses("x@é.be", AddressMode::Hidden), "…@…");
    }

    #[test]
    fn plain_text_quotes_signature_links() {
        let r = html_of(
            "From: Jan <jan@x.example>\r\nSubject: s\r\n\r\nHallo, zie https://example.org/a_(b).\r\n\r\n> kort citaat\r\n> tweede regel\r\n\r\nMijn antwoord <script>alert(1)</script>\r\n-- \r\nJan, OCMW\r\njan@x.example\r\n",
        );
        assert!(
            r.html.contains("<a href=\"https://example.org/a_(b)\""),
            "{}",
            r.html
        );
        assert!(
            r.html.contains("<blockquote class=\"quote\">"),
            "{}",
            r.html
        );
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(
            r.html
                .contains("<div class=\"signature\">Jan, OCMW\n…@…</div>"),
            "{}",
            r.html
        );
        assert!(!r.html.contains("jan@"));
        assert!(r.text.contains("Mijn antwoord") && !r.text.contains("kort citaat"));
    }

    #[test]
    fn outlook_signatures_and_disclaimers_are_dimmed_folded_and_not_searched() {
        let body = "Hallo collega's,\r\n\r\n\
Ik heb een cliënt die een huurwaarborg vraagt maar nog geen\r\n\
leefloon ontvangt. Kan het OCMW de waarborg voorschieten als de\r\n\
beslissing over het leefloon nog loopt?\r\n\r\n\
- eerste punt\r\n- tweede punt\r\n\r\n\
Met vriendelijke groeten,\r\n\r\n\
Jan Peeters\r\nMaatschappelijk werker\r\nOCMW Gent | Sociale dienst\r\n\
Tel. 09 266 12 34\r\nGSM 0486 12 34 56\r\nOnderbergen 86, 9000 Gent\r\n\r\n\
Dit bericht is vertrouwelijk en uitsluitend bestemd voor de\r\n\
geadresseerde. Indien u dit bericht per vergissing ontving,\r\n\
verwijder het dan.\r\n\r\n\
Van: An <an@x.example>\r\nVerzonden: dinsdag 6 oktober 2026 09:12\r\n\
Aan: forum@lists.example\r\nOnderwerp: vraag\r\n\r\noude tekst\r\n";
        let r = html_of(&format!(
            "From: Jan <jan@x.example>\r\nSubject: s\r\n\r\n{body}"
        ));
        let h = &r.html;
        // Hard-wrapped lines joined, a short line keeps its break, a list keeps its lines.
        assert!(
            h.contains("<p>Hallo collega&#39;s,</p>") || h.contains("<p>Hallo collega's,</p>"),
            "{h}"
        );
        assert!(h.contains("nog geen leefloon ontvangt. Kan het OCMW de waarborg voorschieten als de beslissing"), "{h}");
        assert!(
            h.contains("<p class=\"lines\">- eerste punt\n- tweede punt</p>"),
            "{h}"
        );
        // The signature from the greeting on, with its line breaks, phone numbers masked.
        assert!(h.contains("<div class=\"signature\">Met vriendelijke groeten,\n\nJan Peeters\nMaatschappelijk werker"), "{h}");
        assert!(
            h.contains("GSM [telefoonnummer]") && !h.contains("0486") && !h.contains("266 12"),
            "{h}"
        );
        // The disclaimer in one line, Outlook's original folded below.
        assert!(
            h.contains("<details class=\"disclaimer\"><summary>Confidentiality notice</summary>"),
            "{h}"
        );
        assert!(h.contains("<details class=\"quote\">"), "{h}");
        let disclaimer_at = h.find("class=\"disclaimer\"").unwrap_or(0);
        assert!(h.find("class=\"signature\"").unwrap_or(usize::MAX) < disclaimer_at);
        // Searched: the question only.
        assert!(
            r.text.contains("huurwaarborg") && r.text.contains("eerste punt"),
            "{}",
            r.text
        );
        for not in [
            "Peeters",
            "Maatschappelijk",
            "Onderbergen",
            "vertrouwelijk",
            "groeten",
            "oude tekst",
        ] {
            assert!(!r.text.contains(not), "{not} in {}", r.text);
        }
        // A `-- ` signature ends where Outlook's original starts; the original is folded.
        let r = html_of("Subject: s\r\n\r\nJa.\r\n-- \r\nAn\r\n\r\nVan: B\r\nVerzonden: nu\r\nAan: C\r\n\r\noud\r\n");
        assert!(
            r.html
                .contains("<div class=\"signature\">An</div><details class=\"quote\">"),
            "{}",
            r.html
        );
        // A greeting followed by more than a short block, or a greeting in a sentence,
        // is the author's text.
        let long: String = (0..14)
            .map(|k| format!("regel {k} van een lang verhaal\r\n"))
            .collect();
        let r = html_of(&format!("Subject: s\r\n\r\nGroeten\r\n{long}"));
        assert!(
            !r.html.contains("signature") && r.text.contains("regel 13"),
            "{}",
            r.html
        );
        let r = html_of("Subject: s\r\n\r\nGroeten uit Gent aan iedereen\r\nen tot snel\r\n");
        assert!(
            !r.html.contains("signature") && r.text.contains("Gent"),
            "{}",
            r.html
        );
        for closing in [
            "Mvg",
            "mvg,",
            "Groetjes, An",
            "Kind regards",
            "Met vriendelijke groet.",
            "Vriendelijke groeten Jan Peeters",
        ] {
            assert!(is_closing(closing), "{closing}");
        }
        for not in [
            "Groeten uit Gent",
            "Regards to all of you",
            "mvg van harte bedankt voor alles wat jullie",
        ] {
            assert!(!is_closing(not), "{not}");
        }
        // A disclaimer alone (no signature) folds too; English.
        let r = html_of("Subject: s\r\n\r\nVraag.\r\n\r\nThis e-mail and any attachments are confidential.\r\nIf you are not the intended recipient, delete it.\r\n");
        assert!(
            r.html.contains("class=\"disclaimer\"") && !r.text.contains("intended"),
            "{}",
            r.html
        );
        // Code keeps its lines.
        let r = html_of("Subject: s\r\n\r\nZo:\r\n\r\n    if (x) {\r\n        y();\r\n    }\r\n");
        assert!(
            r.html.contains("<p class=\"lines\">    if (x) {"),
            "{}",
            r.html
        );
    }

    #[test]
    fn html_signatures_and_disclaimers_are_dimmed_folded_and_not_searched() {
        let html_mail = |body: &str| {
            html_of(&format!(
                "From: Jan <jan@x.example>\r\nSubject: s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{body}"
            ))
        };
        // Outlook without a label: a greeting paragraph, then short paragraphs, a
        // disclaimer, then the original.
        let r = html_mail(
            "<div class=WordSection1><p class=MsoNormal>Heeft iemand ervaring met een huurwaarborg?</p>\
<p class=MsoNormal>Met vriendelijke groeten,</p><p class=MsoNormal><b>Jan Peeters</b></p>\
<p class=MsoNormal>Maatschappelijk werker | OCMW Gent</p><p class=MsoNormal>T 09 266 12 34</p>\
<p class=MsoNormal>Dit bericht is vertrouwelijk en uitsluitend bestemd voor de geadresseerde.</p>\
<div style='border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>Van:</b> An<br><b>Verzonden:</b> dinsdag<br><b>Aan:</b> forum<br><b>Onderwerp:</b> vraag</p></div>\
<p>oude tekst</p></div>",
        );
        let h = &r.html;
        assert!(h.contains("<div class=\"signature\"><p>Met vriendelijke groeten,</p><p><b>Jan Peeters</b></p>"), "{h}");
        assert!(h.contains("<details class=\"disclaimer\"><summary>Confidentiality notice</summary><div class=\"disclaimer-text\"><p>Dit bericht"), "{h}");
        assert!(!h.contains("266 12"), "{h}");
        assert!(r.text.contains("huurwaarborg"), "{}", r.text);
        for not in ["Peeters", "Maatschappelijk", "vertrouwelijk", "oude tekst"] {
            assert!(!r.text.contains(not), "{not} in {}", r.text);
        }
        // Labelled by the mail program (Gmail, Outlook on the web), no greeting needed.
        for label in [
            "class=\"gmail_signature\"",
            "id=\"Signature\"",
            "id=x_Signature",
        ] {
            let r = html_mail(&format!(
                "<div>Vraag over leefloon.</div><div {label}><div>An Jansen</div><div>OCMW Brugge</div></div>"
            ));
            assert!(
                r.html
                    .contains("<div class=\"signature\"><div><div>An Jansen</div>"),
                "{label}: {}",
                r.html
            );
            assert!(
                r.text.contains("leefloon") && !r.text.contains("Jansen"),
                "{}",
                r.text
            );
            assert!(!r.html.contains('\u{E000}'));
        }
        // A greeting in a quote, or with a long text below it, is left alone.
        let r = html_mail("<p>Vraag</p><blockquote><p>Groeten</p><p>An</p></blockquote>");
        assert!(!r.html.contains("signature"), "{}", r.html);
        let long: String = (0..14).map(|k| format!("<p>alinea {k}</p>")).collect();
        let r = html_mail(&format!("<p>Groeten</p>{long}"));
        assert!(
            !r.html.contains("signature") && r.text.contains("alinea 13"),
            "{}",
            r.html
        );
    }

    #[test]
    fn search_text_is_the_authors_own_words() {
        // Plain text: the attribution above a quote, the quote and the signature are shown
        // but not searched.
        let r = html_of(
            "Subject: s\r\n\r\nEigen woorden hier.\r\n\r\nOp 2 nov. 2026 schreef Jan Peeters <jan@x.example>:\r\n> citaatwoord\r\n\r\nNog eigen tekst.\r\n-- \r\nhandtekeningwoord\r\n",
        );
        assert!(r.html.contains("schreef Jan Peeters"), "{}", r.html);
        for w in [
            "citaatwoord",
            "handtekeningwoord",
            "schreef",
            "Peeters",
            "@",
        ] {
            assert!(!r.text.contains(w), "{w} in {:?}", r.text);
        }
        assert!(r.text.contains("Eigen woorden") && r.text.contains("Nog eigen tekst"));
        // Wrapped over two lines, Gmail style.
        let r = html_of(
            "Subject: s\r\n\r\nJa.\r\n\r\nOn Mon, 2 Nov 2026 at 10:00, Jan Peeters <\r\njan@x.example> wrote:\r\n> x\r\n",
        );
        assert_eq!(r.text, "Ja.");
        // HTML: blockquotes (Gmail, Apple Mail), the attribution, the signature and
        // Outlook's original are left out too; entities decoded; line breaks kept.
        let r = html_of(
            "Subject: s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div>Mijn <b>cli&euml;nt</b> &amp; ik<br>tweede&nbsp;regel</div><div class=\"gmail_quote\"><div class=\"gmail_attr\">Op ma 2 nov. 2026 schreef Jan &lt;jan@x.example&gt;:</div><blockquote class=\"gmail_quote\">citaatwoord<blockquote>dieper</blockquote>nog citaat</blockquote></div><div>-- </div><div>handtekeningwoord</div>",
        );
        assert!(r.text.contains("Mijn cli"), "{:?}", r.text);
        assert!(r.text.contains("& ik\ntweede regel"), "{:?}", r.text);
        for w in [
            "citaatwoord",
            "dieper",
            "nog citaat",
            "handtekeningwoord",
            "schreef",
            "@",
        ] {
            assert!(!r.text.contains(w), "{w} in {:?}", r.text);
        }
        let r = html_of(
            "Subject: s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Antwoord boven.</p><hr><p>Van: X<br>Verzonden: maandag<br>Aan: forum<br>Onderwerp: y</p><p>oude vraagwoord</p>",
        );
        assert_eq!(r.text, "Antwoord boven.");
    }

    #[test]
    fn long_quotes_and_outlook_originals_are_folded() {
        let mut body = String::from("Akkoord.\r\n\r\n");
        for i in 0..8 {
            body.push_str(&format!("> regel {i}\r\n"));
        }
        body.push_str(
            "\r\n-----Oorspronkelijk bericht-----\r\nVan: X\r\nVerzonden: maandag\r\n\r\noud\r\n",
        );
        let r = html_of(&format!("Subject: s\r\n\r\n{body}"));
        assert_eq!(
            r.html.matches("<details class=\"quote\">").count(),
            2,
            "{}",
            r.html
        );
        assert!(r.html.contains("Show quote (8 lines)"), "{}", r.html);
    }

    #[test]
    fn wrapped_list_items_are_joined_and_code_keeps_its_lines() {
        let r = html_of(concat!(
            "Subject: s\r\n\r\nWat bij ons werkte:\r\n",
            "- eerst contact met de schuldbemiddelaar (telefonisch, dat gaat sneller);\r\n",
            "- de waarborg via het OCMW voorschieten, terug te betalen in maandelijkse\r\n",
            "  schijven die in het budgetplan passen.\r\n- kort\r\n  niet verder\r\n\r\n",
            "fn main() {\r\n    let x = 1; // een regel code die lang genoeg is om te wrappen\r\n}\r\n",
        ));
        assert!(
            r.html.contains(
                "<p class=\"lines\">Wat bij ons werkte:\n- eerst contact met de schuldbemiddelaar (telefonisch, dat gaat sneller);\n\
- de waarborg via het OCMW voorschieten, terug te betalen in maandelijkse schijven die in het budgetplan passen.\n\
- kort\n  niet verder</p>"
            ),
            "{}",
            r.html
        );
        assert!(r.html.contains("fn main() {\n    let x = 1;"), "{}", r.html);
    }

    #[test]
    fn format_flowed_is_joined() {
        let t = unflow(
            "Een lange \r\nzin.\r\n> geciteerd \r\n> verder\r\n-- \r\nsig\r\n",
            false,
        );
        assert_eq!(t, "Een lange zin.\n> geciteerd verder\n-- \nsig\n");
        assert_eq!(unflow(" From me\r\n", false), "From me\n");
        assert_eq!(unflow("ab \r\ncd\r\n", true), "abcd\n");
    }

    #[test]
    fn images_leave_their_description_and_load_nothing() {
        let r = html_of(concat!(
            "Subject: s\r\nContent-Type: text/html\r\n\r\n",
            "<p>Zie <img src=\"cid:image001.png@01DA\" alt=\"Logo  Stad\nAntwerpen\"> hier",
            "<img src=\"https://track.example/p.gif\" width=1 height=1>",
            "<img alt=\"\" src=\"x.png\"><img alt='a \"&lt;b&gt;\" &amp; <script>'></p>",
        ));
        assert!(
            r.html
                .contains("<span class=\"img-alt\">[image: Logo Stad Antwerpen]</span>"),
            "{}",
            r.html
        );
        assert!(
            r.html
                .contains("[image: a &quot;&lt;b&gt;&quot; &amp; &lt;script&gt;]"),
            "{}",
            r.html
        );
        assert_eq!(r.html.matches("img-alt").count(), 2, "{}", r.html);
        for bad in ["<img", "cid:", "track.example", "x.png", "<script"] {
            assert!(!r.html.contains(bad), "{bad} in {}", r.html);
        }
    }

    #[test]
    fn html_is_sanitized() {
        let r = html_of(concat!(
            "Subject: s\r\nContent-Type: text/html\r\n\r\n",
            "<p onclick=\"x()\" style=\"color:red\" class=\"c\">Hoi <b>daar</b></p>",
            "<script>alert(1)</script><style>p{}</style><img src=\"http://evil/x.png\">",
            "<iframe src=\"http://evil\"></iframe><form action=\"http://evil\"><input></form>",
            "<a href=\"javascript:alert(1)\">j</a><a href=\"data:text/html,x\">d</a>",
            "<a href=\"https://ok.example/\">ok</a><svg onload=\"x()\"><circle/></svg>",
            "<div style=\"background:url(javascript:x)\">w</div>mail me: a.b@c.example",
        ));
        let h = r.html.to_ascii_lowercase();
        for bad in [
            "onclick",
            "style",
            "class=\"c\"",
            "<script",
            "alert",
            "<img",
            "<iframe",
            "<form",
            "<input",
            "javascript:",
            "data:",
            "<svg",
            "onload",
            "a.b@c",
        ] {
            assert!(!h.contains(bad), "{bad} in {h}");
        }
        assert!(
            h.contains(
                "<a href=\"https://ok.example/\" rel=\"nofollow noopener noreferrer\">ok</a>"
            ),
            "{h}"
        );
        assert!(h.contains("<b>daar</b>"));
        assert!(r.text.contains("Hoi") && r.text.contains("daar"));
    }

    #[test]
    fn attachments_get_safe_names() {
        assert_eq!(
            safe_name(1, Some("../../etc/passwd"), "text/plain", 2),
            "1-passwd"
        );
        assert_eq!(
            safe_name(2, Some(".htaccess"), "text/plain", 3),
            "2-htaccess"
        );
        assert_eq!(
            safe_name(3, Some("Verslag cliënt.pdf"), "application/pdf", 4),
            "3-Verslag_client.pdf"
        );
        assert_eq!(
            safe_name(4, Some(".."), "application/pdf", 5),
            "4-part5.pdf"
        );
        assert_eq!(safe_name(5, None, "image/png", 6), "5-part6.png");
        let long = format!("{}.docx", "a".repeat(300));
        let n = safe_name(6, Some(&long), "application/x", 7);
        assert!(n.len() <= 83 && n.ends_with(".docx"), "{n}");
        let r = html_of(concat!(
            "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
            "Content-Type: text/plain\r\n\r\nZie bijlage.\r\n--b\r\n",
            "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\n",
            "root:x:0:0 jan@x.example\r\n--b--\r\n"
        ));
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].file_name, "1-passwd");
        assert!(!String::from_utf8_lossy(&r.attachments[0].bytes).contains("jan@x"));
        assert!(
            r.html
                .contains("href=\"../a/1/1-passwd\" download=\"passwd\">passwd</a>"),
            "{}",
            r.html
        );
        // Under a heading, with the sender's own name (accents and spaces kept), its type
        // and size.
        let r = html_of(concat!(
            "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
            "Content-Type: text/plain\r\n\r\nZie bijlage.\r\n--b\r\n",
            "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"Verslag cliënt.pdf\"\r\n\r\n",
            "%PDF-1.4\r\n--b--\r\n"
        ));
        assert!(
            r.html.contains(
                "<section class=\"attachments\"><h3>Attachments</h3><ul><li><a href=\"../a/1/1-Verslag_client.pdf\" download=\"Verslag cliënt.pdf\">Verslag cliënt.pdf</a> <span class=\"meta\">application/pdf, 8 B</span>"
            ),
            "{}",
            r.html
        );
    }

    #[test]
    fn deep_nesting_and_many_parts_are_bounded() {
        let mut raw = String::from("Subject: deep\r\n");
        for d in 0..100 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{d}\r\n\r\n--b{d}\r\n"
            ));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\ndiep\r\n");
        for d in (0..100).rev() {
            raw.push_str(&format!("--b{d}--\r\n"));
        }
        let r = html_of(&raw);
        assert_eq!(r.problems, vec![Labels::default().problem_too_deep]);
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].bytes, b"diep");
        assert!(r.html.contains("1-part100.txt"));

        let mut raw =
            String::from("Subject: many\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n");
        for i in 0..700 {
            raw.push_str(&format!(
                "--m\r\nContent-Type: text/plain\r\n\r\ndeel {i}\r\n"
            ));
        }
        raw.push_str("--m--\r\n");
        let r = html_of(&raw);
        assert_eq!(r.problems, vec![Labels::default().problem_too_many_parts]);
        assert!(
            r.html.contains("deel 498") && !r.html.contains("deel 499"),
            "{}",
            r.html.len()
        );
    }

    /// A valid national number (born before 2000).
    fn rrn(first9: u64) -> String {
        format!("{first9:09}{:02}", 97 - first9 % 97)
    }

    #[test]
    fn addresses_by_every_route_are_taken_out_of_downloads() {
        let key = [7u8; 32];
        let p = Privacy {
            id_key: key,
            ..Privacy::hidden()
        };
        let html = "<p>Mail <span>lid36</span>@<span>ocmw-36.example</span> of lid38&#64;ocmw-38.example, \
<a href=\"https://x.example/?u=lid34%40ocmw-34.example\">link</a></p>";
        let qp_html = quoted_printable::encode(html.as_bytes());
        let raw = format!(
            "From: =?utf-8?q?lid33=40ocmw-33=2Eexample?= <lid33@ocmw-33.example>\r\n\
Subject: =?utf-8?b?{}?=\r\n\
Message-ID: <20261006.1-1-lid40@ocmw-40.example>\r\n\
References: <a1@x.example>\r\n <20261006.1-1-lid40@ocmw-40.example>\r\n\
In-Reply-To: <a1@x.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n\
--z\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n\
--z\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''brief%20lid37%40ocmw-37.example.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n\
--z\r\nContent-Type: application/pdf; name=\"=?utf-8?q?brief_lid39=40ocmw-39.example.pdf?=\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--z--\r\n",
            base64::engine::general_purpose::STANDARD.encode("Vraag van lid35@ocmw-35.example"),
            String::from_utf8_lossy(&qp_html),
        );
        let out = scrub_raw(raw.as_bytes(), p);
        let s = String::from_utf8_lossy(&out).to_string();
        let m = MessageParser::default().parse(&out[..]).unwrap();
        let html_out = m.body_html(0).unwrap().to_string();
        let subject = m.subject().unwrap_or("").to_string();
        let from = format!("{:?}", m.from());
        let names: Vec<String> = m
            .attachments()
            .filter_map(|a| a.attachment_name().map(str::to_string))
            .collect();
        for n in 33..=40 {
            let local = format!("lid{n}");
            for text in [&s, &html_out, &subject, &from] {
                assert!(!text.contains(&local), "lid{n} in {text}");
            }
            for name in &names {
                assert!(!name.contains(&local), "{name}");
            }
        }
        assert_eq!(subject, "Vraag van …@…");
        // The IDs: opaque, the same in every field, so the mbox still threads.
        let id = opaque_id(b"20261006.1-1-lid40@ocmw-40.example", &key);
        assert_eq!(s.matches(id.as_str()).count(), 2, "{s}");
        assert_eq!(m.message_id(), Some(&id[1..id.len() - 1]));
        assert_eq!(
            s.matches(opaque_id(b"a1@x.example", &key).as_str()).count(),
            2
        );
        assert_ne!(
            opaque_id(b"a1@x.example", &[8; 32]),
            opaque_id(b"a1@x.example", &key)
        );
        // The split address is gone, the elements stay.
        assert!(
            html_out.contains("Mail <span>…@…</span><span></span> of …@…,"),
            "{html_out}"
        );
        assert!(html_out.contains("?…@…\">link</a>"), "{html_out}");
        assert!(html_out.contains("<a href="), "{html_out}");
    }

    #[test]
    fn identifiers_are_masked_in_pages_downloads_and_search_text() {
        let n = rrn(850_730_033);
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(format!("IBAN BE68 5390 0754 7034 en rrn {n}.\r\n"));
        let raw = format!(
            "From: An <an@x.example>\r\nSubject: =?utf-8?q?rrn_{n}?=\r\nMessage-ID: <m@x.example>\r\n\
Content-Type: multipart/alternative; boundary=z\r\n\r\n\
--z\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n\
--z\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bel <b>0486</b> 12 34 56 of {n}</p>\r\n--z--\r\n"
        );
        let out = scrub_raw(raw.as_bytes(), Privacy::hidden());
        let m = MessageParser::default().parse(&out[..]).unwrap();
        let all = format!(
            "{}{}{}{}",
            String::from_utf8_lossy(&out),
            m.subject().unwrap_or(""),
            m.body_text(0).unwrap_or_default(),
            m.body_html(0).unwrap_or_default()
        );
        for bad in [n.as_str(), "5390", "0486", "12 34 56"] {
            assert!(!all.contains(bad), "{bad} in {all}");
        }
        assert_eq!(m.subject(), Some("rrn [rijksregisternummer]"));
        assert!(m
            .body_text(0)
            .unwrap()
            .contains("IBAN [rekeningnummer] en rrn [rijksregisternummer]."));
        let page = html_of(&raw);
        for bad in [n.as_str(), "5390", "0486"] {
            assert!(
                !page.html.contains(bad) && !page.text.contains(bad),
                "{bad}: {}",
                page.html
            );
        }
        assert!(page.html.contains("[rekeningnummer]"), "{}", page.html);
        // English labels; a list that masks nothing.
        let en = Privacy {
            lang: Language::En,
            ..Privacy::hidden()
        };
        assert_eq!(en.text(&format!("rrn {n}")), "rrn [national number]");
        let none = Privacy {
            redact: Redact::NONE,
            ..Privacy::hidden()
        };
        assert_eq!(none.text(&format!("rrn {n}")), format!("rrn {n}"));
    }

    #[test]
    fn raw_downloads_are_scrubbed_also_inside_encodings() {
        let b64 =
            base64::engine::general_purpose::STANDARD.encode("Bel jan@x.example of mail.\r\n");
        let raw = format!(
            "Received: from pc.jan.example by mx\r\nFrom: \"Jan\" <jan@x.example>\r\nTo: forum@lists.example\r\nMessage-ID: <abc@x.example>\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--z\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCli=EBnt: an=\r\nna@y.example\r\n--z--\r\n"
        );
        let out = scrub_raw(raw.as_bytes(), Privacy::hidden());
        let s = String::from_utf8_lossy(&out);
        assert!(!s.contains("jan@x") && !s.contains("forum@lists"), "{s}");
        let opaque = opaque_id(b"abc@x.example", &[0; 32]);
        assert!(s.contains(&format!("Message-ID: {opaque}")), "{s}");
        assert!(!s.contains("Received:"));
        let m = MessageParser::default().parse(&out[..]).unwrap();
        let t0 = m.body_text(0).unwrap();
        assert!(t0.contains("Bel …@… of mail."), "{t0}");
        let t1 = m.body_text(1).unwrap();
        assert!(t1.contains("Cliënt") && !t1.contains("anna@"), "{t1}");
        let t = without_trace(b"Received: a\r\n b\r\nFrom: x\r\nreceived:c\r\nX-Received: d\r\n\r\nReceived: body\r\n");
        assert_eq!(&t[..], b"From: x\r\n\r\nReceived: body\r\n");
        // Unchanged when there is nothing to hide.
        let clean = b"Subject: x\r\n\r\nniets\r\n";
        assert_eq!(scrub_raw(clean, Privacy::hidden()), clean.to_vec());
    }

    #[test]
    fn author_names() {
        let m = parse("From: \"Peeters, Jan\" <jan@x.example>\r\n\r\nx");
        assert_eq!(
            author_name(&m, Privacy::hidden()).as_deref(),
            Some("Peeters, Jan")
        );
        let m = parse("From: jan.peeters@x.example\r\n\r\nx");
        assert_eq!(
            author_name(&m, Privacy::hidden()).as_deref(),
            Some("jan.peeters")
        );
        assert_eq!(
            author_name(
                &m,
                Privacy {
                    mode: AddressMode::Local,
                    ..Privacy::hidden()
                }
            )
            .as_deref(),
            Some("jan.peeters@…")
        );
        let m = parse("From: \"jan@x.example\" <jan@x.example>\r\n\r\nx");
        assert_eq!(author_name(&m, Privacy::hidden()).as_deref(), Some("jan"));
    }
}
