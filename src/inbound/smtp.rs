//! SMTP and LMTP listener (in progress).
