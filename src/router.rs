//! Which list, and which of its addresses, a recipient is.
//!
//! Per list `forum@host`: `forum@` posts, `forum-owner@` reaches the owners, and
//! `forum-bounces@` / `forum-bounces+member=domain+MAC@` receives bounces (VERP, with a
//! keyed MAC of the member address so that nobody else can make a bounce count; see
//! [`verp`]);
//! `forum-request@`, `forum-join@` and `forum-leave@` take requests (as do Mailman's
//! `forum-subscribe@`/`forum-unsubscribe@` and mlmmj's `forum+subscribe@`,
//! `forum+unsubscribe@`, `forum+help@`), and `forum-confirm+TOKEN@` confirms.

use crate::config::{Config, ListConfig};
use crate::tokens::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A post to the list.
    Post,
    /// Mail for the owners, forwarded to them.
    Owner,
    /// A request to the list software: `forum-request@`, `forum-join@`, `forum-leave@`.
    /// The word is `request`, `join`, `leave` or `help`.
    Request(&'static str),
    /// `forum-confirm+TOKEN@`: confirms the request the token names.
    Confirm(String),
    /// A bounce; `member` is the VERP-decoded member address when present, `mac` the MAC
    /// that followed it (not verified here: the pipeline does, with the token secret).
    Bounces {
        member: Option<String>,
        mac: Option<String>,
    },
}

/// Resolves an envelope recipient to (list, route); `None` means not ours (550 5.1.1).
pub fn route<'a>(cfg: &'a Config, rcpt: &str) -> Option<(&'a ListConfig, Route)> {
    let (local, domain) = rcpt.rsplit_once('@')?;
    let local_lc = local.to_ascii_lowercase();
    // RFC 5321 4.5.1: postmaster of a domain we receive for must be accepted; it reaches
    // the owners of the first list of that domain.
    if local_lc == "postmaster" {
        return cfg
            .lists
            .iter()
            .find(|l| l.domain().eq_ignore_ascii_case(domain))
            .map(|l| (l, Route::Owner));
    }
    for l in &cfg.lists {
        if !l.domain().eq_ignore_ascii_case(domain) {
            continue;
        }
        let base = l.local().to_ascii_lowercase();
        if local_lc == base {
            return Some((l, Route::Post));
        }
        if let Some(cmd) = local_lc.strip_prefix(&format!("{base}+")) {
            return match cmd {
                "subscribe" | "join" => Some((l, Route::Request("join"))),
                "unsubscribe" | "leave" => Some((l, Route::Request("leave"))),
                "help" => Some((l, Route::Request("help"))),
                "request" => Some((l, Route::Request("request"))),
                "owner" => Some((l, Route::Owner)),
                _ => None,
            };
        }
        let Some(rest) = local_lc.strip_prefix(&format!("{base}-")) else {
            continue;
        };
        // Keep the member part's original case: local parts may be case-sensitive.
        let orig_rest = &local[base.len() + 1..];
        match rest {
            "owner" => return Some((l, Route::Owner)),
            "request" => return Some((l, Route::Request("request"))),
            "join" | "subscribe" => return Some((l, Route::Request("join"))),
            "leave" | "unsubscribe" => return Some((l, Route::Request("leave"))),
            "bounces" => {
                return Some((
                    l,
                    Route::Bounces {
                        member: None,
                        mac: None,
                    },
                ))
            }
            _ => {}
        }
        if let Some(token) = rest.strip_prefix("confirm+") {
            if !token.is_empty() {
                return Some((l, Route::Confirm(token.to_string())));
            }
        }
        if rest.starts_with("bounces+") {
            let enc = &orig_rest["bounces+".len()..];
            let (member, mac) = verp_split(enc);
            return Some((l, Route::Bounces { member, mac }));
        }
    }
    None
}

/// The VERP envelope sender for a copy to `member`: `forum-bounces+member=domain+MAC@host`,
/// where MAC is [`Secret::verp_mac`] (8 base32 characters) of the list and the member.
///
/// The local part is the list's, `-bounces+`, the member address with `=` for its `@`, `+`
/// and the MAC: 18 characters plus the list's local part plus the member address. Up to a
/// member address of about 40 characters it stays within RFC 5321's 64; for longer ones
/// it is longer than 64 and still used as it is (Postfix, Exim and Sendmail accept long
/// local parts; RFC 5321 4.5.3.1 lets servers accept more than 64). A relay that refused
/// it would refuse the copy at MAIL FROM with a 5.5.x/5.1.7-like status, scored against
/// that member like any refusal; shortening it instead would cost the bounce its member.
pub fn verp(list: &ListConfig, secret: &Secret, member: &str) -> String {
    match member.rsplit_once('@') {
        Some((ml, md)) => format!(
            "{}-bounces+{}={}+{}@{}",
            list.local(),
            ml,
            md,
            secret.verp_mac(list.key(), member),
            list.domain()
        ),
        None => list.sub_address("bounces"),
    }
}

/// The member part and the MAC of a VERP address's detail (`jan=ocmw.be+k3x9q8ab`). The
/// MAC is what follows the last `+` when that holds no `=` (a domain never holds `+`);
/// an address without one (`jan=ocmw.be`, the format before MACs) has `None`.
pub fn verp_split(enc: &str) -> (Option<String>, Option<String>) {
    match enc.rsplit_once('+') {
        Some((head, mac)) if !mac.contains('=') && head.contains('=') => {
            (verp_decode(head), Some(mac.to_ascii_lowercase()))
        }
        _ => (verp_decode(enc), None),
    }
}

/// Inverse of [`verp`]'s member part: the last `=` separates local part and domain.
pub fn verp_decode(enc: &str) -> Option<String> {
    let (l, d) = enc.rsplit_once('=')?;
    if l.is_empty() || d.is_empty() || !d.contains('.') {
        return None;
    }
    Some(format!("{l}@{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::embedded().unwrap()
    }

    #[test]
    fn routes() {
        let c = cfg();
        assert_eq!(route(&c, "forum@lists.example.org").unwrap().1, Route::Post);
        assert_eq!(route(&c, "FORUM@Lists.Example.org").unwrap().1, Route::Post);
        assert_eq!(
            route(&c, "forum-owner@lists.example.org").unwrap().1,
            Route::Owner
        );
        assert_eq!(
            route(&c, "forum-bounces+Jan.P=ocmw.be@lists.example.org")
                .unwrap()
                .1,
            Route::Bounces {
                member: Some("Jan.P@ocmw.be".into()),
                mac: None,
            }
        );
        assert_eq!(
            route(&c, "forum-bounces+Jan.P=ocmw.be+K3X9Q8AB@lists.example.org")
                .unwrap()
                .1,
            Route::Bounces {
                member: Some("Jan.P@ocmw.be".into()),
                mac: Some("k3x9q8ab".into()),
            }
        );
        assert!(route(&c, "forum@example.com").is_none());
        assert!(route(&c, "other@lists.example.org").is_none());
        assert_eq!(
            route(&c, "forum-leave@lists.example.org").unwrap().1,
            Route::Request("leave")
        );
        assert!(route(&c, "forum-nothing@lists.example.org").is_none());
        assert_eq!(
            route(&c, "forum+subscribe@lists.example.org").unwrap().1,
            Route::Request("join")
        );
        assert_eq!(
            route(&c, "Forum+Unsubscribe@lists.example.org").unwrap().1,
            Route::Request("leave")
        );
        assert!(route(&c, "forum+other@lists.example.org").is_none());
        assert_eq!(
            route(&c, "forum-confirm+ABC123@lists.example.org")
                .unwrap()
                .1,
            Route::Confirm("abc123".into())
        );
        assert!(route(&c, "nobody").is_none());
        assert_eq!(
            route(&c, "Postmaster@lists.example.org").unwrap().1,
            Route::Owner
        );
        assert!(route(&c, "postmaster@example.com").is_none());
    }

    #[test]
    fn verp_round_trip() {
        let c = cfg();
        let l = &c.lists[0];
        let secret = Secret::from_bytes([5; 32]);
        for addr in ["a.b+tag@example.be", "jan@ocmw.be", "x+y+z@sub.example.org"] {
            let v = verp(l, &secret, addr);
            let mac = secret.verp_mac(l.key(), addr);
            let (ml, md) = addr.rsplit_once('@').unwrap();
            assert_eq!(
                v,
                format!("forum-bounces+{ml}={md}+{mac}@lists.example.org")
            );
            match route(&c, &v).unwrap().1 {
                Route::Bounces { member, mac: got } => {
                    assert_eq!(member.as_deref(), Some(addr));
                    assert!(secret.verify_verp(l.key(), addr, &got.unwrap()));
                }
                r => panic!("{r:?}"),
            }
            // Folded to upper case by some MTA on the way back: still the same.
            match route(&c, &v.to_ascii_uppercase()).unwrap().1 {
                Route::Bounces { member, mac: got } => {
                    let m = member.unwrap();
                    assert!(m.eq_ignore_ascii_case(addr));
                    assert!(secret.verify_verp(l.key(), &m, &got.unwrap()));
                }
                r => panic!("{r:?}"),
            }
        }
        // The old form has no MAC; a tag in the member's local part is not taken for one.
        assert_eq!(
            verp_split("a.b+tag=example.be"),
            (Some("a.b+tag@example.be".into()), None)
        );
    }
}
