//! Finding a forgotten member's address and name in stored bytes: the address only as a
//! whole address, the name only as a whole name and only where a name stands.
//!
//! An address matches (in any ASCII case) when the byte before it does not continue a local
//! part (a letter, digit, `.`, `-`, `_`, `+` or `'`; the rest of RFC 5322's atext, such as
//! `|`, `/` or `=`, is a table rule, a URL or markup in practice), and the byte after it is not a
//! letter, digit, `-` or `_`, nor a `.` followed by a letter or digit; non-ASCII letters
//! (UTF-8, RFC 6532) on either side count as letters. So forgetting `an@ocmw.be` leaves
//! `jan@ocmw.be` and `an@ocmw.be.nl` alone and replaces `mail an@ocmw.be.` at the end of a
//! sentence. One exception, for Message-IDs: git send-email makes them as
//! `<stamp.pid-serial-ADDR>` or `<...-git-send-email-ADDR>`; after exactly that prefix the
//! address counts as whole too, so that replies to such posts keep finding their parent.
//!
//! A name matches as whole words (a space in it matches any run of blanks, folding
//! included; letters compared case-insensitively), with no letter, digit or `@` on either
//! side, nor a `.` or `-` that joins it to one (so `Anna` is not in `Joanna`, `Anna-Lena`
//! or `anna@example.org`). Where: in address header fields (From, To, Cc, Reply-To,
//! Sender, ...) outside angle brackets, RFC 2047-encoded display names included when every
//! encoded-word decodes with a known charset (else that display name is left as it is);
//! in bodies only on lines where a name stands: attribution lines (`Op <date> schreef Jan
//! Peeters <...>:`, `On <date>, Jan Peeters wrote:`, `Jan Peeters schreef:`, also wrapped
//! over two lines), quoted header lines (`Van: Jan Peeters`, `From:`, `To:`, `Cc:`), trailers
//! (`Signed-off-by: Jan Peeters <...>`), lines that give the address in angle brackets
//! (`Jan Peeters <jan@...>`), and the author in parentheses at the end of a digest's table
//! of contents. In the member's own posts (and in an RFC 1153 digest section whose `From:`
//! is the member) the name is also replaced in free text (signatures, subject), where it
//! must be written as given or start with a capital letter.

use std::ops::Range;

/// One replacement: bytes `.0..​.1` become `.2`.
pub(super) type Edit = (usize, usize, Vec<u8>);

/// Whose text a stretch of bytes is: the forgotten member's own (their posts) or others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Others,
    Own,
}

/// Address header fields: their display names and comments name people.
const ADDRESS_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "mail-followup-to",
    "mail-reply-to",
];

/// Identifier fields: never a name in them, even in the member's own posts.
const ID_FIELDS: &[&str] = &[
    "message-id",
    "in-reply-to",
    "references",
    "resent-message-id",
    "content-id",
];

/// RFC 1153's separators (a digest's messages are separated by the 30-dash one).
const SEP70: &str = "----------------------------------------------------------------------";
const SEP30: &str = "------------------------------";

/// The UTF-8 character that ends at `i`, when the bytes there are valid UTF-8.
pub(super) fn char_before(h: &[u8], i: usize) -> Option<char> {
    let start = i.saturating_sub(4);
    for k in (start..i).rev() {
        if h[k] & 0xC0 != 0x80 {
            let mut cs = std::str::from_utf8(&h[k..i]).ok()?.chars();
            let c = cs.next()?;
            return cs.next().is_none().then_some(c);
        }
    }
    None
}

/// The UTF-8 character that starts at `i`, when the bytes there are valid UTF-8.
pub(super) fn char_at(h: &[u8], i: usize) -> Option<char> {
    let s = h.get(i..(i + 4).min(h.len()))?;
    let valid = match std::str::from_utf8(s) {
        Ok(v) => v,
        Err(e) => std::str::from_utf8(&s[..e.valid_up_to()]).ok()?,
    };
    valid.chars().next()
}

fn alnum(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// `stamp.pid-serial-` (git send-email since 2.x) or `...-git-send-email-` (before).
fn git_send_email_prefix(p: &[u8]) -> bool {
    if p.ends_with(b"-git-send-email-") {
        return true;
    }
    let Some(p) = p.strip_suffix(b"-") else {
        return false;
    };
    let Ok(p) = std::str::from_utf8(p) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match p.rsplit_once('-') {
        Some((stamp, serial)) if digits(serial) => {
            matches!(stamp.split_once('.'), Some((a, b)) if digits(a) && digits(b))
        }
        _ => false,
    }
}

/// Bytes that, written before an address, make it part of a longer local part: letters,
/// digits and the atext that real addresses use inside them (`jan`, `j.an`, `jo-an`,
/// `j_an`, `x+an`, `o'an`). The other atext (``|/={}~^?!#$%&*` ``) is taken as a boundary:
/// in practice it is a table rule (`CC| an@...`), a URL (`?email=an@...`) or markup, and
/// a forgotten address must not survive behind it.
fn joins_local_part(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_+'".contains(&b)
}

fn addr_left_ok(h: &[u8], i: usize) -> bool {
    let Some(&c) = i.checked_sub(1).and_then(|k| h.get(k)) else {
        return true;
    };
    if joins_local_part(c) {
        // Only git send-email's own prefix may stand there (`<stamp.pid-serial-ADDR>`,
        // also inside a URL such as `lore.kernel.org/r/<id>`): the run of letters, digits,
        // `.` and `-` before the address, after a boundary.
        let mut k = i;
        while k > 0 && (h[k - 1].is_ascii_alphanumeric() || b".-".contains(&h[k - 1])) {
            k -= 1;
        }
        let boundary = k == 0 || !(joins_local_part(h[k - 1]) || h[k - 1] == b'@');
        return boundary && git_send_email_prefix(&h[k..i]);
    }
    c < 0x80 || !alnum(char_before(h, i))
}

fn addr_right_ok(h: &[u8], j: usize) -> bool {
    match h.get(j) {
        None => true,
        Some(&c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => false,
        Some(b'.') => !alnum(char_at(h, j + 1)),
        Some(&c) if c >= 0x80 => !alnum(char_at(h, j)),
        _ => true,
    }
}

/// Where `addr` occurs in `h` as a whole address (ASCII case-insensitive): the starts.
pub(super) fn find_addr(h: &[u8], addr: &[u8]) -> Vec<usize> {
    let n = addr.len();
    let mut out = Vec::new();
    if n == 0 || h.len() < n {
        return out;
    }
    let check = |i: usize, out: &mut Vec<usize>| {
        if out.last().is_none_or(|&l| i >= l + n)
            && h[i..i + n].eq_ignore_ascii_case(addr)
            && addr_left_ok(h, i)
            && addr_right_ok(h, i + n)
        {
            out.push(i);
        }
    };
    match addr.iter().rposition(|&b| b == b'@') {
        // Every occurrence has its `@` where the address has it: look only there.
        Some(at) => {
            for (p, _) in h.iter().enumerate().filter(|(_, &b)| b == b'@') {
                if p >= at && p - at + n <= h.len() {
                    check(p - at, &mut out);
                }
            }
        }
        None => {
            for i in 0..=h.len() - n {
                check(i, &mut out);
            }
        }
    }
    out
}

/// Whether `h` contains `needle`, ASCII case-insensitive (a quick test before the work).
pub(super) fn contains_ci(h: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    let first = first.to_ascii_lowercase();
    h.len() >= needle.len()
        && (0..=h.len() - needle.len()).any(|i| {
            h[i].to_ascii_lowercase() == first
                && h[i..i + needle.len()].eq_ignore_ascii_case(needle)
        })
}

/// `h` with every whole occurrence of `addr` replaced by `to`; `None` when there is none.
pub(super) fn replace_addr(h: &[u8], addr: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let found = find_addr(h, addr);
    if found.is_empty() {
        return None;
    }
    let edits = found
        .into_iter()
        .map(|i| (i, i + addr.len(), to.to_vec()))
        .collect();
    Some(apply(h, edits))
}

/// `h` with the edits made (sorted here; one that overlaps an earlier one is dropped).
pub(super) fn apply(h: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = Vec::with_capacity(h.len());
    let mut pos = 0;
    for (s, e, r) in edits {
        if s < pos || e > h.len() {
            continue;
        }
        out.extend_from_slice(&h[pos..s]);
        out.extend_from_slice(&r);
        pos = e;
    }
    out.extend_from_slice(&h[pos..]);
    out
}

/// Blanks between a name's words: spaces and tabs, and a header field's folding.
fn skip_blanks(h: &[u8], mut p: usize) -> usize {
    loop {
        match h.get(p..) {
            Some([b' ' | b'\t', ..]) => p += 1,
            Some([b'\r', b'\n', b' ' | b'\t', ..]) => p += 3,
            Some([b'\n', b' ' | b'\t', ..]) => p += 2,
            _ => return p,
        }
    }
}

fn same_letter(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// A member's display name, as whole words.
#[derive(Debug, Clone)]
pub(super) struct Name {
    words: Vec<Vec<char>>,
}

impl Name {
    /// `None` for a name shorter than 4 characters (too likely to be part of anything).
    pub(super) fn new(name: &str) -> Option<Name> {
        let name = name.trim();
        if name.chars().count() < 4 {
            return None;
        }
        let words: Vec<Vec<char>> = name
            .split_whitespace()
            .map(|w| w.chars().collect())
            .collect();
        (!words.is_empty()).then_some(Name { words })
    }

    /// The first word, when it is ASCII (for a quick test with [`contains_ci`]).
    pub(super) fn ascii_hint(&self) -> Option<String> {
        let w: String = self.words.first()?.iter().collect();
        w.is_ascii().then_some(w)
    }

    fn match_at(&self, h: &[u8], i: usize) -> Option<usize> {
        let mut p = i;
        for (n, w) in self.words.iter().enumerate() {
            if n > 0 {
                let q = skip_blanks(h, p);
                if q == p {
                    return None;
                }
                p = q;
            }
            for &wc in w {
                let c = char_at(h, p)?;
                if !same_letter(c, wc) {
                    return None;
                }
                p += c.len_utf8();
            }
        }
        Some(p)
    }

    /// Written as the member wrote it, or starting with a capital: a name in free text.
    fn free_form(&self, h: &[u8], r: &Range<usize>) -> bool {
        let found: String = String::from_utf8_lossy(&h[r.clone()])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let given: String = self.words.iter().flatten().collect();
        found == given || char_at(h, r.start).is_some_and(char::is_uppercase)
    }

    /// The whole-word occurrences inside `within` (boundaries judged on all of `h`).
    pub(super) fn find(&self, h: &[u8], within: Range<usize>) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let Some(&first) = self.words.first().and_then(|w| w.first()) else {
            return out;
        };
        let end = within.end.min(h.len());
        let mut i = within.start;
        while i < end {
            let Some(c) = char_at(h, i) else {
                i += 1;
                continue;
            };
            if same_letter(c, first) {
                if let Some(e) = self.match_at(h, i).filter(|&e| e <= end) {
                    if name_left_ok(h, i) && name_right_ok(h, e) {
                        out.push(i..e);
                        i = e;
                        continue;
                    }
                }
            }
            i += c.len_utf8();
        }
        out
    }
}

fn name_left_ok(h: &[u8], i: usize) -> bool {
    match char_before(h, i) {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '@' => false,
        Some(c @ ('.' | '-')) => !alnum(char_before(h, i - c.len_utf8())),
        _ => true,
    }
}

fn name_right_ok(h: &[u8], j: usize) -> bool {
    match char_at(h, j) {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '@' => false,
        Some(c @ ('.' | '-')) => !alnum(char_at(h, j + c.len_utf8())),
        _ => true,
    }
}

/// A message's header fields `(start, colon, end)` and where its body starts; for bytes
/// that do not start with a header field, no fields and a body from 0. Nothing is dropped.
pub(super) fn header_fields(h: &[u8]) -> (Vec<(usize, usize, usize)>, usize) {
    let mut fields: Vec<(usize, usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < h.len() {
        let end = h[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(h.len(), |i| pos + i + 1);
        let line = &h[pos..end];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.is_empty() {
            return (fields, end);
        }
        if matches!(content[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some(f) => f.2 = end,
                None => return (fields, pos),
            }
        } else {
            match content.iter().position(|&b| b == b':') {
                Some(colon)
                    if colon > 0 && content[..colon].iter().all(|&b| (33..=126).contains(&b)) =>
                {
                    fields.push((pos, pos + colon, end));
                }
                _ => return (fields, pos),
            }
        }
        pos = end;
    }
    (fields, h.len())
}

/// Whether the header block at the start of `h` has a `From:` with `addr` in it.
pub(super) fn from_is(h: &[u8], addr: &[u8]) -> bool {
    let (fields, _) = header_fields(h);
    fields.iter().any(|&(s, c, e)| {
        h[s..c].eq_ignore_ascii_case(b"from") && !find_addr(&h[c + 1..e], addr).is_empty()
    })
}

/// What replaces the name, and where: the names pass of [`super::Forget`].
pub(super) struct NamePass<'a> {
    pub name: &'a Name,
    pub addr: &'a [u8],
    pub label: &'a str,
}

impl NamePass<'_> {
    /// The edits that replace the name in `h`: in its header block (when `headers`), read
    /// as `head`'s text, and in the body, read as `body`'s.
    pub(super) fn edits(&self, h: &[u8], headers: bool, head: Scope, body: Scope) -> Vec<Edit> {
        let mut edits = Vec::new();
        let body_start = if headers {
            let (fields, body_start) = header_fields(h);
            for (s, colon, e) in fields {
                let field = String::from_utf8_lossy(&h[s..colon]).to_ascii_lowercase();
                if ADDRESS_FIELDS.contains(&field.as_str()) {
                    self.address_field(h, colon + 1..e, &mut edits);
                } else if head == Scope::Own && !ID_FIELDS.contains(&field.as_str()) {
                    for r in self.name.find(h, colon + 1..e) {
                        if self.name.free_form(h, &r) {
                            edits.push((r.start, r.end, self.label.as_bytes().to_vec()));
                        }
                    }
                }
            }
            body_start
        } else {
            0
        };
        for r in self.name.find(h, body_start..h.len()) {
            let own = body == Scope::Own || self.in_own_digest_section(h, body_start, r.start);
            if (own && self.name.free_form(h, &r)) || name_stands(h, &r, self.addr) {
                edits.push((r.start, r.end, self.label.as_bytes().to_vec()));
            }
        }
        edits
    }

    /// Display names and comments of an address field (what is outside `<...>`, split at
    /// commas, and at a group's `:` and `;`).
    fn address_field(&self, h: &[u8], value: Range<usize>, edits: &mut Vec<Edit>) {
        let mut seg = value.start;
        let mut i = value.start;
        let (mut quoted, mut comment) = (false, 0usize);
        while i < value.end {
            let b = h[i];
            if quoted || comment > 0 {
                match b {
                    b'\\' => i += 1,
                    b'"' if quoted => quoted = false,
                    b'(' if comment > 0 => comment += 1,
                    b')' if comment > 0 => comment -= 1,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => quoted = true,
                    b'(' => comment = 1,
                    b'<' => {
                        self.display_name(h, seg..i, edits);
                        while i < value.end && h[i] != b'>' {
                            i += 1;
                        }
                        seg = (i + 1).min(value.end);
                    }
                    b',' | b':' | b';' => {
                        self.display_name(h, seg..i, edits);
                        seg = i + 1;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        if seg < value.end {
            self.display_name(h, seg..value.end, edits);
        }
    }

    fn display_name(&self, h: &[u8], r: Range<usize>, edits: &mut Vec<Edit>) {
        let Some(seg) = h.get(r.clone()) else {
            return;
        };
        if !contains_ci(seg, b"=?") {
            for m in self.name.find(h, r) {
                edits.push((m.start, m.end, self.label.as_bytes().to_vec()));
            }
            return;
        }
        // Encoded-words: decoded, relabelled and written anew (as UTF-8), or left alone.
        let is_blank = |b: &u8| b.is_ascii_whitespace();
        let lead = seg.iter().take_while(|b| is_blank(b)).count();
        let trail = seg[lead..].iter().rev().take_while(|b| is_blank(b)).count();
        let inner = &seg[lead..seg.len() - trail];
        let Some(decoded) = decode_phrase(inner) else {
            return;
        };
        let d = decoded.as_bytes();
        let found = self.name.find(d, 0..d.len());
        if found.is_empty() {
            return;
        }
        let new = apply(
            d,
            found
                .into_iter()
                .map(|m| (m.start, m.end, self.label.as_bytes().to_vec()))
                .collect(),
        );
        let new = crate::compose::phrase(&String::from_utf8_lossy(&new));
        edits.push((r.start + lead, r.end - trail, new.into_bytes()));
    }

    /// Whether `at` is inside an RFC 1153 digest section whose `From:` is the member.
    fn in_own_digest_section(&self, h: &[u8], body_start: usize, at: usize) -> bool {
        // The separator line before `at`, then that section's header block.
        let mut line_end = h[..at].iter().rposition(|&b| b == b'\n');
        while let Some(le) = line_end {
            if le < body_start {
                return false;
            }
            let ls = h[..le]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let line = String::from_utf8_lossy(&h[ls..le]);
            let t = line.trim_end();
            if t == SEP30 || t == SEP70 {
                return self.section_from_is(h, le + 1, at);
            }
            line_end = ls.checked_sub(1);
        }
        false
    }

    fn section_from_is(&self, h: &[u8], mut pos: usize, limit: usize) -> bool {
        let mut started = false;
        while pos < limit {
            let end = h[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(h.len(), |i| pos + i + 1);
            let line = &h[pos..end];
            let blank = line.iter().all(u8::is_ascii_whitespace);
            if blank && started {
                return false;
            }
            if !blank {
                started = true;
                if line.len() > 5
                    && line[..5].eq_ignore_ascii_case(b"from:")
                    && !find_addr(line, self.addr).is_empty()
                {
                    return true;
                }
            }
            pos = end;
        }
        false
    }
}

/// The line of `h` around `at`: (start, end without the line break).
fn line_at(h: &[u8], at: usize) -> (usize, usize) {
    let s = h[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let e = h[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(h.len(), |p| at + p);
    let e = if e > s && h[e - 1] == b'\r' { e - 1 } else { e };
    (s, e)
}

/// A line as text for recognising it: without quote markers, HTML tags and the common
/// entities.
fn plain_line(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let mut t = s.trim_start();
    while let Some(r) = t.strip_prefix('>') {
        t = r.trim_start();
    }
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt + 1..];
        let tag_end = after.find('>');
        let is_tag = tag_end.is_some_and(|e| {
            let tag = &after[..e];
            tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!')
                && (!tag.contains('@') || tag.starts_with("a ") || tag.starts_with("A "))
        });
        match (is_tag, tag_end) {
            (true, Some(e)) => rest = &after[e + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&#64;", "@")
        .replace("&amp;", "&")
}

const ATTRIBUTION_VERBS: &[&str] = &[
    "wrote",
    "writes",
    "said",
    "schreef",
    "schrijft",
    "geschreven",
    "schrieb",
    "écrit",
];

/// `Op <date> schreef Jan Peeters <...>:`, `On <date>, Jan Peeters wrote:`, `Jan schreef:`.
fn is_attribution(t: &str) -> bool {
    let t = t.trim_end();
    t.ends_with(':')
        && t.split(|c: char| !c.is_alphanumeric())
            .any(|w| ATTRIBUTION_VERBS.iter().any(|v| w.to_lowercase() == *v))
}

/// `Van: Jan Peeters`, `From: ...`, `*From:* ...` (quoted Outlook headers, digests).
fn is_header_line(t: &str) -> bool {
    let t = t.trim_start_matches(|c: char| c == '*' || c.is_whitespace());
    let lc: String = t.chars().take(12).collect::<String>().to_lowercase();
    [
        "from:",
        "van:",
        "to:",
        "aan:",
        "cc:",
        "bcc:",
        "reply-to:",
        "sender:",
        "afzender:",
    ]
    .iter()
    .any(|p| lc.starts_with(p))
}

/// `Signed-off-by: Jan Peeters <...>` and the other `...-by:` trailers.
fn is_trailer(t: &str) -> bool {
    let t = t.trim_start();
    t.split_once(':').is_some_and(|(k, _)| {
        k.len() > 3
            && k.to_ascii_lowercase().ends_with("-by")
            && k.starts_with(|c: char| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn starts_attribution(t: &str) -> bool {
    let t = t.trim_start().to_lowercase();
    ["on ", "op ", "le ", "am ", "el "]
        .iter()
        .any(|p| t.starts_with(p))
}

/// Whether the name found at `r` in a body stands where a name stands (see the module).
fn name_stands(h: &[u8], r: &Range<usize>, addr: &[u8]) -> bool {
    let (ls, le) = line_at(h, r.start);
    let line = &h[ls..le];
    // The author at the end of a digest's table of contents: `  3. Subject (Jan Peeters)`.
    let trimmed = line.trim_ascii_end();
    if trimmed.ends_with(b")") {
        if let Some(open) = trimmed.iter().rposition(|&b| b == b'(') {
            if ls + open < r.start && r.end < ls + trimmed.len() {
                return true;
            }
        }
    }
    // The address in angle brackets (or a mailto link) on the same line.
    if find_addr(line, addr).into_iter().any(|i| {
        (i > 0 && line[i - 1] == b'<') || line[..i].to_ascii_lowercase().ends_with(b"mailto:")
    }) {
        return true;
    }
    let t = plain_line(line);
    if is_attribution(&t) || is_header_line(&t) || is_trailer(&t) {
        return true;
    }
    // An attribution wrapped over two lines.
    if !t.trim_end().ends_with(':') && starts_attribution(&t) {
        let next = h[le..].iter().position(|&b| b == b'\n').map(|p| le + p + 1);
        if let Some(ns) = next.filter(|&ns| ns < h.len()) {
            let (ns, ne) = line_at(h, ns);
            if is_attribution(&format!("{t} {}", plain_line(&h[ns..ne]))) {
                return true;
            }
        }
    }
    if ls >= 1 {
        let (ps, pe) = line_at(h, ls - 1);
        let p = plain_line(&h[ps..pe]);
        if ps < ls && !p.trim_end().ends_with(':') && starts_attribution(&p) {
            return is_attribution(&format!("{p} {t}"));
        }
    }
    false
}

/// An RFC 5322 phrase with RFC 2047 encoded-words, decoded; `None` when anything in it
/// cannot be decoded safely (unknown charset, broken encoding, comments, bad UTF-8).
fn decode_phrase(p: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    let mut last_encoded = false;
    let mut pending_space = false;
    while i < p.len() {
        if p[i].is_ascii_whitespace() {
            pending_space = true;
            i += 1;
            continue;
        }
        if p[i..].starts_with(b"=?") {
            let (text, len) = decode_word(&p[i..])?;
            if pending_space && !last_encoded && !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&text);
            i += len;
            last_encoded = true;
        } else if p[i] == b'"' {
            let mut j = i + 1;
            let mut s = Vec::new();
            while j < p.len() && p[j] != b'"' {
                if p[j] == b'\\' {
                    j += 1;
                }
                if let Some(&b) = p.get(j) {
                    s.push(b);
                }
                j += 1;
            }
            if j >= p.len() {
                return None;
            }
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            out.push_str(std::str::from_utf8(&s).ok()?);
            i = j + 1;
            last_encoded = false;
        } else {
            let j = p[i..]
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'"')
                .map_or(p.len(), |k| i + k);
            let atom = std::str::from_utf8(&p[i..j]).ok()?;
            if atom.contains(['(', ')', '<', '>', '@', ',', ';', ':', '\\']) {
                return None;
            }
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            out.push_str(atom);
            i = j;
            last_encoded = false;
        }
        pending_space = false;
    }
    Some(out)
}

/// One encoded-word at the start of `w`: its text and its length in bytes.
fn decode_word(w: &[u8]) -> Option<(String, usize)> {
    use base64::Engine;
    let s = std::str::from_utf8(w.get(..w.len().min(1000))?).ok()?;
    let rest = s.strip_prefix("=?")?;
    let (charset, rest) = rest.split_once('?')?;
    let (enc, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if text.contains(|c: char| c.is_ascii_whitespace() || c == '?') {
        return None;
    }
    let len = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    let bytes = match enc {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()?,
        "q" | "Q" => {
            let t = text.replace('_', " ");
            quoted_printable::decode(t.as_bytes(), quoted_printable::ParseMode::Strict).ok()?
        }
        _ => return None,
    };
    let charset = charset.split('*').next().unwrap_or(charset);
    let text = if charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8") {
        String::from_utf8(bytes).ok()?
    } else if charset.eq_ignore_ascii_case("us-ascii") {
        bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(&bytes).into_owned())?
    } else {
        mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes())?(&bytes)
    };
    Some((text, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(h: &str, a: &str) -> Vec<usize> {
        find_addr(h.as_bytes(), a.as_bytes())
    }

    #[test]
    fn an_address_matches_only_whole() {
        let a = "an@ocmw.be";
        assert!(addrs("jan@ocmw.be", a).is_empty());
        assert!(addrs("j.an@ocmw.be", a).is_empty());
        assert!(addrs("an@ocmw.be.nl", a).is_empty());
        assert!(addrs("an@ocmw.be-x.org", a).is_empty());
        assert!(addrs("ján@ocmw.be", "n@ocmw.be").is_empty());
        assert_eq!(addrs("mail an@ocmw.be.", a), vec![5]);
        assert_eq!(addrs("<AN@OCMW.BE>", a), vec![1]);
        assert_eq!(addrs("an@ocmw.be", a), vec![0]);
        assert_eq!(addrs("\"an@ocmw.be\",", a), vec![1]);
        assert_eq!(addrs("mailto:an@ocmw.be?subject", a), vec![7]);
        // git send-email's Message-IDs carry the address after their own prefix.
        assert_eq!(addrs("<20240101120000.1234-1-an@ocmw.be>", a), vec![23]);
        assert_eq!(addrs("<1234-56-git-send-email-an@ocmw.be>", a), vec![24]);
        // Inside a URL, and after a table rule or a query parameter.
        assert_eq!(
            addrs(
                "Link: https://lore.kernel.org/r/20210813220120.502058-1-an@ocmw.be",
                a
            ),
            vec![56]
        );
        assert_eq!(addrs("  CC|     |an@ocmw.be\r\n", a), vec![11]);
        assert_eq!(addrs("mailto:x?email=an@ocmw.be", a), vec![15]);
        // Still other addresses: a longer local part, a subaddress, an apostrophe.
        assert!(addrs("j.an@ocmw.be x+an@ocmw.be o'an@ocmw.be jo_an@ocmw.be", a).is_empty());
        assert!(addrs("1.2-3-jan@ocmw.be x1.2-3-an@ocmw.be", a).is_empty());
        assert!(addrs("<20240101120000.1234-1-jan@ocmw.be>", a).is_empty());
        assert!(addrs("<x.an@ocmw.be>", a).is_empty());
    }

    #[test]
    fn a_name_matches_only_whole_words() {
        let n = Name::new("Anna").unwrap();
        let find = |h: &str| n.find(h.as_bytes(), 0..h.len());
        assert!(find("Joanna Jansen").is_empty());
        assert!(find("Anna-Lena").is_empty());
        assert!(find("anna@example.org").is_empty());
        assert!(find("Annabel").is_empty());
        assert_eq!(find("Groet, Anna."), vec![7..11]);
        assert_eq!(find("ANNA"), vec![0..4]);
        let n = Name::new("Jan Peeters").unwrap();
        let h = b"From: Jan\r\n Peeters <x@y>";
        assert_eq!(n.find(h, 0..h.len()), vec![6..19]);
        assert!(Name::new("An").is_none());
    }

    #[test]
    fn encoded_display_names_are_decoded() {
        assert_eq!(
            decode_phrase(b"=?utf-8?q?Jos=C3=A9?= =?utf-8?b?IFBlZXRlcnM=?=").as_deref(),
            Some("José Peeters")
        );
        assert_eq!(
            decode_phrase(b"=?iso-8859-1?q?Jos=E9?= Peeters").as_deref(),
            Some("José Peeters")
        );
        assert!(decode_phrase(b"=?x-unknown?q?abc?=").is_none());
        assert!(decode_phrase(b"=?utf-8?b?!!!?=").is_none());
    }
}
