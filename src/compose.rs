//! The list copy: what every member receives for one post.
//!
//! Built once per post from the stored raw bytes and shared by all recipients; only the
//! envelope (VERP sender) differs per recipient. The original header bytes are kept as they
//! came (so signatures over unchanged fields, folding and encodings survive), except:
//! - list headers of other lists and fields that must not leak through a list
//!   (Return-Path, Delivered-To, Return-Receipt-To, Disposition-Notification-To, ...) go;
//! - List-Id (RFC 2919), List-Post/Help/Subscribe/Unsubscribe/Archive/Owner (RFC 2369),
//!   Precedence: list and X-Loop are set (other lists' X-Loop fields are kept, so a
//!   loop through another list is recognised when it comes back);
//! - the subject gets the list prefix exactly once (`Re: [forum] x`);
//! - Reply-To is set to the list when the list's policy says so;
//! - a footer with the unsubscribe address is added: appended to a plain-text body, or as a
//!   separate text/plain part of a multipart/mixed (other structures are wrapped in one, as
//!   Mailman does, so signed and alternative parts stay intact).

use crate::config::{Language, ListConfig, ReplyTo};
use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use std::borrow::Cow;

/// One header field as it appears in the message: its name and its full raw bytes
/// (name, colon, value, folded continuation lines and the final CRLF).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub name: &'a str,
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// The unfolded value, lossily decoded, trimmed.
    pub fn value(&self) -> String {
        let v = &self.raw[self.name.len() + 1..];
        let s = String::from_utf8_lossy(v);
        s.replace("\r\n", "").replace('\n', "").trim().to_string()
    }
}

/// Splits a message into its header fields and its body (after the empty line).
/// Lines that are neither a field nor a continuation are skipped (and so dropped from the
/// copy); the inbound sanity check refuses messages whose headers are that broken anyway.
pub fn split_message(raw: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    let mut cur: Option<(usize, usize)> = None; // (start, name_len)
    let mut body_start = raw.len();
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        let is_cont = matches!(content.first(), Some(b' ' | b'\t'));
        if !is_cont {
            if let Some((s, n)) = cur.take() {
                push_field(raw, &mut fields, s, n, pos);
            }
        }
        if content.is_empty() {
            body_start = end;
            break;
        }
        if !is_cont {
            if let Some(colon) = content.iter().position(|&b| b == b':') {
                let name = &content[..colon];
                if !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b)) {
                    cur = Some((pos, colon));
                }
            }
        }
        pos = end;
    }
    if let Some((s, n)) = cur {
        push_field(raw, &mut fields, s, n, pos.min(raw.len()));
    }
    (fields, &raw[body_start.min(raw.len())..])
}

fn push_field<'a>(raw: &'a [u8], fields: &mut Vec<Field<'a>>, s: usize, n: usize, end: usize) {
    if let Ok(name) = std::str::from_utf8(&raw[s..s + n]) {
        fields.push(Field {
            name,
            raw: &raw[s..end],
        });
    }
}

/// A base64 body as mail carries it: line breaks and other white space ignored, padding
/// optional, stray trailing bits accepted (what mail clients write). `None` when it is
/// not base64.
pub fn decode_base64_lenient(body: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(clean).ok()
}

/// Converts bare LF line ends to CRLF (mail piped in by an MTA uses LF).
pub fn normalize_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let bare = raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
    if !bare {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// Unstructured header text (a Subject, a display name) as RFC 2047 encoded words where it
/// is not plain ASCII, folded: mail-builder's header writer. The value only, without its
/// CRLF; `column` is where it starts (after "Subject: ").
pub fn encode_header_text(s: &str) -> String {
    if s.is_ascii() && !s.contains("=?") {
        return s.to_string();
    }
    use mail_builder::headers::Header as _;
    let mut out = Vec::new();
    mail_builder::headers::text::Text::new(s).write_header(&mut out, HEADER_COLUMN);
    String::from_utf8_lossy(&out)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// Where a header value starts, for folding: after a name such as "Subject: ".
const HEADER_COLUMN: usize = 9;

/// Base64 in lines of 76 characters, each ended by `nl` (RFC 2045 6.8): mail-builder's
/// encoder.
pub fn base64_lines(bytes: &[u8], nl: &[u8]) -> Vec<u8> {
    let crlf = mail_builder::encoders::base64::Base64Encoder::new()
        .wrap_lines()
        .encode(bytes)
        .unwrap_or_default();
    if nl == b"\r\n" {
        crlf
    } else {
        crlf.into_iter().filter(|b| *b != b'\r').collect()
    }
}

/// A display name as an RFC 5322 phrase: quoted if needed, encoded if not ASCII.
pub fn phrase(name: &str) -> String {
    if !name.is_ascii() {
        return encode_header_text(name);
    }
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

const REPLY_MARKERS: &[&str] = &["re", "aw", "antw", "sv", "vs", "ref", "rif", "odp"];

/// The list copy's subject: the list prefix once, after a single `Re: ` if the post was a
/// reply. `[forum] Re: [forum] x`, `Re: Re: [forum] x` and `AW: [forum] x` all become
/// `Re: [forum] x`.
pub fn prefixed_subject(prefix: Option<&str>, subject: &str) -> String {
    let Some(prefix) = prefix.filter(|p| !p.trim().is_empty()) else {
        return subject.to_string();
    };
    let prefix = prefix.trim();
    let mut rest = subject.trim();
    let mut reply = false;
    loop {
        let before = rest;
        if let Some(r) = strip_ci(rest, prefix) {
            rest = r.trim_start();
        }
        if let Some(r) = strip_reply_marker(rest) {
            rest = r.trim_start();
            reply = true;
        }
        if rest == before {
            break;
        }
    }
    let rest = if rest.is_empty() { "" } else { rest };
    match (reply, rest.is_empty()) {
        (true, _) => format!("Re: {prefix} {rest}").trim_end().to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix} {rest}"),
    }
}

fn strip_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    let head = s.get(..p.len())?;
    head.eq_ignore_ascii_case(p).then(|| &s[p.len()..])
}

fn strip_reply_marker(s: &str) -> Option<&str> {
    for m in REPLY_MARKERS {
        if let Some(r) = strip_ci(s, m) {
            // `Re:`, `RE :`, `Re[2]:`
            let r = r.trim_start_matches(' ');
            let r = if let Some(x) = r.strip_prefix('[') {
                x.trim_start_matches(|c: char| c.is_ascii_digit())
                    .strip_prefix(']')
                    .unwrap_or(r)
            } else {
                r
            };
            if let Some(r) = r.strip_prefix(':') {
                return Some(r);
            }
        }
    }
    None
}

/// Where each member's own thread token goes in a footer (see [`ListCopy`]); never sent.
const TOKEN_MARK: &str = "\u{1}vraagbaak-thread-token\u{1}";

/// How a post's footer tells a member to stop receiving its thread.
#[derive(Debug, Clone, Copy)]
pub enum ThreadLinks<'a> {
    /// Each member's own link under this base URL (`{base}/m/TOKEN`).
    Web(&'a str),
    /// No web endpoint: by mail, a reply with `stil`/`mute` to the request address.
    Mail,
    /// Nothing (a copy that is not of a post).
    None,
}

/// The footer of a post's copy: [`footer_text`] and the line to mute the thread, with
/// [`TOKEN_MARK`] where the member's token goes.
fn post_footer(list: &ListConfig, links: ThreadLinks) -> String {
    let mut s = footer_text(list);
    let line = match (links, list.language) {
        (ThreadLinks::Web(base), Language::Nl) => {
            format!("Deze draad niet meer ontvangen: {base}/m/{TOKEN_MARK}")
        }
        (ThreadLinks::Web(base), Language::En) => {
            format!("Stop receiving this thread: {base}/m/{TOKEN_MARK}")
        }
        (ThreadLinks::Mail, Language::Nl) => format!(
            "Deze draad niet meer ontvangen: beantwoord dit bericht met \"stil\" aan {}",
            list.sub_address("request")
        ),
        (ThreadLinks::Mail, Language::En) => format!(
            "Stop receiving this thread: reply to this message with \"mute\" to {}",
            list.sub_address("request")
        ),
        (ThreadLinks::None, _) => return s,
    };
    s.push_str(&line);
    s.push_str("\r\n");
    s
}

/// A list copy as built once per post and shared by every recipient, with the places
/// (`slots`, in order) where each member's own thread token goes. A member's copy is the
/// shared bytes with that member's fill in each slot ([`ListCopy::fills`],
/// [`ListCopy::parts`]): a few small writes per copy, never a second composition.
#[derive(Debug, Clone, Default)]
pub struct ListCopy {
    pub bytes: Vec<u8>,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone)]
pub struct Slot {
    /// Offset in `bytes`.
    pub at: usize,
    pub fill: Fill,
}

/// What goes into a slot.
#[derive(Debug, Clone)]
pub enum Fill {
    /// The token as it is: the footer is plain text in 7bit or 8bit (the token is base32).
    Token,
    /// The end of a base64 body: `pre` (the 0 to 2 bytes of text that did not fill a
    /// base64 quantum), the token and `post`, encoded in lines of 76.
    Base64 { pre: Vec<u8>, post: Vec<u8> },
}

impl ListCopy {
    /// A copy without slots.
    pub fn plain(bytes: Vec<u8>) -> ListCopy {
        ListCopy {
            bytes,
            slots: Vec::new(),
        }
    }

    /// The bytes each slot gets for `token`.
    pub fn fills(&self, token: &str) -> Vec<Vec<u8>> {
        self.slots
            .iter()
            .map(|s| match &s.fill {
                Fill::Token => token.as_bytes().to_vec(),
                Fill::Base64 { pre, post } => {
                    let t = [pre.as_slice(), token.as_bytes(), post.as_slice()].concat();
                    base64_lines(&t, b"\r\n")
                }
            })
            .collect()
    }

    /// One member's copy as slices: the shared bytes with `fills` (from [`ListCopy::fills`])
    /// in the slots.
    pub fn parts<'a>(&'a self, fills: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.slots.len() * 2 + 1);
        let mut from = 0;
        for (s, f) in self.slots.iter().zip(fills) {
            out.push(&self.bytes[from..s.at]);
            out.push(f.as_slice());
            from = s.at;
        }
        out.push(&self.bytes[from..]);
        out
    }

    /// One member's copy, whole (for tests and tools; delivery uses [`ListCopy::parts`]).
    pub fn for_member(&self, token: &str) -> Vec<u8> {
        self.parts(&self.fills(token)).concat()
    }
}

/// Writes `footer`, recording a [`Fill::Token`] slot where it has [`TOKEN_MARK`].
fn write_footer(out: &mut Vec<u8>, slots: &mut Vec<Slot>, footer: &str) {
    let mut pieces = footer.split(TOKEN_MARK);
    if let Some(first) = pieces.next() {
        out.extend_from_slice(first.as_bytes());
    }
    for p in pieces {
        slots.push(Slot {
            at: out.len(),
            fill: Fill::Token,
        });
        out.extend_from_slice(p.as_bytes());
    }
}

/// The footer every copy carries.
pub fn footer_text(list: &ListConfig) -> String {
    let mut s = String::new();
    if let Some(f) = &list.footer {
        s.push_str(f.trim_end());
        s.push('\n');
    }
    let leave = list.sub_address("leave");
    match list.language {
        Language::Nl => s.push_str(&format!(
            "{} -- {}\nAfmelden: stuur een mail naar {}\n",
            list.name, list.address, leave
        )),
        Language::En => s.push_str(&format!(
            "{} -- {}\nUnsubscribe: send a mail to {}\n",
            list.name, list.address, leave
        )),
    }
    if let Some(url) = &list.archive_url {
        match list.language {
            Language::Nl => s.push_str(&format!("Archief: {url}\n")),
            Language::En => s.push_str(&format!("Archive: {url}\n")),
        }
    }
    s.replace('\n', "\r\n")
}

/// Fields removed from every list copy (compared case-insensitively).
const STRIP: &[&str] = &[
    "list-id",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-archive",
    "list-owner",
    "precedence",
    "return-path",
    "delivered-to",
    "return-receipt-to",
    "disposition-notification-to",
    "x-confirm-reading-to",
    "x-pmrqc",
    "errors-to",
    "approved",
    "approve",
    "x-original-to",
];

/// The per-member unsubscribe fields (RFC 2369, RFC 8058) that outbound puts in front of a
/// shared list copy built with `per_member_unsubscribe`: the member's one-click URL first
/// (mail providers use it with `List-Unsubscribe-Post`), the leave address second.
pub fn unsubscribe_fields(list: &ListConfig, url: &str) -> String {
    format!(
        "List-Unsubscribe: <{url}>,\r\n <mailto:{}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        list.sub_address("leave")
    )
}

/// Builds the list copy of a post (CRLF line ends expected; see [`normalize_crlf`]).
/// With `per_member_unsubscribe`, List-Unsubscribe is left out: each recipient's copy gets
/// its own ([`unsubscribe_fields`]).
///
/// With `from_rewrite` (DMARC, see `dmarc`), the From becomes `"Name via List" <list@host>`
/// and the author stays reachable: in Reply-To when replies go to the author (unless the
/// author set a Reply-To), else in Cc beside the list's Reply-To, as Mailman does.
pub fn list_copy(
    list: &ListConfig,
    raw: &[u8],
    per_member_unsubscribe: bool,
    from_rewrite: bool,
) -> Vec<u8> {
    let links = if per_member_unsubscribe {
        ThreadLinks::None
    } else {
        ThreadLinks::Mail
    };
    list_copy_with(list, raw, per_member_unsubscribe, from_rewrite, links).bytes
}

/// [`list_copy`] with the footer's line to mute the thread: with [`ThreadLinks::Web`] each
/// member's own link goes into the returned copy's slots.
pub fn list_copy_with(
    list: &ListConfig,
    raw: &[u8],
    per_member_unsubscribe: bool,
    from_rewrite: bool,
    links: ThreadLinks,
) -> ListCopy {
    let (fields, body) = split_message(raw);
    let parsed = MessageParser::default().parse_headers(raw);
    let author = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("from"))
        .map(Field::value)
        .filter(|_| from_rewrite);
    let author_name = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.name().or(a.address()))
        .map(str::to_string)
        .unwrap_or_default();
    let mut cc: Vec<String> = Vec::new();
    let mut has_reply_to = false;
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .map(str::to_string)
        .or_else(|| {
            fields
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case("subject"))
                .map(Field::value)
        })
        .unwrap_or_default();
    let subject = if subject.trim().is_empty() {
        match list.language {
            Language::Nl => "(geen onderwerp)".to_string(),
            Language::En => "(no subject)".to_string(),
        }
    } else {
        subject
    };
    let new_subject = prefixed_subject(list.subject_prefix.as_deref(), &subject);

    let mut out = Vec::with_capacity(raw.len() + 1024);
    let mut subject_written = false;
    let footer = post_footer(list, links);
    let body_plan = plan_footer(parsed.as_ref(), raw, &fields, body, &footer);
    for f in &fields {
        let lname = f.name.to_ascii_lowercase();
        if STRIP.contains(&lname.as_str()) {
            continue;
        }
        if lname == "reply-to" && list.reply_to == ReplyTo::List {
            continue;
        }
        if author.is_some() {
            match lname.as_str() {
                "from" => continue,
                "cc" if list.reply_to == ReplyTo::List => {
                    cc.push(f.value());
                    continue;
                }
                "reply-to" => has_reply_to = true,
                _ => {}
            }
        }
        if lname == "subject" {
            if !subject_written {
                push_header(&mut out, "Subject", &encode_header_text(&new_subject));
                subject_written = true;
            }
            continue;
        }
        if body_plan.replaces_mime_headers() && is_mime_field(&lname) {
            continue;
        }
        out.extend_from_slice(f.raw);
        if !f.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !subject_written {
        push_header(&mut out, "Subject", &encode_header_text(&new_subject));
    }
    if list.reply_to == ReplyTo::List {
        push_header(&mut out, "Reply-To", &list.address);
    }
    if let Some(author) = &author {
        let shown = if author_name.trim().is_empty() {
            list.name.clone()
        } else {
            format!("{} via {}", author_name.trim(), list.name)
        };
        push_header(
            &mut out,
            "From",
            &format!("{} <{}>", phrase(&shown), list.address),
        );
        match list.reply_to {
            ReplyTo::List => {
                cc.push(author.clone());
                push_header(&mut out, "Cc", &cc.join(",\r\n "));
            }
            ReplyTo::Author if !has_reply_to => push_header(&mut out, "Reply-To", author),
            ReplyTo::Author => {}
        }
    }
    out.extend_from_slice(list_fields(list, per_member_unsubscribe).as_bytes());
    let mut slots = Vec::new();
    body_plan.write(&mut out, &mut slots, &fields, body, &footer);
    ListCopy { bytes: out, slots }
}

/// The list's own fields on everything it distributes (posts and digests): List-Id
/// (RFC 2919), List-Post/Help/Subscribe/Unsubscribe/Archive/Owner (RFC 2369),
/// Precedence and X-Loop. With `per_member_unsubscribe` the List-Unsubscribe fields are left
/// to each copy (see [`unsubscribe_fields`]).
pub fn list_fields(list: &ListConfig, per_member_unsubscribe: bool) -> String {
    let mut out = Vec::new();
    push_header(
        &mut out,
        "List-Id",
        &format!("{} <{}>", phrase(&list.name), list.list_id()),
    );
    push_header(&mut out, "List-Post", &format!("<mailto:{}>", list.address));
    push_header(
        &mut out,
        "List-Help",
        &format!("<mailto:{}?subject=help>", list.sub_address("request")),
    );
    push_header(
        &mut out,
        "List-Subscribe",
        &format!("<mailto:{}>", list.sub_address("join")),
    );
    if !per_member_unsubscribe {
        push_header(
            &mut out,
            "List-Unsubscribe",
            &format!("<mailto:{}>", list.sub_address("leave")),
        );
    }
    if let Some(url) = &list.archive_url {
        push_header(&mut out, "List-Archive", &format!("<{url}>"));
    }
    push_header(
        &mut out,
        "List-Owner",
        &format!("<mailto:{}>", list.sub_address("owner")),
    );
    push_header(&mut out, "Precedence", "list");
    push_header(&mut out, "X-Loop", &list.address);
    String::from_utf8_lossy(&out).into_owned()
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn is_mime_field(lname: &str) -> bool {
    lname.starts_with("content-") || lname == "mime-version"
}

/// How the footer gets into the body.
enum FooterPlan {
    /// Plain text in a transfer encoding we can append to as it is.
    Append,
    /// Plain text in base64 or quoted-printable, or a charset the footer cannot be written
    /// in: decoded, footer appended, re-encoded as UTF-8 base64.
    Reencode { text: String, params: String },
    /// multipart/mixed: a footer part is inserted before the closing boundary.
    AddPart { boundary: String },
    /// Anything else: wrapped in a new multipart/mixed with the footer as second part.
    Wrap { boundary: String },
}

impl FooterPlan {
    fn replaces_mime_headers(&self) -> bool {
        matches!(self, FooterPlan::Reencode { .. } | FooterPlan::Wrap { .. })
    }

    fn write(
        &self,
        out: &mut Vec<u8>,
        slots: &mut Vec<Slot>,
        fields: &[Field],
        body: &[u8],
        footer: &str,
    ) {
        let footer_part = |b: &str| {
            format!(
                "--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\nContent-Disposition: inline\r\n\r\n{footer}"
            )
        };
        match self {
            FooterPlan::Append => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
                if !body.is_empty() && !body.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"-- \r\n");
                write_footer(out, slots, footer);
            }
            FooterPlan::Reencode { text, params } => {
                push_header(out, "MIME-Version", "1.0");
                push_header(
                    out,
                    "Content-Type",
                    &format!("text/plain; charset=utf-8{params}"),
                );
                push_header(out, "Content-Transfer-Encoding", "base64");
                out.extend_from_slice(b"\r\n");
                let mut t = text.replace("\r\n", "\n").replace('\n', "\r\n");
                if !t.is_empty() && !t.ends_with("\r\n") {
                    t.push_str("\r\n");
                }
                t.push_str("-- \r\n");
                t.push_str(footer);
                // With a token: the text up to the last whole base64 quantum before it is
                // encoded here, the rest (with the token) per member.
                let (shared, slot) = match t.find(TOKEN_MARK) {
                    Some(i) => {
                        let cut = i - i % 3;
                        let fill = Fill::Base64 {
                            pre: t.as_bytes()[cut..i].to_vec(),
                            post: t.as_bytes()[i + TOKEN_MARK.len()..].to_vec(),
                        };
                        (&t.as_bytes()[..cut], Some(fill))
                    }
                    None => (t.as_bytes(), None),
                };
                out.extend_from_slice(&base64_lines(shared, b"\r\n"));
                if let Some(fill) = slot {
                    slots.push(Slot {
                        at: out.len(),
                        fill,
                    });
                }
            }
            FooterPlan::AddPart { boundary } => {
                out.extend_from_slice(b"\r\n");
                let close = format!("--{boundary}--");
                match find_closing(body, close.as_bytes()) {
                    Some(at) => {
                        out.extend_from_slice(&body[..at]);
                        write_footer(out, slots, &footer_part(boundary));
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&body[at..]);
                    }
                    None => {
                        // No closing delimiter (a truncated message): close it ourselves.
                        out.extend_from_slice(body);
                        if !body.ends_with(b"\n") {
                            out.extend_from_slice(b"\r\n");
                        }
                        write_footer(out, slots, &footer_part(boundary));
                        out.extend_from_slice(format!("\r\n{close}\r\n").as_bytes());
                    }
                }
            }
            FooterPlan::Wrap { boundary } => {
                push_header(out, "MIME-Version", "1.0");
                push_header(
                    out,
                    "Content-Type",
                    &format!("multipart/mixed; boundary=\"{boundary}\""),
                );
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                let mut has_ct = false;
                for f in fields {
                    let l = f.name.to_ascii_lowercase();
                    if l.starts_with("content-") {
                        has_ct |= l == "content-type";
                        out.extend_from_slice(f.raw);
                    }
                }
                if !has_ct {
                    push_header(out, "Content-Type", "text/plain; charset=us-ascii");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
                if !body.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
                write_footer(out, slots, &footer_part(boundary));
                out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            }
        }
    }
}

/// The position of the last line that starts with the closing delimiter.
fn find_closing(body: &[u8], close: &[u8]) -> Option<usize> {
    let mut found = None;
    let mut i = 0;
    while i + close.len() <= body.len() {
        if (i == 0 || body[i - 1] == b'\n') && body[i..].starts_with(close) {
            found = Some(i);
        }
        i += 1;
    }
    found
}

fn fresh_boundary(body: &[u8]) -> String {
    let mut n: u64 = rand::random();
    loop {
        let b = format!("=_vraagbaak_{n:016x}");
        if !body.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        n = n.wrapping_add(1);
    }
}

/// `headers` is the message's header section as mail-parser read it (Content-Type
/// parameters, quoting, RFC 2231); `raw` the whole message, `fields` and `body` its parts.
fn plan_footer(
    headers: Option<&mail_parser::Message>,
    raw: &[u8],
    fields: &[Field],
    body: &[u8],
    footer: &str,
) -> FooterPlan {
    let cte = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("content-transfer-encoding"))
        .map(Field::value)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ct = headers.and_then(|m| m.content_type());
    let ctype = ct.map_or("text".to_string(), |c| c.ctype().to_ascii_lowercase());
    let subtype = ct
        .and_then(|c| c.subtype())
        .map_or("plain".to_string(), str::to_ascii_lowercase);
    let charset = ct
        .and_then(|c| c.attribute("charset"))
        .map_or("us-ascii".to_string(), str::to_ascii_lowercase);

    if ctype == "multipart" {
        let boundary = ct.and_then(|c| c.attribute("boundary")).map(str::to_string);
        return match boundary {
            Some(b) if subtype == "mixed" && !b.is_empty() => FooterPlan::AddPart { boundary: b },
            _ => FooterPlan::Wrap {
                boundary: fresh_boundary(body),
            },
        };
    }
    if ctype == "text" && subtype == "plain" {
        let ascii_compatible_charset = matches!(
            charset.as_str(),
            "us-ascii" | "utf-8" | "utf8" | "iso-8859-1" | "iso-8859-15" | "windows-1252"
        );
        let plain_cte = matches!(cte.as_str(), "" | "7bit" | "8bit" | "binary");
        let footer_fits = footer.is_ascii() || charset == "utf-8" || charset == "utf8";
        let eight_bit_ok = footer.is_ascii() || cte == "8bit" || cte == "binary";
        if plain_cte && ascii_compatible_charset && footer_fits && eight_bit_ok {
            return FooterPlan::Append;
        }
        // Decode with mail-parser (charset and transfer encoding), then re-encode.
        if let Some(msg) = MessageParser::default().parse(raw) {
            if let Some(text) = msg.body_text(0) {
                let mut params = String::new();
                if let Some(c) = ct {
                    for k in ["format", "delsp"] {
                        if let Some(val) = c.attribute(k) {
                            params.push_str(&format!("; {k}={val}"));
                        }
                    }
                }
                return FooterPlan::Reencode {
                    text: text.into_owned(),
                    params,
                };
            }
        }
    }
    FooterPlan::Wrap {
        boundary: fresh_boundary(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_and_base64_round_trip_through_a_parser() {
        let subject = "Vraag over de huurwaarborg van een cliënt in collectieve schuldenregeling — één dossier, graag advies €";
        let raw = format!(
            "Subject: {}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            encode_header_text(subject)
        );
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&base64_lines(&body, b"\r\n"));
        assert!(
            raw.split(|b| *b == b'\n').all(|l| l.len() <= 78),
            "lines too long"
        );
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .expect("parse");
        assert_eq!(msg.subject(), Some(subject));
        assert_eq!(msg.parts.first().map(|p| p.contents()), Some(&body[..]));
        let lf = base64_lines(b"abc", b"\n");
        assert_eq!(lf, b"YWJj\n");
        assert_eq!(encode_header_text("plain ascii"), "plain ascii");
    }
    use crate::config::Config;

    fn list() -> ListConfig {
        Config::embedded().unwrap().lists[0].clone()
    }

    fn header(msg: &[u8], name: &str) -> Vec<String> {
        let (fields, _) = split_message(msg);
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value())
            .collect()
    }

    #[test]
    fn subject_prefix_once() {
        let p = Some("[forum]");
        assert_eq!(
            prefixed_subject(p, "Vraag over leefloon"),
            "[forum] Vraag over leefloon"
        );
        assert_eq!(prefixed_subject(p, "Re: Vraag"), "Re: [forum] Vraag");
        assert_eq!(
            prefixed_subject(p, "Re: [forum] Vraag"),
            "Re: [forum] Vraag"
        );
        assert_eq!(
            prefixed_subject(p, "[forum] Re: [forum] Vraag"),
            "Re: [forum] Vraag"
        );
        assert_eq!(
            prefixed_subject(p, "RE: Re: [FORUM] Vraag"),
            "Re: [forum] Vraag"
        );
        assert_eq!(prefixed_subject(p, "AW: Antw: Vraag"), "Re: [forum] Vraag");
        assert_eq!(prefixed_subject(p, "Re[2]: Vraag"), "Re: [forum] Vraag");
        assert_eq!(prefixed_subject(p, "[forum] Vraag"), "[forum] Vraag");
        assert_eq!(prefixed_subject(p, "Fwd: Vraag"), "[forum] Fwd: Vraag");
        assert_eq!(prefixed_subject(p, "Reglement"), "[forum] Reglement");
        assert_eq!(prefixed_subject(None, "Re: x"), "Re: x");
    }

    #[test]
    fn encoded_words_round_trip() {
        let s =
            "Re: [forum] Cliënt met schuldbemiddeling — dringend, wie heeft ervaring met het OCMW?";
        let enc = encode_header_text(s);
        assert!(enc.is_ascii());
        assert!(enc.lines().all(|l| l.trim_end().len() <= 76), "{enc}");
        let msg = format!("Subject: {enc}\r\n\r\n");
        let m = MessageParser::default()
            .parse_headers(msg.as_bytes())
            .unwrap();
        assert_eq!(m.subject().unwrap(), s);
    }

    #[test]
    fn plain_text_copy() {
        let raw = b"From: Jan <jan@ocmw.be>\r\nTo: forum@lists.example.org\r\nSubject: Vraag\r\n\
Message-ID: <a@b>\r\nList-Id: other <other.example.com>\r\nReturn-Path: <x@y>\r\n\
Reply-To: jan@elders.be\r\n\r\nHallo collega's\r\n";
        let out = list_copy(&list(), raw, false, false);
        let s = String::from_utf8(out.clone()).unwrap();
        assert_eq!(header(&out, "Subject"), ["[forum] Vraag"]);
        assert_eq!(
            header(&out, "List-Id"),
            ["Forum OCMW <forum.lists.example.org>"]
        );
        assert_eq!(header(&out, "Message-ID"), ["<a@b>"]);
        assert_eq!(header(&out, "Reply-To"), ["forum@lists.example.org"]);
        assert_eq!(header(&out, "Precedence"), ["list"]);
        assert_eq!(header(&out, "X-Loop"), ["forum@lists.example.org"]);
        assert!(header(&out, "Return-Path").is_empty());
        for h in [
            "List-Post",
            "List-Help",
            "List-Subscribe",
            "List-Unsubscribe",
            "List-Owner",
        ] {
            assert_eq!(header(&out, h).len(), 1, "{h}");
        }
        assert!(s.contains("\r\n\r\nHallo collega's\r\n-- \r\nForum OCMW"));
        assert!(s.contains("forum-leave@lists.example.org"));
    }

    #[test]
    fn from_rewrite_keeps_the_author_reachable() {
        let raw =
            b"From: =?UTF-8?Q?Ann_Cl=C3=A6s?= <ann@example.com>\r\nTo: forum@lists.example.org\r\n\
Cc: Piet <piet@ocmw.be>\r\nSubject: Vraag\r\nMessage-ID: <r@b>\r\n\r\nHallo\r\n";
        // Replies to the list: the author in Cc, beside the other Cc.
        let out = list_copy(&list(), raw, false, true);
        let m = MessageParser::default().parse_headers(&out).unwrap();
        let from = m.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("forum@lists.example.org"));
        assert_eq!(from.name(), Some("Ann Clæs via Forum OCMW"));
        assert_eq!(header(&out, "From").len(), 1);
        assert_eq!(header(&out, "Reply-To"), ["forum@lists.example.org"]);
        let cc: Vec<_> = m.cc().unwrap().iter().filter_map(|a| a.address()).collect();
        assert_eq!(cc, ["piet@ocmw.be", "ann@example.com"]);
        // Replies to the author: the author in Reply-To, unless the author set one.
        let mut l = list();
        l.reply_to = ReplyTo::Author;
        let out = list_copy(&l, raw, false, true);
        assert_eq!(
            header(&out, "Reply-To"),
            ["=?UTF-8?Q?Ann_Cl=C3=A6s?= <ann@example.com>"]
        );
        assert_eq!(header(&out, "Cc"), ["Piet <piet@ocmw.be>"]);
        let own = b"From: ann@example.com\r\nReply-To: ann@thuis.be\r\nSubject: x\r\n\r\nHallo\r\n";
        let out = list_copy(&l, own, false, true);
        assert_eq!(header(&out, "Reply-To"), ["ann@thuis.be"]);
        assert_eq!(
            header(&out, "From"),
            ["\"ann@example.com via Forum OCMW\" <forum@lists.example.org>"]
        );
        // Without rewriting, the From stays as it came.
        let out = list_copy(&l, raw, false, false);
        assert_eq!(
            header(&out, "From"),
            ["=?UTF-8?Q?Ann_Cl=C3=A6s?= <ann@example.com>"]
        );
    }

    #[test]
    fn base64_text_is_reencoded_with_footer() {
        let body = base64::engine::general_purpose::STANDARD.encode(b"Cli\xebnt vraagt steun\n");
        let raw = format!(
            "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n"
        );
        let out = list_copy(&list(), raw.as_bytes(), false, false);
        let m = MessageParser::default().parse(&out).unwrap();
        let text = m.body_text(0).unwrap();
        assert!(text.starts_with("Cliënt vraagt steun"), "{text}");
        assert!(text.contains("forum-leave@"));
        assert_eq!(header(&out, "Content-Transfer-Encoding"), ["base64"]);
    }

    #[test]
    fn multipart_mixed_gets_a_footer_part() {
        let raw = b"From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n\
Content-Type: text/plain\r\n\r\ntekst\r\n--XX\r\nContent-Type: application/pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--XX--\r\n";
        let out = list_copy(&list(), raw, false, false);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.parts.len(), 4, "{}", String::from_utf8_lossy(&out));
        assert!(m.body_text(1).unwrap().contains("forum-leave@"));
        assert_eq!(m.attachment_count(), 1);
    }

    #[test]
    fn alternative_is_wrapped() {
        let raw = b"From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"YY\"\r\n\r\n--YY\r\n\
Content-Type: text/plain\r\n\r\ntekst\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>tekst</p>\r\n--YY--\r\n";
        let out = list_copy(&list(), raw, false, false);
        let ct = header(&out, "Content-Type");
        assert_eq!(ct.len(), 1);
        assert!(ct[0].starts_with("multipart/mixed"), "{ct:?}");
        let m = MessageParser::default().parse(&out).unwrap();
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("multipart/alternative; boundary=\"YY\""));
        assert!(m.parts.iter().any(
            |p| matches!(&p.body, mail_parser::PartType::Text(t) if t.contains("forum-leave@"))
        ));
    }

    /// Each member's own mute link lands in the footer, decoded right, whatever the body's
    /// structure and transfer encoding; the shared bytes never carry the marker.
    #[test]
    fn per_member_thread_links_in_every_footer_plan() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let posts: Vec<(&str, String)> = vec![
            (
                "8bit text",
                "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCliënt vraagt steun\r\n"
                    .into(),
            ),
            ("7bit text without MIME", "From: a@b.be\r\nSubject: x\r\n\r\nHallo\r\n".into()),
            (
                "quoted-printable text",
                "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCli=EBnt =\r\nvraagt steun\r\n"
                    .into(),
            ),
            (
                "base64 text, 3n bytes",
                format!(
                    "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                    b64.encode("Cliënt vraagt steun bij verhuis\n")
                ),
            ),
            (
                "base64 text, 3n+1 bytes",
                format!(
                    "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                    b64.encode("Cliënt vraagt steun bij verhuis!\n".repeat(7))
                ),
            ),
            (
                "html only",
                "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html; \
charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+SGFsbG88L3A+\r\n"
                    .into(),
            ),
            (
                "alternative",
                "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"YY\"\r\n\r\n--YY\r\n\
Content-Type: text/plain\r\n\r\ntekst\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>tekst</p>\r\n--YY--\r\n"
                    .into(),
            ),
            (
                "mixed",
                "From: a@b.be\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
Content-Type: text/plain\r\n\r\ntekst\r\n--XX\r\nContent-Type: application/pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--XX--\r\n"
                    .into(),
            ),
        ];
        let l = list();
        let secret = crate::tokens::Secret::from_bytes([3; 32]);
        for (what, raw) in &posts {
            let copy = list_copy_with(
                &l,
                raw.as_bytes(),
                true,
                false,
                ThreadLinks::Web("https://lists.example.org"),
            );
            assert_eq!(copy.slots.len(), 1, "{what}");
            assert!(!copy.bytes.contains(&1u8), "{what}: the marker leaked");
            let mut seen = Vec::new();
            for addr in ["an@ocmw.be", "jan@ocmw.be"] {
                let token =
                    secret.thread_token(secret.member_uid(l.key(), addr), 99, l.key(), addr);
                let own = copy.for_member(&token);
                let fills = copy.fills(&token);
                assert_eq!(copy.parts(&fills).concat(), own);
                let m = MessageParser::default().parse(&own).unwrap();
                let texts: String = (0..m.text_body_count() + m.attachment_count() + 4)
                    .filter_map(|i| m.body_text(i))
                    .collect::<Vec<_>>()
                    .join("\n");
                let all = m
                    .parts
                    .iter()
                    .filter_map(|p| match &p.body {
                        mail_parser::PartType::Text(t) => Some(t.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + &texts;
                let line =
                    format!("Deze draad niet meer ontvangen: https://lists.example.org/m/{token}");
                assert!(
                    all.contains(&line),
                    "{what}: {all}\n{}",
                    String::from_utf8_lossy(&own)
                );
                assert!(all.contains("forum-leave@"), "{what}");
                assert!(!all.contains('\u{1}'), "{what}");
                seen.push(own);
            }
            assert_ne!(seen[0], seen[1]);
            // The original text survives, decoded.
            if what.starts_with("base64") || what.starts_with("quoted") {
                let m = MessageParser::default().parse(&seen[0]).unwrap();
                assert!(m.body_text(0).unwrap().starts_with("Cliënt"), "{what}");
            }
        }
        // Without a web endpoint: how to mute by mail, the same for everyone.
        let (_, raw) = &posts[0];
        let copy = list_copy_with(&l, raw.as_bytes(), false, false, ThreadLinks::Mail);
        assert!(copy.slots.is_empty());
        let s = String::from_utf8_lossy(&copy.bytes);
        assert!(
            s.contains("beantwoord dit bericht met \"stil\" aan forum-request@lists.example.org"),
            "{s}"
        );
        assert_eq!(list_copy(&l, raw.as_bytes(), false, false), copy.bytes);
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc\n").as_ref(), b"a\r\nb\r\nc\r\n");
        assert!(matches!(normalize_crlf(b"a\r\nb"), Cow::Borrowed(_)));
    }

    #[test]
    fn split_keeps_folding() {
        let raw = b"Subject: a\r\n b\r\nFrom: x\r\n\r\nbody";
        let (f, body) = split_message(raw);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(f[0].value(), "a b");
        assert_eq!(body, b"body");
    }
}
