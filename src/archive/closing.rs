//! Where an author's own words end: closing greetings and the signature block below them
//! (with or without a `-- ` line), confidentiality disclaimers, in plain text and in
//! sanitized HTML. What is found here is shown dimmed or folded and never searched.

/// Lines a confidentiality disclaimer may take (it runs to the end of the author's text).
pub(super) const MAX_DISCLAIMER_LINES: usize = 30;

/// Closing greetings that start a signature without a `-- ` line (lower case, without
/// the comma or full stop after them).
pub(super) const CLOSINGS: &[&str] = &[
    "met vriendelijke groet",
    "met vriendelijke groeten",
    "vriendelijke groet",
    "vriendelijke groeten",
    "met collegiale groet",
    "met collegiale groeten",
    "collegiale groet",
    "collegiale groeten",
    "met hartelijke groet",
    "met hartelijke groeten",
    "hartelijke groet",
    "hartelijke groeten",
    "met beste groeten",
    "beste groeten",
    "hartelijke groetjes",
    "veel groeten",
    "groeten",
    "groetjes",
    "groet",
    "mvg",
    "m.v.g",
    "vg",
    "kind regards",
    "best regards",
    "warm regards",
    "with kind regards",
    "with best regards",
    "regards",
    "best wishes",
    "yours sincerely",
    "sincerely",
    "cordialement",
    "bien à vous",
    "met vriendelijke groet en dank",
];

/// A line that is a closing greeting: "Met vriendelijke groeten,", "Mvg", "Groetjes, An",
/// "Kind regards Jan Peeters" (a greeting, then at most four words of a name).
pub(super) fn is_closing(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.chars().count() > 60 {
        return false;
    }
    let bare = t.trim_end_matches([',', '.', '!', ':', ' ']);
    CLOSINGS.iter().any(|g| {
        let Some(rest) = bare
            .get(..g.len())
            .filter(|p| p.to_lowercase() == *g)
            .and_then(|_| bare.get(g.len()..))
        else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        // "Groetjes, An" / "Mvg Jan": a name after the greeting, each word capitalised.
        let Some(name) = rest.strip_prefix(',').or_else(|| rest.strip_prefix(' ')) else {
            return false;
        };
        let words: Vec<&str> = name.split_whitespace().collect();
        !words.is_empty()
            && words.len() <= 4
            && words
                .iter()
                .all(|w| w.chars().next().is_some_and(char::is_uppercase))
    })
}

/// Whether `block` (the lines from a closing greeting or below `-- ` to the end of the
/// author's text) is short enough to be a signature: a name, a function, an
/// organisation, phone and address lines. Below `-- ` anything up to 25 lines counts.
pub(super) fn signature_block(block: &[&str], from_greeting: bool) -> bool {
    if !from_greeting {
        return block.len() <= 25;
    }
    let filled: Vec<&str> = block
        .iter()
        .filter(|l| !l.trim().is_empty())
        .copied()
        .collect();
    filled.len() <= 11 && block.len() <= 16 && filled.iter().all(|l| l.trim().chars().count() <= 90)
}

/// Whether a confidentiality disclaimer starts at line `i`: a paragraph's first line
/// that says so ("Dit bericht is vertrouwelijk ...", "Disclaimer: ...", "This e-mail and
/// any attachments ...").
pub(super) fn is_disclaimer(lines: &[&str], i: usize) -> bool {
    let l = lines[i]
        .trim()
        .trim_start_matches(['-', '_', '*', '=', ' '])
        .to_lowercase();
    if l.is_empty() || (i > 0 && !lines[i - 1].trim().is_empty() && !is_rule(lines[i - 1])) {
        return false;
    }
    const STARTS: &[&str] = &[
        "disclaimer",
        "vertrouwelijkheidsclausule",
        "this e-mail and any attachment",
        "this email and any attachment",
        "this message and any attachment",
        "the information contained in this",
        "the information in this e-mail",
        "the information in this email",
        "de informatie in dit bericht",
        "de informatie in deze e-mail",
        "de informatie opgenomen in dit",
    ];
    if STARTS.iter().any(|p| l.starts_with(p)) {
        return true;
    }
    let about_mail = [
        "dit bericht",
        "deze e-mail",
        "deze mail",
        "dit e-mailbericht",
        "deze email",
        "this message",
        "this e-mail",
        "this email",
    ]
    .iter()
    .any(|w| l.contains(w));
    let confidential = [
        "vertrouwelijk",
        "confidential",
        "uitsluitend bestemd",
        "alleen bestemd",
        "intended solely",
        "intended only",
        "intended recipient",
    ]
    .iter()
    .any(|w| l.contains(w));
    about_mail && confidential
}

/// A line of dashes, underscores or equal signs (above a disclaimer).
pub(super) fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 3 && t.chars().all(|c| matches!(c, '-' | '_' | '=' | '*'))
}

/// Marks the element a mail program labelled as its signature (Outlook `id="Signature"`,
/// Gmail `gmail_signature`, Thunderbird `moz-signature`, Apple Mail
/// `AppleMailSignature`), before sanitizing removes the attributes: a private-use
/// character is put right after its opening tag, and [`html`] finds it again.
pub(super) fn mark_html_signatures(html: &str) -> std::borrow::Cow<'_, str> {
    let lower = html.to_ascii_lowercase();
    if !lower.contains("signature") && !html.contains(MARK) {
        return std::borrow::Cow::Borrowed(html);
    }
    // A mark the sender's HTML carried itself is dropped first.
    let html = html.replace(MARK, "");
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 8);
    let mut pos = 0;
    let mut search = 0;
    while let Some(lt) = lower[search..].find('<').map(|k| search + k) {
        let Some(gt) = tag_end(&lower, lt) else {
            break;
        };
        let tag = &lower[lt..gt];
        search = gt;
        if tag.starts_with("</") || tag.starts_with("<!") {
            continue;
        }
        let marked = ["id=", "class="].iter().any(|attr| {
            tag.match_indices(attr).any(|(k, _)| {
                let v = &tag[k + attr.len()..];
                let v = v.trim_start_matches(['"', '\'']);
                let v = &v[..v.find(['"', '\'', '>']).unwrap_or(v.len())];
                v.split_whitespace().any(|c| {
                    matches!(
                        c.trim_start_matches("x_"),
                        "signature" | "gmail_signature" | "moz-signature" | "applemailsignature"
                    )
                })
            })
        });
        if marked {
            out.push_str(&html[pos..gt]);
            out.push(MARK);
            pos = gt;
        }
    }
    out.push_str(&html[pos..]);
    std::borrow::Cow::Owned(out)
}

/// The private-use character that marks a labelled signature between the two passes.
const MARK: char = '\u{E000}';

/// The end (after `>`) of the tag starting at `lt`, with quoted attribute values skipped.
fn tag_end(s: &str, lt: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (k, c) in s.as_bytes()[lt..].iter().enumerate() {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(*c),
            (None, b'>') => return Some(lt + k + 1),
            _ => {}
        }
    }
    None
}

/// A node of sanitized HTML: an element (its tag name) or a run of text.
struct Node {
    tag: Option<String>,
    start: usize,
    end: usize,
    parent: usize,
    children: Vec<usize>,
}

const VOID: &[&str] = &["br", "hr", "img", "wbr", "col"];

/// Sanitized HTML (well formed: ammonia's serializer) as a tree; node 0 is the whole.
fn tree(html: &str) -> Vec<Node> {
    let mut nodes = vec![Node {
        tag: None,
        start: 0,
        end: html.len(),
        parent: 0,
        children: Vec::new(),
    }];
    let mut open: Vec<usize> = vec![0];
    let mut i = 0;
    let add = |nodes: &mut Vec<Node>, open: &[usize], n: Node| {
        let id = nodes.len();
        let parent = *open.last().unwrap_or(&0);
        nodes.push(Node { parent, ..n });
        nodes[parent].children.push(id);
        id
    };
    while i < html.len() {
        let Some(lt) = html[i..].find('<').map(|k| i + k) else {
            add(
                &mut nodes,
                &open,
                Node {
                    tag: None,
                    start: i,
                    end: html.len(),
                    parent: 0,
                    children: Vec::new(),
                },
            );
            break;
        };
        if lt > i {
            add(
                &mut nodes,
                &open,
                Node {
                    tag: None,
                    start: i,
                    end: lt,
                    parent: 0,
                    children: Vec::new(),
                },
            );
        }
        let Some(gt) = tag_end(html, lt) else {
            break;
        };
        let tag = &html[lt + 1..gt - 1];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        if closing {
            if let Some(k) = open
                .iter()
                .rposition(|&n| nodes[n].tag.as_deref() == Some(name.as_str()))
            {
                for &n in &open[k..] {
                    nodes[n].end = gt;
                }
                open.truncate(k.max(1));
            }
        } else {
            let void = VOID.contains(&name.as_str());
            let id = add(
                &mut nodes,
                &open,
                Node {
                    tag: Some(name),
                    start: lt,
                    end: gt,
                    parent: 0,
                    children: Vec::new(),
                },
            );
            if !void {
                open.push(id);
            }
        }
        i = gt;
    }
    for &n in &open[1..] {
        nodes[n].end = html.len();
    }
    nodes
}

/// The lines a reader sees in a piece of sanitized HTML.
fn lines_of(html: &str) -> Vec<String> {
    const BREAK: &[&str] = &[
        "br",
        "p",
        "div",
        "li",
        "tr",
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
        "pre",
        "blockquote",
        "dd",
        "dt",
    ];
    let mut text = String::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        let Some(gt) = tag_end(rest, lt) else {
            rest = "";
            break;
        };
        let name: String = rest[lt + 1..gt]
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        text.push(if BREAK.contains(&name.to_ascii_lowercase().as_str()) {
            '\n'
        } else {
            ' '
        });
        rest = &rest[gt..];
    }
    text.push_str(rest);
    super::render::decode_entities(&text)
        .lines()
        .map(|l| l.trim().replace(MARK, ""))
        .collect()
}

fn first_line(html: &str) -> Option<String> {
    lines_of(html).into_iter().find(|l| !l.is_empty())
}

fn inside(nodes: &[Node], mut n: usize, tag: &str) -> bool {
    while n != 0 {
        n = nodes[n].parent;
        if nodes[n].tag.as_deref() == Some(tag) {
            return true;
        }
    }
    false
}

/// What ends a signature or disclaimer among its siblings: a quote, a rule, Outlook's
/// original below the reply.
fn stops(html: &str, nodes: &[Node], n: usize) -> bool {
    let node = &nodes[n];
    if matches!(node.tag.as_deref(), Some("blockquote" | "hr")) {
        return true;
    }
    let piece = &html[node.start..node.end];
    if piece.contains("<blockquote") {
        return true;
    }
    let lines = lines_of(piece);
    let filled: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.is_empty())
        .collect();
    !filled.is_empty() && super::render::is_original_header(&filled, 0)
}

/// The range from the text node `t` on: climbed to the outermost element that `t` starts,
/// then through its following siblings up to what [`stops`] it (or a disclaimer, when
/// `disclaimer_stops`).
fn block_from(html: &str, nodes: &[Node], t: usize, disclaimer_stops: bool) -> (usize, usize) {
    let mut a = t;
    loop {
        let p = nodes[a].parent;
        if p == 0 {
            break;
        }
        let first = nodes[p].children.iter().copied().find(|&c| {
            nodes[c].tag.is_some() || !html[nodes[c].start..nodes[c].end].trim().is_empty()
        });
        if first != Some(a) {
            break;
        }
        a = p;
    }
    let p = nodes[a].parent;
    let siblings = &nodes[p].children;
    let at = siblings.iter().position(|&c| c == a).unwrap_or(0);
    let mut end = nodes[a].end;
    for &c in &siblings[at + 1..] {
        let piece = &html[nodes[c].start..nodes[c].end];
        let starts_disclaimer =
            disclaimer_stops && first_line(piece).is_some_and(|l| is_disclaimer(&[l.as_str()], 0));
        if stops(html, nodes, c) || starts_disclaimer {
            break;
        }
        end = nodes[c].end;
    }
    (nodes[a].start, end)
}

/// Sanitized HTML with its signature (labelled by the mail program, or from a closing
/// greeting on) in `<div class="signature">`, and a disclaimer folded into
/// `<details class="disclaimer">`. Marks from [`mark_html_signatures`] are removed.
pub(super) fn html(clean: &str, disclaimer_label: &str) -> String {
    let mut out = wrap_signature(clean);
    if let Some(folded) = fold_disclaimer(&out, disclaimer_label) {
        out = folded;
    }
    if out.contains(MARK) {
        out = out.replace(MARK, "");
    }
    out
}

fn wrap_signature(clean: &str) -> String {
    let nodes = tree(clean);
    let text_nodes =
        || (1..nodes.len()).filter(|&n| nodes[n].tag.is_none() && !inside(&nodes, n, "blockquote"));
    // Labelled by the mail program: the element the mark opens.
    if let Some(t) = text_nodes().find(|&n| clean[nodes[n].start..nodes[n].end].starts_with(MARK)) {
        let p = nodes[t].parent;
        let (s, e) = if p == 0 {
            (nodes[t].start, nodes[t].end)
        } else {
            (nodes[p].start, nodes[p].end)
        };
        return wrapped(clean, s, e, "<div class=\"signature\">", "</div>");
    }
    for t in text_nodes() {
        let line = super::render::decode_entities(clean[nodes[t].start..nodes[t].end].trim());
        if !is_closing(&line) {
            continue;
        }
        let (s, e) = block_from(clean, &nodes, t, true);
        let lines = lines_of(&clean[s..e]);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let trimmed: Vec<&str> = {
            let from = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
            lines[from..].to_vec()
        };
        if signature_block(trimmed.get(1..).unwrap_or(&[]), true) {
            return wrapped(clean, s, e, "<div class=\"signature\">", "</div>");
        }
    }
    clean.to_string()
}

fn fold_disclaimer(html: &str, label: &str) -> Option<String> {
    let nodes = tree(html);
    let t = (1..nodes.len()).find(|&n| {
        nodes[n].tag.is_none()
            && !inside(&nodes, n, "blockquote")
            && is_disclaimer(
                &[
                    super::render::decode_entities(html[nodes[n].start..nodes[n].end].trim())
                        .as_str(),
                ],
                0,
            )
    })?;
    let (s, e) = block_from(html, &nodes, t, false);
    if lines_of(&html[s..e]).len() > MAX_DISCLAIMER_LINES {
        return None;
    }
    let open = format!(
        "<details class=\"disclaimer\"><summary>{}</summary><div class=\"disclaimer-text\">",
        super::render::escape(label)
    );
    Some(wrapped(html, s, e, &open, "</div></details>"))
}

fn wrapped(html: &str, s: usize, e: usize, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(html.len() + open.len() + close.len());
    out.push_str(&html[..s]);
    out.push_str(open);
    out.push_str(&html[s..e]);
    out.push_str(close);
    out.push_str(&html[e..]);
    out
}
