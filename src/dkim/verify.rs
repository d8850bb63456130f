//! Inbound DKIM verification (RFC 6376 section 6), for the one place where a signature
//! decides something: an owner's membership command by mail is applied at once only when
//! the mail carries a valid signature of the owner's own domain (DMARC-style relaxed
//! alignment, RFC 7489 3.1.1); otherwise the owner confirms by reply.
//!
//! mail-auth does the cryptography and the canonicalization. Its key lookup goes through
//! its own hickory resolver; we want ours instead (the `[dns]` table in tests and on sites
//! that pin records, the TTL cache, the pass's prefetch and its timeout), so the keys are
//! looked up through [`Resolver`] first and handed to mail-auth as a filled cache, and
//! mail-auth's own resolver has no name servers: a key we did not supply is a DNS error,
//! never a lookup of its own.

use crate::dns::Resolver;
use mail_auth::common::cache::NoCache;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// What the signatures of a mail say about its From domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A signature verified and its `d=` aligns with the From domain; the `d=`.
    Aligned(String),
    /// No signature, or none that verifies and aligns.
    None,
    /// A key could not be looked up (timeout, SERVFAIL): nothing can be concluded.
    Unknown,
}

/// At most this many signatures of a mail are considered: a forged mail must not be able
/// to make the pipeline look up keys without end.
const MAX_SIGNATURES: usize = 5;

/// The key names (`selector._domainkey.domain`) of a mail's signatures that could count
/// for its From domain, for the pass's prefetch.
pub fn key_names(raw: &[u8]) -> Vec<String> {
    let Some(msg) = AuthenticatedMessage::parse(raw) else {
        return Vec::new();
    };
    let Some(from_org) = single_from(&msg).map(organizational) else {
        return Vec::new();
    };
    let mut names: Vec<String> = candidates(&msg, &from_org)
        .map(|h| key_name(&h.header.s, &h.header.d))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The From domain, when the message has exactly one From address (RFC 7489 6.6.1: a
/// message with several is not evaluated).
fn single_from<'m>(msg: &'m AuthenticatedMessage<'_>) -> Option<&'m str> {
    match msg.from.as_slice() {
        [one] => one.rsplit_once('@').map(|x| x.1),
        _ => None,
    }
}

/// The signatures that could count: aligned with `from_org`, covering From and Subject
/// (RFC 6376 5.4: From must be signed; commands are read from the Subject too), the first
/// [`MAX_SIGNATURES`].
fn candidates<'a, 'm>(
    msg: &'a AuthenticatedMessage<'m>,
    from_org: &'a str,
) -> impl Iterator<Item = &'a mail_auth::common::headers::Header<'m, mail_auth::dkim::Signature>> + 'a
{
    msg.dkim_headers
        .iter()
        .take(MAX_SIGNATURES)
        .filter(move |h| organizational(&h.header.d) == from_org && covers(&h.header))
}

fn covers(sig: &mail_auth::dkim::Signature) -> bool {
    let has = |name: &str| sig.h.iter().any(|h| h.eq_ignore_ascii_case(name));
    has("from") && has("subject")
}

fn key_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}").to_ascii_lowercase()
}

/// Whether `raw` carries a valid DKIM signature aligned (relaxed) with `from_domain`.
/// Blocking: it waits for `dns`, so it runs where the pipeline runs, on a blocking thread.
pub fn verify_aligned(raw: &[u8], from_domain: &str, dns: &dyn Resolver) -> Verdict {
    let Some(msg) = AuthenticatedMessage::parse(raw) else {
        return Verdict::None;
    };
    let from_org = organizational(from_domain);
    // The From the signature covers must be the one the command is read from.
    if single_from(&msg).map(organizational).as_deref() != Some(from_org.as_str()) {
        return Verdict::None;
    }
    let cache = KeyCache::default();
    let mut lookup_failed = false;
    // Only signatures that could count are worth a lookup.
    for h in candidates(&msg, &from_org) {
        let name = key_name(&h.header.s, &h.header.d);
        match dns.txt(&name) {
            Ok(records) => {
                // RFC 6376 3.6.2.2: more than one record makes the result undefined;
                // we take the first that parses as a key.
                if let Some(key) = records
                    .iter()
                    .find_map(|r| DomainKey::parse(r.as_bytes()).ok())
                {
                    cache.put(format!("{name}."), Txt::from(key));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "DKIM key lookup failed");
                lookup_failed = true;
            }
        }
    }
    let Ok(auth) = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(Vec::new()),
        ResolverOpts::default(),
    ) else {
        return Verdict::Unknown;
    };
    let params = Parameters::new(&msg).with_txt_cache(&cache);
    let outputs = futures::executor::block_on(
        auth.verify_dkim::<_, NoCache<_, _>, NoCache<_, _>, NoCache<_, _>, NoCache<_, _>>(params),
    );
    for out in &outputs {
        if out.result() == &DkimResult::Pass {
            if let Some(sig) = out.signature() {
                if organizational(&sig.d) == from_org && covers(sig) {
                    return Verdict::Aligned(sig.d.to_ascii_lowercase());
                }
            }
        }
    }
    if lookup_failed {
        Verdict::Unknown
    } else {
        Verdict::None
    }
}

/// The organizational domain (RFC 7489 3.2) by the public suffix list.
fn organizational(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&d).unwrap_or(&d).to_string()
}

/// The keys we looked up, as mail-auth's cache: it asks here before it would resolve.
#[derive(Default)]
struct KeyCache(Mutex<HashMap<Box<str>, Txt>>);

impl KeyCache {
    fn put(&self, name: String, value: Txt) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(name.into_boxed_str(), value);
        }
    }
}

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: std::time::Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Table;

    fn signed(domain: &str, selector: &str, pem: &str, body: &str) -> Vec<u8> {
        let unsigned = format!(
            "From: Owner <owner@{domain}>\r\nTo: forum-request@lists.example\r\nSubject: add\r\nMessage-ID: <x@{domain}>\r\n\r\n{body}"
        );
        let key = match super::super::parse_key(pem).unwrap() {
            super::super::Key::Ed25519(k) => k,
            super::super::Key::Rsa(_) => unreachable!(),
        };
        let sig = mail_auth::dkim::DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(["From", "To", "Subject", "Message-ID"])
            .header_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
            .body_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
            .sign(unsigned.as_bytes())
            .unwrap();
        use mail_auth::common::headers::HeaderWriter;
        let mut raw = sig.to_header().into_bytes();
        raw.extend_from_slice(unsigned.as_bytes());
        raw
    }

    #[test]
    fn a_valid_aligned_signature_passes_and_changes_break_it() {
        let (pem, p) = super::super::generate(super::super::Algorithm::Ed25519).unwrap();
        let raw = signed("ocmw-gent.be", "s1", &pem, "add an@x.be\r\n");
        let mut dns = Table::default();
        dns.0.insert(
            "s1._domainkey.ocmw-gent.be".into(),
            vec![format!("v=DKIM1; k=ed25519; p={p}")],
        );
        assert_eq!(
            verify_aligned(&raw, "ocmw-gent.be", &dns),
            Verdict::Aligned("ocmw-gent.be".into())
        );
        // A subdomain of the same organization aligns (relaxed).
        assert!(matches!(
            verify_aligned(&raw, "mail.ocmw-gent.be", &dns),
            Verdict::Aligned(_)
        ));
        // Another organization's From does not.
        assert_eq!(verify_aligned(&raw, "evil.example", &dns), Verdict::None);
        // A changed body fails.
        let text = String::from_utf8(raw.clone()).unwrap();
        let tampered = text.replace("add an@x.be", "add eve@x.be");
        assert_eq!(
            verify_aligned(tampered.as_bytes(), "ocmw-gent.be", &dns),
            Verdict::None
        );
        // No key published: none; a failed lookup: unknown.
        assert_eq!(
            verify_aligned(&raw, "ocmw-gent.be", &Table::default()),
            Verdict::None
        );
        struct Down;
        impl Resolver for Down {
            fn txt(&self, _: &str) -> crate::dns::TxtResult {
                Err("timeout".into())
            }
        }
        assert_eq!(
            verify_aligned(&raw, "ocmw-gent.be", &Down),
            Verdict::Unknown
        );
        assert_eq!(key_names(&raw), ["s1._domainkey.ocmw-gent.be"]);
        // A valid signature that leaves From (or Subject) unsigned does not count: they
        // could be rewritten under it.
        let key = match super::super::parse_key(&pem).unwrap() {
            super::super::Key::Ed25519(k) => k,
            super::super::Key::Rsa(_) => unreachable!(),
        };
        let unsigned =
            "From: Owner <owner@ocmw-gent.be>\r\nTo: x@y.z\r\nSubject: add\r\n\r\nadd eve@x.be\r\n";
        let sig = mail_auth::dkim::DkimSigner::from_key(key)
            .domain("ocmw-gent.be")
            .selector("s1")
            .headers(["To", "Subject"])
            .sign(unsigned.as_bytes())
            .unwrap();
        use mail_auth::common::headers::HeaderWriter;
        let raw = format!("{}{unsigned}", sig.to_header());
        assert_eq!(
            verify_aligned(raw.as_bytes(), "ocmw-gent.be", &dns),
            Verdict::None
        );
        assert!(key_names(raw.as_bytes()).is_empty());
        // Two From addresses: not evaluated.
        let two = String::from_utf8(signed("ocmw-gent.be", "s1", &pem, "x"))
            .unwrap()
            .replace(
                "From: Owner <owner@ocmw-gent.be>",
                "From: Owner <owner@ocmw-gent.be>, eve@evil.example",
            );
        assert_eq!(
            verify_aligned(two.as_bytes(), "ocmw-gent.be", &dns),
            Verdict::None
        );
    }
}
