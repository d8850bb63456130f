//! Texts to people: confirmations, welcome, goodbye, help, notices, web pages.
//!
//! Every text comes from a template file in the person's language (`config/templates/nl/`
//! and `config/templates/en/`, compiled into the binary). A `templates_dir` in the config
//! replaces any of them with an edited copy of the same name. Text templates start with a
//! `Subject:` line and an empty line; the rest is the body. Templates are checked when the
//! configuration is loaded, so a broken edit is reported at start-up, not when a member
//! writes in.

use crate::config::{Config, Language, ListConfig, Posting};
use minijinja::{Environment, Value};
use std::collections::BTreeMap;

macro_rules! shipped {
    ($lang:literal, $name:literal) => {
        (
            $lang,
            $name,
            include_str!(concat!("../config/templates/", $lang, "/", $name)),
        )
    };
}

/// The shipped templates: (language, file name, text).
const SHIPPED: &[(&str, &str, &str)] = &[
    shipped!("nl", "confirm-subscribe.txt"),
    shipped!("nl", "confirm-unsubscribe.txt"),
    shipped!("nl", "already-member.txt"),
    shipped!("nl", "not-member.txt"),
    shipped!("nl", "welcome.txt"),
    shipped!("nl", "goodbye.txt"),
    shipped!("nl", "help.txt"),
    shipped!("nl", "info.txt"),
    shipped!("nl", "results.txt"),
    shipped!("nl", "held.txt"),
    shipped!("nl", "held-owner.txt"),
    shipped!("nl", "held-summary.txt"),
    shipped!("nl", "rejected.txt"),
    shipped!("nl", "owner-event.txt"),
    shipped!("nl", "owner-summary.txt"),
    shipped!("nl", "bounce-disabled.txt"),
    shipped!("nl", "bounce-owner.txt"),
    shipped!("nl", "message-failed.txt"),
    shipped!("nl", "digest.txt"),
    shipped!("nl", "digest-open.txt"),
    shipped!("nl", "similar.txt"),
    shipped!("nl", "pii-masked.txt"),
    shipped!("nl", "confirm-post.txt"),
    shipped!("nl", "confirm-owner.txt"),
    shipped!("nl", "confirm-owner-members.txt"),
    shipped!("nl", "confirm-settings.txt"),
    shipped!("nl", "confirm-forget.txt"),
    shipped!("nl", "forgotten.txt"),
    shipped!("nl", "archive-login.txt"),
    shipped!("nl", "page.html"),
    shipped!("en", "confirm-subscribe.txt"),
    shipped!("en", "confirm-unsubscribe.txt"),
    shipped!("en", "already-member.txt"),
    shipped!("en", "not-member.txt"),
    shipped!("en", "welcome.txt"),
    shipped!("en", "goodbye.txt"),
    shipped!("en", "help.txt"),
    shipped!("en", "info.txt"),
    shipped!("en", "results.txt"),
    shipped!("en", "held.txt"),
    shipped!("en", "held-owner.txt"),
    shipped!("en", "held-summary.txt"),
    shipped!("en", "rejected.txt"),
    shipped!("en", "owner-event.txt"),
    shipped!("en", "owner-summary.txt"),
    shipped!("en", "bounce-disabled.txt"),
    shipped!("en", "bounce-owner.txt"),
    shipped!("en", "message-failed.txt"),
    shipped!("en", "digest.txt"),
    shipped!("en", "digest-open.txt"),
    shipped!("en", "similar.txt"),
    shipped!("en", "pii-masked.txt"),
    shipped!("en", "confirm-post.txt"),
    shipped!("en", "confirm-owner.txt"),
    shipped!("en", "confirm-owner-members.txt"),
    shipped!("en", "confirm-settings.txt"),
    shipped!("en", "confirm-forget.txt"),
    shipped!("en", "forgotten.txt"),
    shipped!("en", "archive-login.txt"),
    shipped!("en", "page.html"),
];

/// A rendered text mail: subject and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub subject: String,
    pub body: String,
}

/// The loaded templates.
pub struct Texts {
    env: Environment<'static>,
}

impl std::fmt::Debug for Texts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Texts")
    }
}

impl Texts {
    /// Loads the shipped templates and the overrides in `cfg.templates_dir`, and renders each
    /// once with sample values. The error names the file and what is wrong.
    pub fn load(cfg: &Config) -> Result<Texts, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        for (lang, name, text) in SHIPPED {
            let mut source = text.to_string();
            let mut origin = format!("config/templates/{lang}/{name} (built in)");
            if let Some(dir) = &cfg.templates_dir {
                let p = dir.join(lang).join(name);
                match std::fs::read_to_string(&p) {
                    Ok(t) => {
                        source = t;
                        origin = p.display().to_string();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{}: cannot read: {e}", p.display())),
                }
            }
            env.add_template_owned(format!("{lang}/{name}"), source)
                .map_err(|e| format!("{origin}: {e}"))?;
            if name.ends_with(".txt") {
                let t = env
                    .get_template(&format!("{lang}/{name}"))
                    .map_err(|e| format!("{origin}: {e}"))?;
                let sample = cfg.lists.first().map(|l| common(cfg, l, lang_of(lang)));
                let out = t
                    .render(Value::from_serialize(sample.unwrap_or_default()))
                    .map_err(|e| format!("{origin}: {e}"))?;
                split_subject(&out).ok_or_else(|| {
                    format!("{origin}: expected a first line `Subject: ...` and then an empty line")
                })?;
            }
        }
        Ok(Texts { env })
    }

    /// Renders text template `name` (without `.txt`) in `lang`, with the list's common
    /// values plus `vars`.
    pub fn render(
        &self,
        cfg: &Config,
        list: &ListConfig,
        lang: Language,
        name: &str,
        vars: Value,
    ) -> Result<Text, String> {
        let ctx =
            minijinja::value::merge_maps([vars, Value::from_serialize(common(cfg, list, lang))]);
        let t = self
            .env
            .get_template(&format!("{}/{name}.txt", lang.code()))
            .map_err(|e| e.to_string())?;
        let out = t.render(ctx).map_err(|e| format!("{name}: {e}"))?;
        split_subject(&out).ok_or_else(|| format!("{name}: no Subject line"))
    }

    /// Renders the web page `page` in `lang` (HTML, escaped).
    pub fn page(
        &self,
        cfg: &Config,
        list: Option<&ListConfig>,
        lang: Language,
        vars: Value,
    ) -> Result<String, String> {
        let base = match list {
            Some(l) => common(cfg, l, lang),
            None => {
                let mut m = BTreeMap::new();
                m.insert("language", Value::from(lang.code()));
                m.insert("list_name", Value::from("vraagbaak"));
                m
            }
        };
        let ctx = minijinja::value::merge_maps([vars, Value::from_serialize(base)]);
        let t = self
            .env
            .get_template(&format!("{}/page.html", lang.code()))
            .map_err(|e| e.to_string())?;
        t.render(ctx).map_err(|e| e.to_string())
    }
}

fn lang_of(code: &str) -> Language {
    Language::from_code(code).unwrap_or(Language::Nl)
}

/// The values every template may use.
fn common(cfg: &Config, l: &ListConfig, lang: Language) -> BTreeMap<&'static str, Value> {
    let mut m = BTreeMap::new();
    m.insert("list_name", Value::from(l.name.clone()));
    m.insert("list_address", Value::from(l.address.clone()));
    m.insert(
        "list_description",
        Value::from(l.description.clone().unwrap_or_default()),
    );
    m.insert("request_address", Value::from(l.sub_address("request")));
    m.insert("join_address", Value::from(l.sub_address("join")));
    m.insert("leave_address", Value::from(l.sub_address("leave")));
    m.insert("owner_address", Value::from(l.sub_address("owner")));
    m.insert(
        "archive_url",
        Value::from(l.archive_url.clone().unwrap_or_default()),
    );
    m.insert("base_url", Value::from(cfg.base_url().unwrap_or_default()));
    m.insert("language", Value::from(lang.code()));
    m.insert(
        "digest_period",
        Value::from(match l.digest {
            crate::config::DigestPeriod::Off => "off",
            crate::config::DigestPeriod::Daily => "daily",
            crate::config::DigestPeriod::Weekly => "weekly",
        }),
    );
    m.insert(
        "posting",
        Value::from(match l.posting {
            Posting::Members => "members",
            Posting::Open => "open",
            Posting::Moderated => "moderated",
        }),
    );
    m
}

/// Splits `Subject: ...\n\nbody`.
fn split_subject(out: &str) -> Option<Text> {
    let out = out.trim_start_matches(['\n', '\r']);
    let (first, rest) = out.split_once('\n')?;
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")?
        .trim();
    // Never a second header line, whatever a template or a value put in.
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let body = rest.trim_end().to_string() + "\n";
    Some(Text { subject, body })
}

/// How a text mail relates to what caused it.
pub struct MailSpec<'a> {
    pub list: &'a ListConfig,
    pub to: Vec<String>,
    pub lang: Language,
    pub text: Text,
    /// `auto-replied` (an answer to someone's mail) or `auto-generated` (a notice).
    pub auto: &'a str,
    /// Where replies should go, when not the request address.
    pub reply_to: Option<String>,
    /// The Message-ID (without brackets) of the mail this answers.
    pub in_reply_to: Option<String>,
    /// A message to attach as message/rfc822.
    pub attach: Option<&'a [u8]>,
    /// A file to attach: its name, content type and bytes.
    pub file: Option<(&'a str, &'a str, &'a [u8])>,
    pub hostname: &'a str,
}

/// Builds a text mail: From the list's request address, UTF-8 text (quoted-printable when
/// needed), `Auto-Submitted` (RFC 3834) so that no auto-responder answers it, and `X-Loop`
/// so that it never comes back in as a command.
pub fn build(spec: MailSpec) -> Vec<u8> {
    use mail_builder::headers::raw::Raw;
    use mail_builder::mime::MimePart;
    use mail_builder::MessageBuilder;
    let l = spec.list;
    let id = format!(
        "{:016x}.{}@{}",
        rand::random::<u64>(),
        l.local(),
        spec.hostname
    );
    let mut b = MessageBuilder::new()
        .from((l.name.clone(), l.sub_address("request")))
        .to(spec.to.clone())
        .subject(spec.text.subject.as_str())
        .message_id(id)
        .header("Auto-Submitted", Raw::new(spec.auto.to_string()))
        .header("X-Loop", Raw::new(l.address.clone()))
        .header(
            "List-Id",
            Raw::new(format!(
                "{} <{}>",
                crate::compose::phrase(&l.name),
                l.list_id()
            )),
        )
        .header("Content-Language", Raw::new(spec.lang.code()));
    if let Some(r) = spec.reply_to {
        b = b.reply_to(r);
    }
    if let Some(r) = spec.in_reply_to {
        b = b.in_reply_to(r.clone()).references(r);
    }
    let body = spec.text.body.replace('\n', "\r\n");
    let mut parts = Vec::new();
    if let Some(raw) = spec.attach {
        parts.push(
            MimePart::new("message/rfc822", raw.to_vec())
                .attachment("bericht.eml")
                .transfer_encoding("8bit"),
        );
    }
    if let Some((name, ctype, bytes)) = spec.file {
        parts.push(MimePart::new(ctype.to_string(), bytes.to_vec()).attachment(name.to_string()));
    }
    b = if parts.is_empty() {
        b.text_body(body)
    } else {
        parts.insert(0, MimePart::new("text/plain; charset=utf-8", body));
        b.body(MimePart::new("multipart/mixed", parts))
    };
    b.write_to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped text renders, in both languages, with a subject and without runs of
    /// blank lines or leftover template syntax. (`--nocapture` prints them for review.)
    #[test]
    fn shipped_texts_render() {
        let mut cfg = Config::embedded().unwrap();
        cfg.http = Some(crate::config::HttpConfig {
            max_connections: crate::config::default_http_max_connections(),
            max_connections_per_ip: crate::config::default_http_max_connections_per_ip(),
            idle_timeout: crate::config::default_http_idle_timeout(),
            listen: "127.0.0.1:8025".into(),
            base_url: "https://lists.example.org".into(),
        });
        let t = Texts::load(&cfg).unwrap();
        let l = &cfg.lists[0];
        let vars = minijinja::context! {
            address => "jan@ocmw.be", token => "t".repeat(40),
            confirm_address => "forum-confirm+t@lists.example.org",
            confirm_url => "https://lists.example.org/confirm/t", expires => "01-01-2027 10:00 CET",
            by_other => true, unsubscribe_url => "https://lists.example.org/u/x",
            member => true, digest => false, nomail => true, member_language => "nl",
            owners_count => 1, subject => "Vraag", from => "gast@x.be",
            reason => "the sender is not a member", held_id => 7, kind => "joined", via => "mail",
            score => "5.0", status => "5.1.1", notices_left => 2, removal => "01-01-2027 10:00 CET",
            received => 6, notices => 3, keeps_posts => true, days => 30,
            login_url => "https://lists.example.org/login/forum/t", volume => 1, issue => 12, date => "23-11-2026", count => 2,
            toc => vec![minijinja::context! { n => 1, subject => "Vraag", author => "An" }],
            message_id => "<q1@ocmw.be>", by_relay => true, diagnostic => "552 5.3.4 too big",
            failed => 5, attempted => 8,
            posts => vec![minijinja::context! { from => "a@b.c", subject => "s", reason => "r", token => "t", held_id => 1 }],
            commands => vec!["set nomail on"], ops => vec!["+ Jan <jan@ocmw.be>"], adds => 1, removes => 1, more => 3, owner => true,
            members_count => 750, joined_count => 1, left_count => 0, show_help => true,
            events => vec![BTreeMap::from([("at", "01-01"), ("kind", "joined"), ("address", "a@b.c"), ("via", "web")])],
            results => vec![
                BTreeMap::from([("kind", "confirm-sent"), ("address", "a@b.c")]),
                BTreeMap::from([("kind", "token-invalid"), ("reason", "used")]),
                BTreeMap::from([("kind", "set"), ("setting", "nomail"), ("value", "on")]),
                BTreeMap::from([("kind", "unknown"), ("line", "hallo")]),
            ],
        };
        for lang in [Language::Nl, Language::En] {
            for (_, name, _) in SHIPPED.iter().filter(|s| s.0 == lang.code()) {
                let Some(n) = name.strip_suffix(".txt") else {
                    continue;
                };
                let out = t.render(&cfg, l, lang, n, vars.clone()).unwrap();
                println!(
                    "==== {}/{n}\nSubject: {}\n\n{}",
                    lang.code(),
                    out.subject,
                    out.body
                );
                assert!(!out.subject.is_empty() && !out.subject.contains("{"));
                assert!(!out.body.contains("{%") && !out.body.contains("{{"), "{n}");
                assert!(
                    !out.body.contains("\n\n\n\n"),
                    "{}/{n} has runs of blank lines",
                    lang.code()
                );
            }
            let page = t
                .page(
                    &cfg,
                    Some(l),
                    lang,
                    minijinja::context! { page => "unsubscribe-ask", action_url => "/u/x\"<" },
                )
                .unwrap();
            assert!(page.contains("&quot;&lt;"), "pages are escaped");
        }
    }
}
