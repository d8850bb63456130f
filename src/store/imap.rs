//! What each IMAP poller has stored.

use super::*;

/// How far an IMAP poller got in its mailbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImapState {
    pub uidvalidity: u32,
    /// The highest UID stored (spooled or quarantined) under this UIDVALIDITY.
    pub last_uid: u32,
}

/// Which IMAP message a stored message is, recorded in the same transaction.
#[derive(Debug, Clone)]
pub struct ImapMark {
    pub account: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
}

impl Store {
    pub fn imap_state(&self, account: &str) -> Result<Option<ImapState>> {
        self.imap
            .get(imap_state_key(account))?
            .map(|v| decode("imap", &v))
            .transpose()
    }

    /// Whether a message with this Message-ID was already stored from this account.
    pub fn imap_seen(&self, account: &str, message_id: &str) -> Result<bool> {
        Ok(self.imap.contains_key(imap_seen_key(account, message_id))?)
    }

    /// Stores a fetched message in the spool (or, with `quarantine`, in the quarantine) and
    /// records its UID and Message-ID for the account, in one transaction; `envelope: None`
    /// records the mark only (a message found to be stored already). Flush before acting
    /// on the server.
    pub fn store_imap(
        &self,
        envelope: Option<Envelope>,
        quarantine: Option<&str>,
        raw: &[u8],
        mark: &ImapMark,
    ) -> Result<()> {
        let id = self.next_id()?;
        let rec = match (&envelope, quarantine) {
            (Some(env), Some(reason)) => Some(encode_with_raw(
                &Quarantined {
                    id,
                    reason: reason.to_string(),
                    envelope: env.clone(),
                    raw: Vec::new(),
                },
                raw,
            )),
            (Some(env), None) => Some(encode_with_raw(env, raw)),
            (None, _) => None,
        };
        let sk = imap_state_key(&mark.account);
        (&self.spool, &self.quarantine, &self.imap)
            .transaction(|(spool, quar, imap)| {
                match (&rec, quarantine) {
                    (Some(r), Some(_)) => {
                        quar.insert(&id.to_be_bytes(), r.as_slice())?;
                    }
                    (Some(r), None) => {
                        spool.insert(&id.to_be_bytes(), r.as_slice())?;
                    }
                    (None, _) => {}
                }
                let mut st = match imap.get(&sk)? {
                    Some(v) => decode::<ImapState>("imap", &v)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => ImapState {
                        uidvalidity: mark.uidvalidity,
                        last_uid: 0,
                    },
                };
                if st.uidvalidity != mark.uidvalidity {
                    st = ImapState {
                        uidvalidity: mark.uidvalidity,
                        last_uid: 0,
                    };
                }
                st.last_uid = st.last_uid.max(mark.uid);
                imap.insert(sk.as_slice(), encode(&st))?;
                if let Some(mid) = &mark.message_id {
                    imap.insert(imap_seen_key(&mark.account, mid), &mark.uid.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(tx_err)
    }
}
