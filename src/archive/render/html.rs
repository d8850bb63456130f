//! Mail HTML: sanitized with ammonia (structure and text only), images as their
//! descriptions, and the author's own words of it for the search index.

use super::*;

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
pub(super) fn images_as_text(html: &str, image: &str) -> String {
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
pub(super) fn html_own_text(html: &str, labels: &Labels) -> String {
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
pub(in crate::archive) fn decode_entities(s: &str) -> String {
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
