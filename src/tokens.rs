//! Tokens for confirmations, moderation and one-click unsubscribe.
//!
//! A token is 25 bytes, written in lower-case base32 (40 characters, so it fits in a local
//! part such as `forum-confirm+TOKEN@` and survives MTAs that fold case):
//!
//! `kind (1) | id (8) | expires (4, Unix seconds, 0 = never) | mac (12)`
//!
//! `mac` is HMAC-SHA256 over the first 13 bytes plus the list key and the lower-cased address
//! the token acts on, with a secret kept in the data directory (`secret.key`, mode 0600,
//! created on first use). A token is thus bound to its action, list and address: changing
//! any of them, or any byte of the token, makes it invalid. The token itself does not carry
//! the list or the address; the record it names (a pending request, a held post, a member)
//! does, so nobody learns an address from a token, and single use is the record's removal.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

const MAC_LEN: usize = 12;
const TOKEN_LEN: usize = 1 + 8 + 4 + MAC_LEN;
/// Bytes of HMAC in a VERP address: 40 bits, so guessing one takes about 10^12 forged
/// bounces (each of which is quarantined and shown to the owners).
pub const VERP_MAC_BYTES: usize = 5;
/// Its length in base32.
pub const VERP_MAC_CHARS: usize = 8;

/// What a token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Confirms a subscription request (a pending record).
    Subscribe,
    /// Confirms an unsubscription request (a pending record).
    Unsubscribe,
    /// Approves or rejects a held post (the held record).
    Moderate,
    /// Removes a member at once (RFC 8058 one-click; the member record).
    OneClick,
    /// Turns delivery back on for a member disabled by bounces (a pending record).
    Reenable,
    /// Confirms a request to be forgotten (a pending record).
    Forget,
    /// A one-time link that logs a member in to a members-only archive (a pending record).
    Login,
    /// A members-only archive session (the cookie; the member record, by its uid).
    Session,
    /// Confirms an owner's command by mail (a pending record): marking a question solved.
    OwnerAction,
    /// A poster's confirmation that their held post may go to the list (`pii_posts =
    /// "hold"`: it holds a national number or an account number; a pending record).
    PosterRelease,
    /// Confirms a member's `set` commands sent without a DKIM signature of their own
    /// domain (a pending record holding the command lines).
    Settings,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Subscribe => 1,
            Kind::Unsubscribe => 2,
            Kind::Moderate => 3,
            Kind::OneClick => 4,
            Kind::Reenable => 5,
            Kind::Forget => 6,
            Kind::Login => 7,
            Kind::Session => 8,
            Kind::OwnerAction => 9,
            Kind::PosterRelease => 10,
            Kind::Settings => 11,
        }
    }
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Subscribe,
            2 => Kind::Unsubscribe,
            3 => Kind::Moderate,
            4 => Kind::OneClick,
            5 => Kind::Reenable,
            6 => Kind::Forget,
            7 => Kind::Login,
            8 => Kind::Session,
            9 => Kind::OwnerAction,
            10 => Kind::PosterRelease,
            11 => Kind::Settings,
            _ => return None,
        })
    }
}

/// A decoded, not yet verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub id: u64,
    /// Unix seconds; 0 means the token does not expire.
    pub expires: u32,
    mac: [u8; MAC_LEN],
}

impl Token {
    /// Parses the text form (case-insensitive); `None` for anything that is not a token.
    pub fn parse(s: &str) -> Option<Token> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() != 40 {
            return None;
        }
        let b = data_encoding::BASE32_DNSSEC.decode(s.as_bytes()).ok()?;
        if b.len() != TOKEN_LEN {
            return None;
        }
        let kind = Kind::from_byte(b[0])?;
        let id = u64::from_be_bytes(b[1..9].try_into().ok()?);
        let expires = u32::from_be_bytes(b[9..13].try_into().ok()?);
        let mac = b[13..].try_into().ok()?;
        Some(Token {
            kind,
            id,
            expires,
            mac,
        })
    }

    /// Whether the token has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires != 0 && i64::from(self.expires) * 1000 < now_ms
    }
}

/// The HMAC key.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> std::io::Result<Secret> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                let key: [u8; 32] = rand::random();
                f.write_all(&key)?;
                f.sync_all()?;
                if let Some(dir) = path.parent() {
                    // The key must survive a crash as surely as the tokens sent with it.
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(Secret(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut key = [0u8; 32];
                let mut f = std::fs::File::open(path)?;
                f.read_exact(&mut key).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("{}: expected 32 bytes of key: {e}", path.display()),
                    )
                })?;
                Ok(Secret(key))
            }
            Err(e) => Err(e),
        }
    }

    /// A key for another purpose (`label` names it), derived from this one.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            m.update(label);
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// A fixed key, for tests.
    pub fn from_bytes(key: [u8; 32]) -> Secret {
        Secret(key)
    }

    fn hmac(&self, head: &[u8], list: &str, addr: &str) -> Option<Hmac<Sha256>> {
        // HMAC takes keys of any length; this never fails for our 32 bytes.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        m.update(head);
        m.update(&[0]);
        m.update(list.to_ascii_lowercase().as_bytes());
        m.update(&[0]);
        m.update(addr.to_lowercase().as_bytes());
        Some(m)
    }

    fn mac(&self, head: &[u8], list: &str, addr: &str) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        if let Some(m) = self.hmac(head, list, addr) {
            out.copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
        }
        out
    }

    /// Issues a token for `kind` on record `id`, bound to `list` and `addr`.
    pub fn issue(&self, kind: Kind, id: u64, expires: u32, list: &str, addr: &str) -> String {
        let mut b = Vec::with_capacity(TOKEN_LEN);
        b.push(kind.byte());
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&expires.to_be_bytes());
        let mac = self.mac(&b, list, addr);
        b.extend_from_slice(&mac);
        data_encoding::BASE32_DNSSEC.encode(&b)
    }

    /// Whether `t` was issued by us for this list and address.
    pub fn verify(&self, t: &Token, list: &str, addr: &str) -> bool {
        let mut head = Vec::with_capacity(13);
        head.push(t.kind.byte());
        head.extend_from_slice(&t.id.to_be_bytes());
        head.extend_from_slice(&t.expires.to_be_bytes());
        // Constant-time comparison: a forger learns nothing from response timing.
        self.hmac(&head, list, addr)
            .is_some_and(|m| m.verify_truncated_left(&t.mac).is_ok())
    }

    /// The stable, unguessable id of a member, used in its one-click unsubscribe URL.
    /// The id of one membership: of `addr` on `list` since `joined_ms`. Leaving and
    /// joining again makes a new one, so one-click, re-enable and session tokens made for
    /// the old membership name nobody afterwards.
    pub fn membership_uid(&self, list: &str, addr: &str, joined_ms: i64) -> u64 {
        let who = format!("{}\0{joined_ms}", addr.to_lowercase());
        self.member_uid(list, &who)
    }

    /// The id of members stored before memberships had their own (`assign_member_uids`),
    /// and of addresses that are no member (a token for them names nobody).
    pub fn member_uid(&self, list: &str, addr: &str) -> u64 {
        let mac = self.mac(b"member-uid", list, addr);
        let mut b = [0u8; 8];
        b.copy_from_slice(&mac[..8]);
        // 0 means "no uid yet" in stored member records.
        u64::from_be_bytes(b).max(1)
    }

    /// The MAC in a member's VERP address (`forum-bounces+jan=ocmw.be+MAC@`): the first
    /// [`VERP_MAC_BYTES`] bytes of HMAC-SHA256 over `verp`, the list key and the lower-cased
    /// member address, in lower-case base32 ([`VERP_MAC_CHARS`] characters).
    pub fn verp_mac(&self, list: &str, addr: &str) -> String {
        let mac = self.mac(b"verp", list, addr);
        data_encoding::BASE32_DNSSEC.encode(&mac[..VERP_MAC_BYTES])
    }

    /// Whether `mac` (any case) is the VERP MAC of `addr` on `list`; compared in constant
    /// time.
    pub fn verify_verp(&self, list: &str, addr: &str, mac: &str) -> bool {
        let mac = mac.trim().to_ascii_lowercase();
        if mac.len() != VERP_MAC_CHARS {
            return false;
        }
        let Ok(b) = data_encoding::BASE32_DNSSEC.decode(mac.as_bytes()) else {
            return false;
        };
        b.len() == VERP_MAC_BYTES
            && self
                .hmac(b"verp", list, addr)
                .is_some_and(|m| m.verify_truncated_left(&b).is_ok())
    }

    /// The one-click unsubscribe token of the membership `uid` of `addr`.
    pub fn one_click(&self, uid: u64, list: &str, addr: &str) -> String {
        self.issue(Kind::OneClick, uid, 0, list, addr)
    }

    fn thread_mac(&self, member: u64, thread: u64, list: &str, addr: &str) -> Option<Hmac<Sha256>> {
        let mut head = [0u8; 1 + 8 + 8];
        head[0] = THREAD_KIND;
        head[1..9].copy_from_slice(&member.to_be_bytes());
        head[9..].copy_from_slice(&thread.to_be_bytes());
        self.hmac(&head, list, addr)
    }

    /// A member's own "stop receiving this thread" token (see [`ThreadToken`]); `member` is
    /// the member's uid ([`Secret::member_uid`]), `thread` the thread's [`thread_id`].
    pub fn thread_token(&self, member: u64, thread: u64, list: &str, addr: &str) -> String {
        let mut b = Vec::with_capacity(THREAD_TOKEN_LEN);
        b.push(THREAD_KIND);
        b.extend_from_slice(&member.to_be_bytes());
        b.extend_from_slice(&thread.to_be_bytes());
        if let Some(m) = self.thread_mac(member, thread, list, addr) {
            b.extend_from_slice(&m.finalize().into_bytes()[..THREAD_MAC_LEN]);
        }
        data_encoding::BASE32_DNSSEC.encode(&b)
    }

    /// Whether `t` was issued by us for this list and member address; constant time.
    pub fn verify_thread(&self, t: &ThreadToken, list: &str, addr: &str) -> bool {
        self.thread_mac(t.member, t.thread, list, addr)
            .is_some_and(|m| m.verify_truncated_left(&t.mac).is_ok())
    }
}

/// The first byte of a [`ThreadToken`] (not a [`Kind`]: those tokens are shorter).
const THREAD_KIND: u8 = 0x4d;
const THREAD_MAC_LEN: usize = 13;
const THREAD_TOKEN_LEN: usize = 1 + 8 + 8 + THREAD_MAC_LEN;
/// The length of a [`ThreadToken`] in base32.
pub const THREAD_TOKEN_CHARS: usize = THREAD_TOKEN_LEN * 8 / 5;

/// The stable 64-bit id of a thread: the first 8 bytes of SHA-256 over the lower-cased list
/// key and the thread's root Message-ID (normalized, without angle brackets). Not secret:
/// the tokens that carry it are MAC'd.
pub fn thread_id(list: &str, root: &str) -> u64 {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(b"thread\0");
    h.update(list.to_ascii_lowercase().as_bytes());
    h.update([0]);
    h.update(root.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// A member's token for one thread, in the "Stop receiving this thread" link of every list
/// copy: 30 bytes, 48 characters of lower-case base32:
///
/// `0x4d (1) | member uid (8) | thread id (8) | mac (13)`
///
/// `mac` is HMAC-SHA256 over the first 17 bytes, the list key and the member's lower-cased
/// address, with the same secret as every other token. It does not expire (like the
/// one-click unsubscribe token) and is not single-use: muting and unmuting are idempotent,
/// and the member may change their mind with the same link. It names the member by its
/// opaque uid and the thread by a hash of its root Message-ID: no address in any URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadToken {
    pub member: u64,
    pub thread: u64,
    mac: [u8; THREAD_MAC_LEN],
}

impl ThreadToken {
    /// Parses the text form (case-insensitive); `None` for anything that is not one.
    pub fn parse(s: &str) -> Option<ThreadToken> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() != THREAD_TOKEN_CHARS {
            return None;
        }
        let b = data_encoding::BASE32_DNSSEC.decode(s.as_bytes()).ok()?;
        if b.len() != THREAD_TOKEN_LEN || b[0] != THREAD_KIND {
            return None;
        }
        Some(ThreadToken {
            member: u64::from_be_bytes(b[1..9].try_into().ok()?),
            thread: u64::from_be_bytes(b[9..17].try_into().ok()?),
            mac: b[17..].try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_parse_verify() {
        let s = Secret::from_bytes([7; 32]);
        let t = s.issue(
            Kind::Subscribe,
            42,
            2_000_000_000,
            "forum@x.org",
            "Jan@Ocmw.be",
        );
        assert_eq!(t.len(), 40);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let p = Token::parse(&t.to_ascii_uppercase()).unwrap();
        assert_eq!(p.kind, Kind::Subscribe);
        assert_eq!(p.id, 42);
        assert!(s.verify(&p, "forum@x.org", "jan@ocmw.be"));
        assert!(!s.verify(&p, "forum@x.org", "an@ocmw.be"));
        assert!(!s.verify(&p, "other@x.org", "jan@ocmw.be"));
        assert!(!Secret::from_bytes([8; 32]).verify(&p, "forum@x.org", "jan@ocmw.be"));
        // Any changed character breaks it.
        let mut forged = t.clone().into_bytes();
        forged[20] = if forged[20] == b'a' { b'b' } else { b'a' };
        let f = Token::parse(std::str::from_utf8(&forged).unwrap());
        assert!(f.is_none_or(|f| !s.verify(&f, "forum@x.org", "jan@ocmw.be")));
        assert!(Token::parse("hello").is_none());
        assert!(!p.expired(1_000));
        assert!(p.expired(2_000_000_001_000));
    }

    #[test]
    fn verp_macs() {
        let s = Secret::from_bytes([7; 32]);
        let m = s.verp_mac("forum@x.org", "Jan@Ocmw.be");
        assert_eq!(m.len(), VERP_MAC_CHARS);
        assert!(m
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(s.verify_verp("forum@x.org", "jan@ocmw.be", &m));
        assert!(s.verify_verp("FORUM@x.org", "JAN@OCMW.BE", &m.to_ascii_uppercase()));
        assert!(!s.verify_verp("forum@x.org", "piet@ocmw.be", &m));
        assert!(!s.verify_verp("other@x.org", "jan@ocmw.be", &m));
        assert!(!Secret::from_bytes([8; 32]).verify_verp("forum@x.org", "jan@ocmw.be", &m));
        assert!(!s.verify_verp("forum@x.org", "jan@ocmw.be", ""));
        assert!(!s.verify_verp("forum@x.org", "jan@ocmw.be", &m[..7]));
        let mut forged = m.into_bytes();
        forged[0] = if forged[0] == b'a' { b'b' } else { b'a' };
        assert!(!s.verify_verp(
            "forum@x.org",
            "jan@ocmw.be",
            std::str::from_utf8(&forged).unwrap()
        ));
    }

    #[test]
    fn thread_tokens() {
        let s = Secret::from_bytes([7; 32]);
        let (l, a) = ("forum@x.org", "Jan@Ocmw.be");
        let uid = s.member_uid(l, a);
        let th = thread_id(l, "vraag-1@ocmw.be");
        assert_eq!(th, thread_id("FORUM@x.org", "vraag-1@ocmw.be"));
        assert_ne!(th, thread_id(l, "vraag-2@ocmw.be"));
        assert_ne!(th, thread_id("other@x.org", "vraag-1@ocmw.be"));
        let t = s.thread_token(uid, th, l, a);
        assert_eq!(t.len(), THREAD_TOKEN_CHARS);
        assert_eq!(t.len(), 48);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        // Deterministic: every copy of the thread carries the same link for one member.
        assert_eq!(t, s.thread_token(uid, th, l, a));
        let p = ThreadToken::parse(&t.to_ascii_uppercase()).unwrap();
        assert_eq!((p.member, p.thread), (uid, th));
        assert!(s.verify_thread(&p, l, "jan@ocmw.be"));
        assert!(s.verify_thread(&p, "Forum@X.org", a));
        assert!(!s.verify_thread(&p, l, "an@ocmw.be"));
        assert!(!s.verify_thread(&p, "other@x.org", a));
        assert!(!Secret::from_bytes([8; 32]).verify_thread(&p, l, a));
        // Another thread or member with the same MAC does not verify.
        let other = ThreadToken {
            thread: th ^ 1,
            ..p.clone()
        };
        assert!(!s.verify_thread(&other, l, a));
        let other = ThreadToken {
            member: uid ^ 1,
            ..p.clone()
        };
        assert!(!s.verify_thread(&other, l, a));
        // Any changed character breaks it; other tokens are not thread tokens.
        for i in [0, 5, 20, 47] {
            let mut f = t.clone().into_bytes();
            f[i] = if f[i] == b'a' { b'b' } else { b'a' };
            let f = ThreadToken::parse(std::str::from_utf8(&f).unwrap());
            assert!(f.is_none_or(|f| !s.verify_thread(&f, l, a)), "{i}");
        }
        assert!(ThreadToken::parse(&s.one_click(uid, l, a)).is_none());
        assert!(Token::parse(&t).is_none());
        assert!(ThreadToken::parse("").is_none());
        assert!(ThreadToken::parse(&t[..47]).is_none());
    }

    #[test]
    fn secret_is_created_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret.key");
        let a = Secret::load_or_create(&p).unwrap();
        let b = Secret::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(a.member_uid("l", "A@b"), b.member_uid("l", "a@b"));
    }
}
