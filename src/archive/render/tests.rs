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
    assert!(
        h.contains(
            "nog geen leefloon ontvangt. Kan het OCMW de waarborg voorschieten als de beslissing"
        ),
        "{h}"
    );
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
    assert!(
        h.contains(
            "<div class=\"signature\"><p>Met vriendelijke groeten,</p><p><b>Jan Peeters</b></p>"
        ),
        "{h}"
    );
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
        h.contains("<a href=\"https://ok.example/\" rel=\"nofollow noopener noreferrer\">ok</a>"),
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
    let html =
        "<p>Mail <span>lid36</span>@<span>ocmw-36.example</span> of lid38&#64;ocmw-38.example, \
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
    let b64 = base64::engine::general_purpose::STANDARD.encode("Bel jan@x.example of mail.\r\n");
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
    let t = without_trace(
        b"Received: a\r\n b\r\nFrom: x\r\nreceived:c\r\nX-Received: d\r\n\r\nReceived: body\r\n",
    );
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
