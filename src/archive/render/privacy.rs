//! What the archive takes out of what it publishes: addresses (in running text, and in
//! HTML judged on the text a reader sees) and clients' numbers ([`crate::redact`]).
//!
//! The address scanner is written by hand: the crates that find addresses validate a
//! given string; none finds and replaces them inside running text.

use super::*;

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
pub(super) fn project_html(html: &str) -> (String, Vec<(usize, usize)>) {
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

pub(super) fn decode_entity(name: &str) -> Option<char> {
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

pub(super) fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'=')
}

pub(super) fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-') || c >= 0x80
}

/// How many bytes an at sign takes at `i`: `@`, or written as `%40` (URLs, RFC 2231
/// parameters), `=40` (quoted-printable left undecoded), `&#64;`, `&#x40;`, `&commat;`
/// (HTML). 0 when there is none.
pub(super) fn at_sign(b: &[u8], i: usize) -> usize {
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
pub(super) fn address_spans(b: &[u8]) -> Vec<(usize, usize, usize)> {
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
pub(super) fn address_label(
    b: &[u8],
    (s, at, _): (usize, usize, usize),
    mode: AddressMode,
) -> Vec<u8> {
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
