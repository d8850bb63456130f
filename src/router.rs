//! Which list, and which of its addresses, a recipient is.
//!
//! Per list `forum@host`: `forum@` posts, `forum-owner@` reaches the owners, and
//! `forum-bounces@` / `forum-bounces+member=domain@` receives bounces (VERP);
//! `forum-request@`, `forum-join@` and `forum-leave@` take requests (as do Mailman's
//! `forum-subscribe@`/`forum-unsubscribe@` and mlmmj's `forum+subscribe@`,
//! `forum+unsubscribe@`, `forum+help@`), and `forum-confirm+TOKEN@` confirms.

use crate::config::{Config, ListConfig};

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
    /// A bounce; `member` is the VERP-decoded member address when present.
    Bounces { member: Option<String> },
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
            "bounces" => return Some((l, Route::Bounces { member: None })),
            _ => {}
        }
        if let Some(token) = rest.strip_prefix("confirm+") {
            if !token.is_empty() {
                return Some((l, Route::Confirm(token.to_string())));
            }
        }
        if rest.starts_with("bounces+") {
            let enc = &orig_rest["bounces+".len()..];
            return Some((
                l,
                Route::Bounces {
                    member: verp_decode(enc),
                },
            ));
        }
    }
    None
}

/// The VERP envelope sender for a copy to `member`: `forum-bounces+member=domain@host`.
pub fn verp(list: &ListConfig, member: &str) -> String {
    match member.rsplit_once('@') {
        Some((ml, md)) => format!("{}-bounces+{}={}@{}", list.local(), ml, md, list.domain()),
        None => list.sub_address("bounces"),
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
                member: Some("Jan.P@ocmw.be".into())
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
        let v = verp(l, "a.b+tag@example.be");
        assert_eq!(v, "forum-bounces+a.b+tag=example.be@lists.example.org");
        match route(&c, &v).unwrap().1 {
            Route::Bounces { member } => assert_eq!(member.unwrap(), "a.b+tag@example.be"),
            r => panic!("{r:?}"),
        }
    }
}
