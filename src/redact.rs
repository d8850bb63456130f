//! Clients' identifiers found in running text: Belgian national numbers (rijksregisternummer,
//! INSZ, bis numbers), bank accounts (IBAN of any country; the old Belgian `xxx-xxxxxxx-xx`
//! form) and phone numbers (Belgian mobile and fixed, `+32`/`0032`, international `+`).
//!
//! The archive masks them in everything it publishes (`archive::render`), the pipeline tells
//! a poster whose post carried a national number or an account (`pii_posts`).
//!
//! Written by hand: the crates that know these numbers (`iban_validate`, phone-number
//! libraries) validate a string that is already the number; none finds one inside running
//! text, in its usual spellings (`85.07.30-033.61`, `BE68 5390 0754 7034`, `0486/12.34.56`),
//! on bytes of any ASCII-compatible charset, so that a raw message can be masked byte for
//! byte. Only numbers whose check digits are right are national numbers and accounts, so
//! an order or file number of eleven digits is left as written.

use crate::config::Language;
use serde::Deserialize;
use std::borrow::Cow;

/// What is masked (per list `redact = [...]`; all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redact {
    pub national: bool,
    pub account: bool,
    pub phone: bool,
}

impl Default for Redact {
    fn default() -> Self {
        Redact::ALL
    }
}

impl Redact {
    pub const ALL: Redact = Redact {
        national: true,
        account: true,
        phone: true,
    };
    pub const NONE: Redact = Redact {
        national: false,
        account: false,
        phone: false,
    };

    pub fn any(self) -> bool {
        self.national || self.account || self.phone
    }

    /// From the config's names.
    pub fn from_kinds(kinds: &[Kind]) -> Redact {
        let mut r = Redact::NONE;
        for k in kinds {
            match k {
                Kind::National => r.national = true,
                Kind::Account => r.account = true,
                Kind::Phone => r.phone = true,
            }
        }
        r
    }

    fn wants(self, k: Kind) -> bool {
        match k {
            Kind::National => self.national,
            Kind::Account => self.account,
            Kind::Phone => self.phone,
        }
    }
}

/// A kind of identifier, as named in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    #[serde(rename = "rijksregisternummer", alias = "national-number")]
    National,
    #[serde(rename = "rekeningnummer", alias = "iban", alias = "account")]
    Account,
    #[serde(rename = "telefoonnummer", alias = "phone")]
    Phone,
}

impl Kind {
    /// What the archive shows instead.
    pub fn label(self, lang: Language) -> &'static str {
        match (self, lang) {
            (Kind::National, Language::Nl) => "[rijksregisternummer]",
            (Kind::Account, Language::Nl) => "[rekeningnummer]",
            (Kind::Phone, Language::Nl) => "[telefoonnummer]",
            (Kind::National, Language::En) => "[national number]",
            (Kind::Account, Language::En) => "[account number]",
            (Kind::Phone, Language::En) => "[phone number]",
        }
    }
}

/// Every label, in both languages (the search index leaves them out).
pub const LABELS: [&str; 6] = [
    "[rijksregisternummer]",
    "[rekeningnummer]",
    "[telefoonnummer]",
    "[national number]",
    "[account number]",
    "[phone number]",
];

/// One identifier found: bytes `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The national numbers and account numbers (`r` permitting) a message holds in its
/// subject or its text and HTML parts: what its poster is told of (phone numbers are
/// masked in the archive without a word, as they are mostly the poster's own).
pub fn told_in(msg: &mail_parser::Message, r: Redact) -> Vec<Kind> {
    fn note(text: &str, r: Redact, kinds: &mut Vec<Kind>) {
        for f in find(text.as_bytes(), r) {
            if !kinds.contains(&f.kind) {
                kinds.push(f.kind);
            }
        }
    }
    fn walk(msg: &mail_parser::Message, r: Redact, depth: usize, kinds: &mut Vec<Kind>) {
        note(msg.subject().unwrap_or(""), r, kinds);
        for part in &msg.parts {
            match &part.body {
                mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                    note(t, r, kinds)
                }
                // A forwarded message is published too.
                mail_parser::PartType::Message(m) if depth < 8 => walk(m, r, depth + 1, kinds),
                _ => {}
            }
        }
    }
    let mut kinds = Vec::new();
    walk(msg, Redact { phone: false, ..r }, 0, &mut kinds);
    kinds.sort_by_key(|k| *k as u8);
    kinds
}

/// Finds the identifiers `r` asks for, left to right, not overlapping.
pub fn find(b: &[u8], r: Redact) -> Vec<Found> {
    let mut out = Vec::new();
    if !r.any() {
        return out;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_alphanumeric() || c == b'+') || !starts_word(b, i) {
            i += 1;
            continue;
        }
        let hit = if c.is_ascii_digit() {
            groups(b, i).and_then(|g| {
                national(b, &g)
                    .map(|e| (e, Kind::National))
                    .or_else(|| old_account(b, &g).map(|e| (e, Kind::Account)))
                    .or_else(|| phone(b, i, &g).map(|e| (e, Kind::Phone)))
            })
        } else if c == b'+' {
            groups(b, i + 1).and_then(|g| phone(b, i, &g).map(|e| (e, Kind::Phone)))
        } else {
            match iban(b, i) {
                Some(e) => Some((e, Kind::Account)),
                None => {
                    // Something shaped like an IBAN that is not one (wrong check digits) is
                    // left whole: its digits are no phone number.
                    if let Some(e) = iban_shaped(b, i) {
                        i = e;
                        continue;
                    }
                    None
                }
            }
        };
        match hit {
            Some((end, kind)) if r.wants(kind) => {
                out.push(Found {
                    start: i,
                    end,
                    kind,
                });
                i = end;
            }
            Some((end, _)) => i = end,
            None => {
                // Skip the rest of this word or number.
                i += 1;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
            }
        }
    }
    out
}

/// `b` with every identifier replaced by its label.
pub fn mask(b: &[u8], r: Redact, lang: Language) -> Cow<'_, [u8]> {
    let found = find(b, r);
    if found.is_empty() {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut pos = 0;
    for f in found {
        out.extend_from_slice(&b[pos..f.start]);
        out.extend_from_slice(f.kind.label(lang).as_bytes());
        pos = f.end;
    }
    out.extend_from_slice(&b[pos..]);
    Cow::Owned(out)
}

/// [`mask`] for text (labels and cuts are ASCII, so UTF-8 stays valid).
pub fn mask_str(s: &str, r: Redact, lang: Language) -> Cow<'_, str> {
    match mask(s.as_bytes(), r, lang) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(v) => Cow::Owned(
            String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
    }
}

/// Whether a number may start at `i`: not inside a word or a longer number (`x12`, `3.14`).
fn starts_word(b: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = b[i - 1];
    if p.is_ascii_alphanumeric() || p == b'+' {
        return false;
    }
    !(is_sep(p) && i >= 2 && b[i - 2].is_ascii_digit())
}

/// Whether a number may end at `e`: not followed by a letter or digit, nor by `.`, `-` or
/// `/` and a digit (the number goes on). A space and a digit may follow: "bel 0486 12 34
/// 56 2 keer" is rare, "85.07.30-033.61 12" rarer.
fn ends_word(b: &[u8], e: usize) -> bool {
    match b.get(e) {
        None => true,
        Some(c) if c.is_ascii_alphanumeric() => false,
        Some(b'.' | b'-' | b'/') => !b.get(e + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

fn is_sep(c: u8) -> bool {
    matches!(c, b' ' | b'.' | b'-' | b'/')
}

/// Runs of digits from `i`, each joined to the next by one separator (space, `.`, `-`,
/// `/`, a no-break space) or by ` (0) ` after a country code: (start, end) of each run.
fn groups(b: &[u8], i: usize) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut p = i;
    let mut total = 0;
    loop {
        let s = p;
        while p < b.len() && b[p].is_ascii_digit() {
            p += 1;
        }
        if p == s {
            break;
        }
        total += p - s;
        out.push((s, p));
        if total > 16 || out.len() > 8 {
            return None;
        }
        // The separator to the next run.
        let next = if b.get(p).copied().is_some_and(is_sep) {
            p + 1
        } else if b.get(p..p + 2) == Some(&[0xc2, 0xa0]) {
            p + 2
        } else {
            break;
        };
        // "+32 (0)486 ..." : the (0) is dropped by the reader, and here.
        let next = if b.get(next..next + 3) == Some(b"(0)") {
            let n = next + 3;
            if b.get(n) == Some(&b' ') {
                n + 1
            } else {
                n
            }
        } else {
            next
        };
        if !b.get(next).is_some_and(u8::is_ascii_digit) {
            break;
        }
        p = next;
    }
    (!out.is_empty()).then_some(out)
}

fn digits(b: &[u8], g: &[(usize, usize)]) -> Vec<u8> {
    g.iter()
        .flat_map(|(s, e)| b[*s..*e].iter().map(|c| c - b'0'))
        .collect()
}

fn value(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |n, x| n * 10 + u64::from(*x))
}

/// A national number: 11 digits as `85073003361`, `85.07.30-033.61`, `85 07 30 033 61`,
/// `850730-033-61` or `850730 033 61`; a plausible month (bis numbers add 20 or 40) and
/// day; check digits `97 - (first nine mod 97)`, for births from 2000 with a 2 in front.
fn national(b: &[u8], g: &[(usize, usize)]) -> Option<usize> {
    const SHAPES: &[&[usize]] = &[&[11], &[2, 2, 2, 3, 2], &[6, 3, 2], &[6, 5], &[2, 2, 2, 5]];
    let lens: Vec<usize> = g.iter().map(|(s, e)| e - s).collect();
    let shape = SHAPES.iter().find(|s| lens.starts_with(s))?;
    let g = &g[..shape.len()];
    let end = g.last()?.1;
    if !ends_word(b, end) {
        return None;
    }
    let d = digits(b, g);
    let month = value(&d[2..4]);
    let day = value(&d[4..6]);
    let month_ok = matches!(month, 0..=12 | 20..=32 | 40..=52);
    if !month_ok || day > 31 {
        return None;
    }
    let first = value(&d[..9]);
    let check = value(&d[9..11]);
    let ok = 97 - first % 97 == check || 97 - (2_000_000_000 + first) % 97 == check;
    ok.then_some(end)
}

/// The old Belgian account form `xxx-xxxxxxx-xx`: the last two digits are the first ten
/// mod 97 (97 for 0).
fn old_account(b: &[u8], g: &[(usize, usize)]) -> Option<usize> {
    let lens: Vec<usize> = g.iter().map(|(s, e)| e - s).collect();
    if !lens.starts_with(&[3, 7, 2]) {
        return None;
    }
    let g = &g[..3];
    let end = g[2].1;
    if !ends_word(b, end) {
        return None;
    }
    let d = digits(b, g);
    let rest = value(&d[..10]) % 97;
    let check = value(&d[10..]);
    (check == if rest == 0 { 97 } else { rest } && check != 0).then_some(end)
}

/// A phone number from `start` (`0...`, `00...` or `+...`), its digit runs `g` taken whole.
fn phone(b: &[u8], start: usize, g: &[(usize, usize)]) -> Option<usize> {
    let end = g.last()?.1;
    if !ends_word(b, end) {
        return None;
    }
    let d = digits(b, g);
    let intl: &[u8] = if b[start] == b'+' {
        &d
    } else if d.starts_with(&[0, 0]) {
        &d[2..]
    } else if d.first() == Some(&0) {
        // Belgian national forms: mobile 04xx xx xx xx (10 digits), fixed 0x xxx xx xx or
        // 0xx xx xx xx (9 digits, not 00 or 04).
        let ok = match d.len() {
            10 => d[1] == 4,
            9 => !matches!(d[1], 0 | 4),
            _ => false,
        };
        return (ok && g.len() <= 5).then_some(end);
    } else {
        return None;
    };
    if intl.first().is_none_or(|c| *c == 0) {
        return None;
    }
    if intl.starts_with(&[3, 2]) {
        // Belgium: 8 digits fixed, 9 mobile (starting with 4).
        let n = &intl[2..];
        let ok = match n.len() {
            9 => n[0] == 4,
            8 => n[0] != 4 && n[0] != 0,
            _ => false,
        };
        return ok.then_some(end);
    }
    (8..=15).contains(&intl.len()).then_some(end)
}

/// IBAN lengths by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The end of what looks like an IBAN from `i` (two letters, two digits, then groups of
/// letters and digits separated by single spaces, 12 to 34 of them in all).
fn iban_shaped(b: &[u8], i: usize) -> Option<usize> {
    let head = b.get(i..i + 4)?;
    if !(head[..2].iter().all(u8::is_ascii_alphabetic) && head[2..].iter().all(u8::is_ascii_digit))
    {
        return None;
    }
    let mut p = i;
    let mut n = 0;
    while n < 34 {
        match b.get(p) {
            Some(c) if c.is_ascii_alphanumeric() => {
                n += 1;
                p += 1;
            }
            Some(b' ')
                if b.get(p + 1)
                    .is_some_and(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) =>
            {
                p += 1
            }
            _ => break,
        }
    }
    (n >= 12).then_some(p)
}

/// An IBAN from `i`: a known country, two check digits, then its country's length of
/// letters and digits, in groups separated by single spaces or none; mod 97 = 1.
fn iban(b: &[u8], i: usize) -> Option<usize> {
    let cc = [
        b.get(i)?.to_ascii_uppercase(),
        b.get(i + 1)?.to_ascii_uppercase(),
    ];
    let len = IBAN_LENGTHS.iter().find(|(c, _)| **c == cc)?.1;
    if !(b.get(i + 2)?.is_ascii_digit() && b.get(i + 3)?.is_ascii_digit()) {
        return None;
    }
    let mut chars: Vec<u8> = Vec::with_capacity(len);
    let mut p = i;
    while chars.len() < len {
        match b.get(p) {
            Some(c) if c.is_ascii_alphanumeric() => {
                chars.push(c.to_ascii_uppercase());
                p += 1;
            }
            Some(b' ')
                if p > i
                    && b[p - 1].is_ascii_alphanumeric()
                    && b.get(p + 1).is_some_and(u8::is_ascii_alphanumeric) =>
            {
                p += 1
            }
            _ => return None,
        }
    }
    if b.get(p).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    // Move the first four to the end, letters as 10..35, mod 97 digit by digit.
    let mut rem: u32 = 0;
    for c in chars[4..].iter().chain(&chars[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        mask_str(s, Redact::ALL, Language::Nl).into_owned()
    }

    /// A valid national number for birth date `yymmdd` and serial `sss`, born before
    /// (false) or from (true) 2000.
    fn rrn(yymmdd: &str, sss: &str, from_2000: bool) -> String {
        let first: u64 = format!("{yymmdd}{sss}").parse().unwrap();
        let base = if from_2000 {
            2_000_000_000 + first
        } else {
            first
        };
        format!("{yymmdd}{sss}{:02}", 97 - base % 97)
    }

    #[test]
    fn national_numbers_in_their_spellings_with_valid_check_digits() {
        // (The example 85.07.30-033.61 has wrong check digits: 28 is right.)
        let n = rrn("850730", "033", false);
        assert_eq!(n, "85073003328");
        let spelled = [
            n.clone(),
            "85.07.30-033.28".to_string(),
            "85 07 30 033 28".to_string(),
            "850730-033-28".to_string(),
            "850730 033 28".to_string(),
            "850730-03328".to_string(),
        ];
        for s in &spelled {
            assert_eq!(
                masked(&format!("Cliënt (rrn {s}) vraagt.")),
                "Cliënt (rrn [rijksregisternummer]) vraagt.",
                "{s}"
            );
        }
        // Born in 2004: the check digits are over 2 and the nine digits.
        let young = rrn("040512", "123", true);
        assert_eq!(
            masked(&format!("INSZ: {young}")),
            "INSZ: [rijksregisternummer]"
        );
        // A bis number (month + 40).
        let bis = rrn("854730", "033", false);
        assert_eq!(masked(&bis), "[rijksregisternummer]");
        // Wrong check digits, impossible dates, longer numbers: left as written.
        for s in [
            "85073003361",
            "85.07.30-033.61",
            "85 13 30 033 28",
            "850730033280",
            "dossier 12345678901",
            "3.85073003328",
        ] {
            let t = format!("zie {s} hier");
            assert_eq!(masked(&t), t, "{s}");
        }
    }

    #[test]
    fn ibans_of_any_country_and_old_belgian_accounts() {
        for s in [
            "BE68 5390 0754 7034",
            "BE68539007547034",
            "be68 5390 0754 7034",
            "NL91 ABNA 0417 1643 00",
            "DE89 3704 0044 0532 0130 00",
            "FR14 2004 1010 0505 0001 3M02 606",
            "GB29 NWBK 6016 1331 9268 19",
        ] {
            assert_eq!(
                masked(&format!("Stort op {s}, dank.")),
                "Stort op [rekeningnummer], dank.",
                "{s}"
            );
        }
        assert_eq!(
            masked("rekening 539-0075470-34."),
            "rekening [rekeningnummer]."
        );
        for s in [
            "BE68 5390 0754 7035",
            "BE68 5390 0754 703",
            "NL91 ABNA 0417 1643 01",
            "539-0075470-35",
            "XX12 3456 7890 1234",
        ] {
            let t = format!("op {s} aub");
            assert_eq!(masked(&t), t, "{s}");
        }
    }

    #[test]
    fn phone_numbers_belgian_and_international() {
        for s in [
            "0486 12 34 56",
            "0486/12.34.56",
            "0486123456",
            "0486 123 456",
            "02 123 45 67",
            "09/123.45.67",
            "050 12 34 56",
            "+32 486 12 34 56",
            "+32 (0)486 12 34 56",
            "+32 2 123 45 67",
            "0032 486 12 34 56",
            "+31 6 12345678",
            "+33 1 23 45 67 89",
            "+32\u{a0}486\u{a0}12\u{a0}34\u{a0}56",
        ] {
            assert_eq!(
                masked(&format!("Bel me op {s}.")),
                "Bel me op [telefoonnummer].",
                "{s}"
            );
        }
        for s in [
            "06-10-2026",
            "09:12",
            "9000 Gent",
            "04 2026",
            "€ 1.234,56",
            "+3 punten",
            "01.02.2026",
            "2026-10-06 09:12",
            "00 12",
        ] {
            let t = format!("op {s} ok");
            assert_eq!(masked(&t), t, "{s}");
        }
    }

    #[test]
    fn kinds_are_chosen_per_list_and_labels_per_language() {
        let t = "rrn 85073003328, tel 0486 12 34 56, IBAN BE68 5390 0754 7034";
        let only_phone = Redact::from_kinds(&[Kind::Phone]);
        assert_eq!(
            mask_str(t, only_phone, Language::En),
            "rrn 85073003328, tel [phone number], IBAN BE68 5390 0754 7034"
        );
        assert_eq!(
            mask_str(t, Redact::ALL, Language::En),
            "rrn [national number], tel [phone number], IBAN [account number]"
        );
        assert_eq!(mask_str(t, Redact::NONE, Language::Nl), t);
        let found = find(t.as_bytes(), Redact::ALL);
        assert_eq!(
            found.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [Kind::National, Kind::Phone, Kind::Account]
        );
    }
}
