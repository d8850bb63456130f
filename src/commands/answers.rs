//! The one answer to a request mail, quoting at most a few harmless lines of it.

use super::*;

/// At most this many lines of a request are quoted in its answer.
pub(super) const QUOTED_LINES: usize = 3;

/// A line of a request as its answer quotes it: at most 80 characters, links replaced, so
/// that a forged request cannot make the list carry someone's spam to a victim.
pub(super) fn quoted(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            let lw = w.to_ascii_lowercase();
            let link = lw.contains("://")
                || lw.starts_with("www.")
                || lw.contains("<http")
                || (lw.contains('.') && lw.contains('/') && !lw.contains('@'));
            if link {
                "[link]".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut q: String = words.join(" ").chars().take(80).collect();
    if words.join(" ").chars().count() > 80 {
        q.push_str("...");
    }
    q
}

/// The one answer to a request mail: results, then help and info texts when asked for.
pub(super) fn answer(
    plan: &mut Plan,
    to: &str,
    lang: Language,
    show_help: bool,
    show_info: bool,
    re: Option<&str>,
) -> crate::store::Result<()> {
    let ctx = plan.ctx;
    let results: Vec<&Res> = plan.results.iter().filter(|r| !r.silent).collect();
    let only_texts = results.iter().all(|r| r.kind == "help" || r.kind == "info");
    let render = |name: &str, vars: Value| ctx.texts.render(ctx.cfg, plan.list, lang, name, vars);
    let mut parts: Vec<texts::Text> = Vec::new();
    if !only_texts {
        match render(
            "results",
            minijinja::context! { results => Value::from_serialize(&results), show_help },
        ) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render results"),
        }
    }
    if show_info {
        let m = ctx.store.member(plan.list.key(), to)?;
        let vars = minijinja::context! {
            member => m.is_some(),
            digest => m.as_ref().is_some_and(|m| m.digest),
            nomail => m.as_ref().is_some_and(|m| m.on_vacation(now_ms())),
            nomail_until => m.as_ref().and_then(|m| m.nomail_until.filter(|_| m.nomail)).map(|ms| date_text(plan.list, ms)),
            digest_plain => m.as_ref().is_some_and(|m| m.digest_plain),

            member_language => m.as_ref().and_then(|m| m.language).unwrap_or(plan.list.language).code(),
            owners_count => plan.list.owners.len(),
            address => to,
        };
        match render("info", vars) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render info"),
        }
    }
    if show_help {
        match render(
            "help",
            minijinja::context! { owner => is_owner(plan.list, to) },
        ) {
            Ok(t) => parts.push(t),
            Err(e) => tracing::error!(error = %e, "cannot render help"),
        }
    }
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let text = texts::Text {
        subject: first.subject.clone(),
        body: parts
            .iter()
            .map(|p| p.body.trim_end())
            .collect::<Vec<_>>()
            .join("\n\n")
            + "\n",
    };
    if !plan.within(REPLY, to, ctx.cfg.commands.max_replies_per_address)? {
        tracing::info!("reply limit reached for an address; answer not sent");
        return Ok(());
    }
    let raw = texts::build(MailSpec {
        list: plan.list,
        to: vec![to.to_string()],
        lang,
        text,
        auto: "auto-replied",
        reply_to: None,
        in_reply_to: re.map(str::to_string),
        attach: None,
        file: plan
            .attachment
            .as_ref()
            .map(|(name, bytes)| (name.as_str(), "text/csv; charset=utf-8", bytes.as_slice())),
        hostname: &ctx.cfg.smtp.hostname,
    });
    plan.mail
        .push(out_mail(plan.list, "answer", vec![to.to_string()], raw));
    plan.hit(REPLY, to);
    Ok(())
}
