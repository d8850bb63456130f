//! DMARC (RFC 7489): whether a post's From must be replaced by the list's address.
//!
//! A list changes the subject and adds a footer, so the author's DKIM signature breaks, and
//! the list's own mail server is not in the author's SPF: receivers that apply the author's
//! domain policy would quarantine or reject every list copy. With `from_rewrite = "dmarc"`
//! the author domain's policy is looked up (the `_dmarc` record of the domain, else of its
//! organizational domain by the public suffix list, with `sp=` there); for `quarantine` and
//! `reject` the copy gets `From: "Name via List" <list@host>` (RFC 7960 section 4.1.3.1, as
//! Mailman's `dmarc_mitigate_action = munge_from`). A lookup that fails counts as `reject`:
//! rewriting a From that did not need it costs little; not rewriting one that did loses the
//! post at every receiver that enforces the policy.

use crate::config::{FromRewrite, ListConfig};
use crate::dns::Resolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Dmarc, Policy as DmarcPolicy};

/// What the author's domain publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    NoRecord,
    None,
    Quarantine,
    Reject,
    /// The lookup failed; handled as `Reject`.
    LookupFailed(String),
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::NoRecord => "none (no record)",
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
            Policy::LookupFailed(_) => "unknown (lookup failed)",
        }
    }
}

/// The one DMARC record at `_dmarc.<domain>`; none when there is none, or more than one
/// (RFC 7489 6.6.3), or it does not parse.
fn record(dns: &dyn Resolver, domain: &str) -> Result<Option<Dmarc>, String> {
    let txts = dns.txt(&format!("_dmarc.{domain}"))?;
    let recs: Vec<&String> = txts
        .iter()
        .filter(|t| {
            t.trim_start()
                .get(..8)
                .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
        })
        .collect();
    match recs.as_slice() {
        [one] => Ok(Dmarc::parse(one.as_bytes()).ok()),
        _ => Ok(None),
    }
}

fn of(p: &DmarcPolicy) -> Policy {
    match p {
        DmarcPolicy::Reject => Policy::Reject,
        DmarcPolicy::Quarantine => Policy::Quarantine,
        DmarcPolicy::None | DmarcPolicy::Unspecified => Policy::None,
    }
}

/// The TXT names [`policy`] may ask for `domain`: its own `_dmarc` record and its
/// organizational domain's.
pub fn names(domain: &str) -> Vec<String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let org = psl::domain_str(&domain).unwrap_or(&domain).to_string();
    let mut v = vec![format!("_dmarc.{domain}")];
    if org != domain {
        v.push(format!("_dmarc.{org}"));
    }
    v
}

/// The policy that applies to mail From `domain`.
pub fn policy(dns: &dyn Resolver, domain: &str) -> Policy {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match record(dns, &domain) {
        Err(e) => return Policy::LookupFailed(e),
        Ok(Some(d)) => return of(&d.p),
        Ok(None) => {}
    }
    let org = psl::domain_str(&domain).unwrap_or(&domain).to_string();
    if org == domain {
        return Policy::NoRecord;
    }
    match record(dns, &org) {
        Err(e) => Policy::LookupFailed(e),
        Ok(Some(d)) if d.sp != DmarcPolicy::Unspecified => of(&d.sp),
        Ok(Some(d)) => of(&d.p),
        Ok(None) => Policy::NoRecord,
    }
}

/// Whether the list copy of a post from `from_addr` gets the list's From, and why.
pub fn rewrite(list: &ListConfig, dns: &dyn Resolver, from_addr: &str) -> (bool, Policy) {
    match list.from_rewrite {
        FromRewrite::Never => (false, Policy::NoRecord),
        FromRewrite::Always => (true, Policy::NoRecord),
        FromRewrite::Dmarc => {
            let domain = from_addr.rsplit_once('@').map_or("", |(_, d)| d);
            let p = policy(dns, domain);
            let r = matches!(
                p,
                Policy::Quarantine | Policy::Reject | Policy::LookupFailed(_)
            );
            (r, p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Table;
    use std::collections::HashMap;

    struct Failing;
    impl Resolver for Failing {
        fn txt(&self, _: &str) -> crate::dns::TxtResult {
            Err("timed out".into())
        }
    }

    fn table() -> Table {
        let t = |k: &str, v: &[&str]| (k.to_string(), v.iter().map(|s| s.to_string()).collect());
        Table(HashMap::from([
            t(
                "_dmarc.example.com",
                &["v=DMARC1; p=reject; rua=mailto:d@example.com"],
            ),
            t("_dmarc.example.net", &["v=DMARC1; p=none"]),
            t("_dmarc.example.org", &["v=DMARC1; p=none; sp=quarantine"]),
            t(
                "_dmarc.two.example",
                &["v=DMARC1; p=reject", "v=DMARC1; p=none"],
            ),
            t("_dmarc.ocmw.be", &["some other text"]),
        ]))
    }

    #[test]
    fn policies() {
        let t = table();
        assert_eq!(policy(&t, "example.com"), Policy::Reject);
        assert_eq!(policy(&t, "Example.COM."), Policy::Reject);
        assert_eq!(policy(&t, "example.net"), Policy::None);
        // Subdomains: the organizational domain's sp=, else its p=.
        assert_eq!(policy(&t, "mail.example.org"), Policy::Quarantine);
        assert_eq!(policy(&t, "a.b.example.com"), Policy::Reject);
        assert_eq!(policy(&t, "example.org"), Policy::None);
        assert_eq!(policy(&t, "two.example"), Policy::NoRecord);
        assert_eq!(policy(&t, "ocmw.be"), Policy::NoRecord);
        assert!(matches!(policy(&Failing, "x.be"), Policy::LookupFailed(_)));
    }

    #[test]
    fn rewrite_by_list_setting() {
        let mut l = crate::config::Config::embedded().unwrap().lists[0].clone();
        let t = table();
        assert!(rewrite(&l, &t, "a@example.com").0);
        assert!(!rewrite(&l, &t, "a@example.net").0);
        assert!(!rewrite(&l, &t, "a@ocmw.be").0);
        assert!(
            rewrite(&l, &Failing, "a@ocmw.be").0,
            "a failed lookup rewrites"
        );
        l.from_rewrite = FromRewrite::Never;
        assert!(!rewrite(&l, &t, "a@example.com").0);
        l.from_rewrite = FromRewrite::Always;
        assert!(rewrite(&l, &t, "a@ocmw.be").0);
    }
}
