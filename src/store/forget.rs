//! Forgetting an address (GDPR art. 17): the store's side. What replaces the address in
//! a message is the caller's business ([`Relabel`], see `crate::forget`).

use super::*;

/// What [`Store::forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetReport {
    pub member: bool,
    pub records: usize,
    pub relabelled: usize,
    pub posts_deleted: usize,
}

pub(super) fn forget_key(list: &str, addr: &str) -> Vec<u8> {
    [
        b"forget\0".as_slice(),
        list_prefix(list).as_slice(),
        addr.to_ascii_lowercase().as_bytes(),
    ]
    .concat()
}

/// How a forgotten address is replaced in stored bytes; implemented by `crate::forget`,
/// which knows MIME. The store knows only its own record layouts.
pub trait Relabel {
    /// The address being forgotten.
    fn addr(&self) -> &str;
    /// Its own posts are deleted rather than relabelled.
    fn delete_posts(&self) -> bool;
    /// The neutral author written in place of the member: (name, address).
    fn label(&self) -> (&str, &str);
    /// Plain bytes (a record's metadata, a Message-ID) with the address replaced where it
    /// stands as a whole address (and the name where a name stands); `None` when neither
    /// occurs.
    fn relabel(&self, raw: &[u8]) -> Option<Vec<u8>>;
    /// A whole message, its encoded parts included; `None` when nothing changed.
    fn relabel_message(&self, raw: &[u8]) -> Option<Vec<u8>>;
    /// One of the member's own posts: the author fields become the label.
    fn relabel_author(&self, raw: &[u8]) -> Vec<u8>;
}

/// A record stored with its raw message (`<u32 length><json><raw>`), with metadata and
/// message each relabelled and the length prefix written anew; `None` when unchanged.
pub(super) fn relabel_record(f: &dyn Relabel, v: &[u8]) -> Option<Vec<u8>> {
    let n = u32::from_be_bytes(v.get(..4)?.try_into().ok()?) as usize;
    let (head, raw) = (v.get(4..4 + n)?, v.get(4 + n..)?);
    let (h2, r2) = (f.relabel(head), f.relabel_message(raw));
    if h2.is_none() && r2.is_none() {
        return None;
    }
    let head = h2.unwrap_or_else(|| head.to_vec());
    let raw = r2.unwrap_or_else(|| raw.to_vec());
    let mut out = Vec::with_capacity(4 + head.len() + raw.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&raw);
    Some(out)
}

impl Store {
    /// Removes every trace of `addr` from `list`'s data (GDPR art. 17): the member record
    /// and its one-click id, pending requests, queued and failed deliveries, queued mail to
    /// the address, rate-limit counters, join/leave events, its held posts; in every stored
    /// post, digest, queued, held, quarantined and spooled mail the address (and `name`,
    /// when given) becomes `label_addr` / `label_name`, and its own posts get
    /// `label_name <label_addr>` as author, or are deleted with `delete_posts`. The
    /// archive's index is derived and must be rebuilt after. Deleted records stay in
    /// sled's log files until [`Store::compact`].
    pub fn forget(&self, list: &str, f: &dyn Relabel) -> Result<ForgetReport> {
        let mut r = ForgetReport::default();
        let addr_lc = f.addr().to_ascii_lowercase();
        let is = |a: &str| a.eq_ignore_ascii_case(f.addr());
        r.member = self.remove_member(list, f.addr())?;
        for kv in self.pending.iter() {
            let (k, v) = kv?;
            if decode::<Pending>("pending", &v).is_ok_and(|p| is(&p.address)) {
                self.pending.remove(k)?;
                r.records += 1;
            }
        }
        for tree in [&self.queue, &self.failures] {
            for k in tree.iter().keys() {
                let k = k?;
                if QueueKey::decode(&k).is_some_and(|q| is(&q.addr)) {
                    tree.remove(k)?;
                    r.records += 1;
                }
            }
        }
        for k in self.ratelimit.iter().keys() {
            let k = k?;
            if k.ends_with(addr_lc.as_bytes()) {
                self.ratelimit.remove(k)?;
                r.records += 1;
            }
        }
        for kv in self.events.iter() {
            let (k, v) = kv?;
            if decode::<MemberEvent>("events", &v).is_ok_and(|e| is(&e.address)) {
                self.events.remove(k)?;
                r.records += 1;
            }
        }
        // Mail waiting to go out: to the address, gone; about it, relabelled.
        for kv in self.outmail.iter() {
            let (k, v) = kv?;
            let (mut m, raw) = decode_with_raw::<OutMail>("outmail", &v)?;
            if m.kind == "forgotten" {
                // The last word to the member: that they are forgotten.
                continue;
            }
            if m.rcpts.iter().any(|a| is(a)) {
                self.outmail.remove(k)?;
                r.records += 1;
            } else if let Some(new) = f.relabel_message(&raw) {
                m.raw = Vec::new();
                self.outmail.insert(k, encode_with_raw(&m, &new))?;
                r.relabelled += 1;
            }
        }
        // Held posts from the address go; everything else that mentions it (others' held
        // posts, quarantined and spooled mail) is relabelled, never dropped.
        for kv in self.held.iter() {
            let (k, v) = kv?;
            let (h, _) = decode_with_raw::<Held>("held", &v)?;
            if is(&h.from_addr) {
                self.held.remove(k)?;
                r.records += 1;
            } else if let Some(new) = relabel_record(f, &v) {
                self.held.insert(k, new)?;
                r.relabelled += 1;
            }
        }
        for tree in [&self.quarantine, &self.spool] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                if let Some(new) = relabel_record(f, &v) {
                    tree.insert(k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        for kv in self.posts.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            let mut meta: PostMeta = decode("posts", &v)?;
            let own = is(&meta.from_addr);
            if own && f.delete_posts() {
                self.posts.remove(&k)?;
                self.raw.remove(&k)?;
                self.msgid.remove(msgid_key(list, &meta.message_id))?;
                r.posts_deleted += 1;
                continue;
            }
            // Message-IDs made from an address (git send-email's `...git.jan@example.org`)
            // are relabelled like the copies of them in the raw messages, so that replies
            // still find their parents.
            let new_id = f
                .relabel(meta.message_id.as_bytes())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if let Some(id) = &new_id {
                if let Some(v) = self.msgid.remove(msgid_key(list, &meta.message_id))? {
                    self.msgid.insert(msgid_key(list, id), v)?;
                }
                meta.message_id = id.clone();
            }
            if own {
                let (label_name, label_addr) = f.label();
                meta.from_addr = label_addr.to_string();
                meta.from_name = Some(label_name.to_string());
            }
            if own || new_id.is_some() {
                self.posts.insert(&k, encode(&meta))?;
            }
            if let Some(raw) = self.raw.get(&k)? {
                let new = if own {
                    Some(f.relabel_author(&raw))
                } else {
                    f.relabel_message(&raw)
                };
                if let Some(new) = new {
                    self.raw.insert(&k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        for kv in self.digests.scan_prefix(list_prefix(list)) {
            let (k, v) = kv?;
            if k.last() != Some(&b'm') {
                if let Some(new) = f.relabel_message(&v) {
                    self.digests.insert(k, new)?;
                    r.relabelled += 1;
                }
            }
        }
        self.flush()?;
        Ok(r)
    }

    /// Forget requests confirmed by mail or on the web, not yet carried out: (list, addr).
    pub fn forget_requests(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for k in self.meta.scan_prefix(b"forget\0").keys() {
            let k = k?;
            let rest = String::from_utf8_lossy(&k[b"forget\0".len()..]).into_owned();
            if let Some((l, a)) = rest.split_once('\0') {
                out.push((l.to_string(), a.to_string()));
            }
        }
        Ok(out)
    }

    pub fn forget_request_done(&self, list: &str, addr: &str) -> Result<()> {
        self.meta.remove(forget_key(list, addr))?;
        self.flush()
    }

    /// Rewrites the whole database into a fresh one and puts it in place of the old, so
    /// that nothing deleted survives in sled's log files (sled reclaims space only
    /// eventually). Needs the store closed by everyone else (the daemon stopped).
    pub fn compact(path: &Path) -> Result<()> {
        let tmp = path.with_extension("compact");
        let old = path.with_extension("old");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(&old);
        {
            let from = Store::open(path)?;
            let to = sled::Config::new().path(&tmp).open()?;
            to.import(from.db.export());
            to.flush()?;
        }
        let io = |what: &'static str, e: std::io::Error| StoreError::Io { what, source: e };
        std::fs::rename(path, &old)
            .map_err(|e| io("compaction: moving the old database aside", e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| io("compaction: putting the new database in place", e))?;
        std::fs::remove_dir_all(&old)
            .map_err(|e| io("compaction: removing the old database", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forget::Forget;

    #[test]
    fn forget_relabels_records_and_keeps_them_readable() {
        let f = Forget {
            addr: "Jan@Ocmw.be".into(),
            name: Some("Jan Peeters".into()),
            label_addr: "forgotten-member@invalid".into(),
            label_name: "Former member".into(),
            delete_posts: false,
        };
        let env = Envelope {
            mail_from: "jan@ocmw.be".into(),
            rcpt: "forum@x.org".into(),
            source: "smtp".into(),
            received_ms: 1,
            approved: false,
        };
        let rec = encode_with_raw(
            &env,
            b"From: Jan Peeters <JAN@ocmw.be>\r\n\r\nhoi jan@ocmw.be\r\n",
        );
        let new = relabel_record(&f, &rec).unwrap();
        let (e, raw) = decode_with_raw::<Envelope>("spool", &new).unwrap();
        assert_eq!(e.mail_from, "forgotten-member@invalid");
        assert_eq!(
            raw,
            b"From: Former member <forgotten-member@invalid>\r\n\r\nhoi forgotten-member@invalid\r\n"
        );
        assert!(relabel_record(&f, &encode_with_raw(&env.clone(), b"x")).is_some());
        let other = Envelope {
            mail_from: "an@ocmw.be".into(),
            ..env
        };
        assert!(relabel_record(&f, &encode_with_raw(&other, b"nothing here")).is_none());
    }
}
