//! `vraagbaak inject LIST`: one message on standard input, for an MTA's pipe transport
//! (Postfix `pipe`, or an alias `forum: "|vraagbaak inject forum"`).
//!
//! The exit code follows sysexits(3), so the MTA does the right thing: 0 stored durably,
//! 65 refused (bounced to the sender), 67 no such list, 75 try again later (the MTA keeps
//! the message queued).

use crate::admin::{EX_DATAERR, EX_TEMPFAIL};
use tokio::io::AsyncReadExt;

/// Reads standard input up to `max` bytes. `Err` carries the sysexits code and a reason.
pub async fn read_stdin(max: usize) -> Result<Vec<u8>, (i32, String)> {
    let mut raw = Vec::new();
    let mut stdin = tokio::io::stdin().take(max as u64 + 1);
    stdin
        .read_to_end(&mut raw)
        .await
        .map_err(|e| (EX_TEMPFAIL, format!("cannot read standard input: {e}")))?;
    if raw.len() > max {
        return Err((
            EX_DATAERR,
            format!("message larger than the limit of {max} bytes"),
        ));
    }
    // An MTA pipe may hand us an mbox "From " line first; it is not part of the message.
    if raw.starts_with(b"From ") {
        let end = raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| i + 1);
        raw.drain(..end);
    }
    Ok(raw)
}
