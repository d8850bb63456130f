//! DKIM signing (RFC 6376, RFC 8463) of everything that leaves for members, with the list
//! domain's key, through mail-auth (ring backend).
//!
//! A list copy is signed per recipient, after its last header is set: the member's own
//! List-Unsubscribe fields (RFC 8058 one-click) differ per recipient and must be covered by
//! the signature, as Gmail's and Yahoo's bulk-sender rules require. Signing covers the
//! fields a receiver shows or acts on (From, To, Subject, Date, Message-ID, the List-*
//! fields, MIME); trace fields that relays add later (Received) are not signed, so the
//! signature survives them. Relaxed/relaxed canonicalization, so that header refolding on
//! the way does not break it.
//!
//! Inbound verification, for owners' commands by mail, is in [`verify`].
//!
//! `vraagbaak dkim keygen LIST` writes a key (RSA 2048 or Ed25519) and prints its DNS
//! record.

use crate::config::{Config, ListConfig};
use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

pub mod verify;

/// The fields signed when present. A field name listed once more than it occurs (From,
/// Subject, To, List-Unsubscribe) is "oversigned": a field of that name added later breaks
/// the signature instead of being shown unsigned.
const SIGNED: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Subject",
    "Date",
    "To",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Help",
    "List-Subscribe",
    "List-Unsubscribe",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Unsubscribe-Post",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Precedence",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The signing keys of the configured lists.
#[derive(Default)]
pub struct Keys {
    by_list: HashMap<String, Signer>,
    /// The first list of each domain that has a key: signs mail that is not a list copy
    /// (notices, welcome texts) from that domain.
    by_domain: HashMap<String, String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("lists", &self.by_list.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The key type found in a PEM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Keys {
    /// Loads every list's key. An error names the list, the file and what is wrong.
    pub fn load(cfg: &Config) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (i, l) in cfg.lists.iter().enumerate() {
            let (Some(sel), Some(path)) = (&l.dkim_selector, &l.dkim_key) else {
                continue;
            };
            let signer = load_signer(l, sel, path)
                .map_err(|e| format!("list[{i}].dkim_key ({}): {e}", path.display()))?;
            keys.by_list.insert(l.key().to_ascii_lowercase(), signer);
            keys.by_domain
                .entry(l.domain().to_ascii_lowercase())
                .or_insert_with(|| l.key().to_ascii_lowercase());
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.by_list.is_empty()
    }

    /// Whether mail of `list` (or, with `sender`, from that address's domain) is signed.
    pub fn signs(&self, list: Option<&str>, sender: Option<&str>) -> bool {
        list.is_some_and(|l| self.by_list.contains_key(&l.to_ascii_lowercase()))
            || sender
                .and_then(|s| s.rsplit_once('@'))
                .is_some_and(|(_, d)| self.by_domain.contains_key(&d.to_ascii_lowercase()))
    }

    /// A `DKIM-Signature` field for the message made of `parts` (its bytes in order), with
    /// `list`'s key; `None` when the list has no key or signing failed (logged: the mail
    /// goes out unsigned rather than not at all).
    pub fn sign_for_list(&self, list: &str, parts: &[&[u8]]) -> Option<String> {
        let s = self.by_list.get(&list.to_ascii_lowercase())?;
        sign(s, parts)
    }

    /// As [`Keys::sign_for_list`], with the key of the list whose domain `sender` is in.
    pub fn sign_for_sender(&self, sender: &str, parts: &[&[u8]]) -> Option<String> {
        let domain = sender.rsplit_once('@')?.1.to_ascii_lowercase();
        let list = self.by_domain.get(&domain)?;
        self.sign_for_list(list, parts)
    }
}

fn sign(s: &Signer, parts: &[&[u8]]) -> Option<String> {
    let r = match s {
        Signer::Rsa(k) => k.sign_chained(parts.iter().copied()),
        Signer::Ed25519(k) => k.sign_chained(parts.iter().copied()),
    };
    match r {
        Ok(sig) => Some(sig.to_header()),
        Err(e) => {
            tracing::error!(error = %e, "DKIM signing failed; sent unsigned");
            None
        }
    }
}

fn load_signer(l: &ListConfig, selector: &str, path: &Path) -> Result<Signer, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read the key: {e}"))?;
    let domain = l.domain().to_string();
    fn build<T: SigningKey>(k: T, domain: String, selector: &str) -> DkimSigner<T, Done> {
        DkimSigner::from_key(k)
            .domain(domain)
            .selector(selector)
            .headers(SIGNED.iter().map(|h| h.to_string()))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
    }
    Ok(match parse_key(&pem)? {
        Key::Rsa(k) => Signer::Rsa(build(k, domain, selector)),
        Key::Ed25519(k) => Signer::Ed25519(build(k, domain, selector)),
    })
}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// The DER inside the first PEM block with `label`.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn parse_key(pem: &str) -> Result<Key, String> {
    if let Some(der) = pem_block(pem, "RSA PRIVATE KEY") {
        return RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)))
            .map(Key::Rsa)
            .map_err(|e| format!("not a usable RSA (PKCS#1) key (2048 bits or more?): {e}"));
    }
    let Some(der) = pem_block(pem, "PRIVATE KEY") else {
        return Err(
            "expected a PEM private key: RSA (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY, \
                    2048 bits or more) or Ed25519 (BEGIN PRIVATE KEY)"
                .into(),
        );
    };
    if let Ok(k) =
        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.clone())))
    {
        return Ok(Key::Rsa(k));
    }
    Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
        .map(Key::Ed25519)
        .map_err(|_| "a PKCS#8 key that is neither RSA (2048 bits or more) nor Ed25519".to_string())
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new key: its PEM (PKCS#8) and the `p=` value of its DNS record.
pub fn generate(alg: Algorithm) -> Result<(String, String), String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match alg {
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let key = Ed25519Key::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
            Ok((pem_wrap("PRIVATE KEY", &der), b64(&key.public_key())))
        }
        Algorithm::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let mut rng = rsa::rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
            let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            Ok((
                pem_wrap("PRIVATE KEY", der.as_bytes()),
                b64(public.as_bytes()),
            ))
        }
    }
}

/// The DNS record for a key: (name, TXT value).
pub fn dns_record(list: &ListConfig, selector: &str, alg: Algorithm, p: &str) -> (String, String) {
    let k = match alg {
        Algorithm::Rsa => "rsa",
        Algorithm::Ed25519 => "ed25519",
    };
    (
        format!("{selector}._domainkey.{}", list.domain()),
        format!("v=DKIM1; k={k}; p={p}"),
    )
}

/// Where `dkim keygen` writes a list's key when the config names no `dkim_key`.
pub fn default_key_path(cfg: &Config, list: &ListConfig, selector: &str) -> PathBuf {
    cfg.data_dir
        .join("dkim")
        .join(format!("{}.{selector}.pem", list.local()))
}

/// `vraagbaak dkim keygen`: writes a new key (mode 0600, never over an existing file) and
/// returns the text to show: the file, the DNS record, and the config keys to set.
pub fn keygen(cfg: &Config, list: &ListConfig, alg: Algorithm) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let selector = list.dkim_selector.clone().unwrap_or_else(|| "vb1".into());
    let path = list
        .dkim_key
        .clone()
        .unwrap_or_else(|| default_key_path(cfg, list, &selector));
    let (pem, p) = generate(alg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "{} exists; a key is never overwritten (move it away first, and keep \
                     the old DNS record until mail signed with it has been delivered)",
                    path.display()
                )
            } else {
                format!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let (name, value) = dns_record(list, &selector, alg, &p);
    let mut out = format!("Wrote the private key to {}\n\n", path.display());
    out.push_str("Publish this DNS record (TXT):\n\n");
    out.push_str(&format!("{name}. IN TXT {}\n\n", txt_strings(&value)));
    if list.dkim_selector.is_none() || list.dkim_key.is_none() {
        out.push_str("and set in the list's [[list]] table:\n\n");
        out.push_str(&format!(
            "dkim_selector = \"{selector}\"\ndkim_key = \"{}\"\n",
            path.display()
        ));
    } else {
        out.push_str("The list's config already names this selector and file; restart vraagbaak once the record is published.\n");
    }
    Ok(out)
}

/// A TXT value as DNS zone-file strings (at most 255 bytes each).
fn txt_strings(v: &str) -> String {
    v.as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign() {
        for alg in [Algorithm::Ed25519, Algorithm::Rsa] {
            let (pem, p) = generate(alg).unwrap();
            assert!(!p.is_empty());
            let key = parse_key(&pem).unwrap();
            assert!(matches!(
                (alg, key),
                (Algorithm::Rsa, Key::Rsa(_)) | (Algorithm::Ed25519, Key::Ed25519(_))
            ));
        }
        assert!(parse_key("nonsense").is_err());
    }
}
