//! The raw downloads (`.eml`, mbox): delivery headers dropped, Message-IDs made opaque,
//! addresses and clients' numbers replaced inside headers and inside base64 and
//! quoted-printable text parts, everything else byte for byte.
//!
//! Written by hand: no crate rewrites a message's parts in place and leaves the rest of
//! its bytes as they were.

use super::*;

/// Header fields dropped from downloads: delivery paths and signatures that carry
/// addresses, host names and IP numbers of members and mean nothing to a reader.
pub(super) const DROPPED_HEADERS: &[&str] = &[
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
pub(super) const ID_HEADERS: &[&str] = &[
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

pub(super) fn header_end(raw: &[u8]) -> usize {
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

pub(super) fn scrub_headers(h: &[u8], privacy: Privacy) -> Vec<u8> {
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
pub(super) fn scrub_header_bytes(b: &[u8], privacy: Privacy) -> Cow<'_, [u8]> {
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
pub(super) fn encode_words(s: &str) -> String {
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

pub(super) fn scrub_message(raw: &[u8], privacy: Privacy, depth: usize) -> Vec<u8> {
    let parsed = if depth < 4 {
        MessageParser::default().parse(raw)
    } else {
        None
    };
    scrub_with(raw, parsed.as_ref(), privacy, depth)
}

pub(super) fn scrub_with(
    raw: &[u8],
    msg: Option<&Message>,
    privacy: Privacy,
    depth: usize,
) -> Vec<u8> {
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
pub(super) fn scrub_text<'a>(b: &'a [u8], html: bool, privacy: Privacy) -> Cow<'a, [u8]> {
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

pub(super) fn scrub_leaf<'r>(
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
                    Cow::Owned(crate::compose::base64_lines(&h, nl))
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
