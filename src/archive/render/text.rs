//! Plain text to HTML: format=flowed joined, hard wraps reflowed into paragraphs (lists,
//! code, tables and patches keep their lines), quotes grouped and folded, Outlook's original
//! below a reply folded, signatures and disclaimers dimmed, http/https links.

use super::*;

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

pub(super) fn quote_level(line: &str) -> Option<&str> {
    let t = line.strip_prefix(' ').unwrap_or(line);
    let rest = t.strip_prefix('>')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Where Outlook (and others) put the whole previous message under the reply without `>`.
pub(in crate::archive) fn is_original_header(lines: &[&str], i: usize) -> bool {
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
pub(super) fn plain(
    lines: &[&str],
    level: usize,
    labels: &Labels,
    html: &mut String,
    text: &mut String,
) {
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
pub(super) const WRAPPED_LINE: usize = 50;

/// The author's text as paragraphs for any screen width: hard-wrapped lines are joined
/// into one paragraph (a short line ends a line of its own: "Hallo,"); a paragraph with
/// a line that looks like code, a patch, a table or a list keeps every line break.
pub(super) fn paragraphs(lines: &[&str], html: &mut String) {
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
pub(super) fn is_structured(line: &str) -> bool {
    let t = line.trim_end();
    if t.starts_with("  ") || t.starts_with('\t') || t.contains('\t') || t.contains("   ") {
        return true;
    }
    let s = t.trim_start();
    is_list_item(s) || s.ends_with(';') || is_code_like(s)
}

/// "- item", "* item", "1. item", "2) item", "a) item" (already trimmed at the start).
pub(super) fn is_list_item(s: &str) -> bool {
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
pub(super) fn is_code_like(s: &str) -> bool {
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
pub(super) fn list_lines(para: &[&str]) -> Option<Vec<String>> {
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
pub(super) fn own_tail_end(lines: &[&str], from: usize) -> usize {
    (from..lines.len())
        .find(|&j| quote_level(lines[j]).is_some() || is_original_header(lines, j))
        .unwrap_or(lines.len())
}

/// A disclaimer, folded into one line; never searched.
pub(super) fn disclaimer(block: &[&str], labels: &Labels, html: &mut String) {
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
pub(super) fn attribution_lines(own: &[&str]) -> usize {
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

pub(super) fn quote(
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
pub(super) fn linkify(s: &str, html: &mut String) {
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
