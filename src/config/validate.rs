//! Checking a configuration after it is read: one function per section, each error naming
//! the file, the key and what was expected.

use super::*;

/// An IP address and port, or empty (not listening).
fn check_listen(file: &str, key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() {
        return Ok(());
    }
    v.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| ConfigError {
            file: file.to_string(),
            key: key.into(),
            message: format!(
                "expected an IP address and port such as \"127.0.0.1:2525\", got {v:?}"
            ),
        })
}

impl Config {
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.check_smtp_and_delivery(file)?;
        self.check_http(file)?;
        self.check_commands(file)?;
        self.check_lists(file)?;
        self.check_imap(file)?;
        self.check_archive(file)?;
        self.check_list_addresses(file)?;
        Ok(())
    }

    /// The listeners, the SMTP limits and the relay: `[smtp]`, `[lmtp]`, `[inject]`,
    /// `[delivery]`.
    fn check_smtp_and_delivery(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        check_listen(file, "smtp.listen", &self.smtp.listen)?;
        if let Some(l) = &self.lmtp {
            check_listen(file, "lmtp.listen", &l.listen)?;
        }
        if let Some(g) = &self.inject.group {
            group_id(g).map_err(|e| {
                err(
                    "inject.group".into(),
                    format!("{e}; expected a group name or number"),
                )
            })?;
        }
        if self.inject.timeout.is_zero() {
            return Err(err(
                "inject.timeout".into(),
                "expected a duration above zero, such as \"60s\"".into(),
            ));
        }
        if self.smtp.hostname.is_empty() || self.smtp.hostname.contains(char::is_whitespace) {
            return Err(err(
                "smtp.hostname".into(),
                "expected a host name such as \"lists.example.org\"".into(),
            ));
        }
        for (key, d) in [
            ("smtp.idle_timeout", self.smtp.idle_timeout),
            ("smtp.session_timeout", self.smtp.session_timeout),
            ("delivery.timeout", self.delivery.timeout),
            ("delivery.retry_base", self.delivery.retry_base),
        ] {
            if d < Duration::from_secs(1) {
                return Err(err(key.into(), "expected a duration of at least 1s".into()));
            }
        }
        // A retry must be possible before giving up, and the backoff must be able to grow.
        if self.delivery.retry_max < self.delivery.retry_base {
            return Err(err(
                "delivery.retry_max".into(),
                format!(
                    "expected at least delivery.retry_base ({:?}), got {:?}",
                    self.delivery.retry_base, self.delivery.retry_max
                ),
            ));
        }
        if self.delivery.give_up_after < self.delivery.retry_base {
            return Err(err(
                "delivery.give_up_after".into(),
                format!(
                    "expected at least delivery.retry_base ({:?}), so that a temporary \
                     failure is retried at least once; got {:?}",
                    self.delivery.retry_base, self.delivery.give_up_after
                ),
            ));
        }
        if self.smtp.data_memory < self.smtp.max_message_size {
            return Err(err(
                "smtp.data_memory".into(),
                format!(
                    "expected at least smtp.max_message_size ({}), so that one message of \
                     that size fits; got {}",
                    self.smtp.max_message_size, self.smtp.data_memory
                ),
            ));
        }
        if self.smtp.max_message_size < 1024 {
            return Err(err(
                "smtp.max_message_size".into(),
                "expected a size in bytes of at least 1024".into(),
            ));
        }
        for (key, v) in [
            ("smtp.max_recipients", self.smtp.max_recipients),
            ("smtp.max_connections", self.smtp.max_connections),
            (
                "smtp.max_connections_per_ip",
                self.smtp.max_connections_per_ip,
            ),
            ("delivery.connections", self.delivery.connections),
        ] {
            if v == 0 {
                return Err(err(key.into(), "expected a number of at least 1".into()));
            }
        }
        Relay::parse(&self.delivery.relay).map_err(|m| err("delivery.relay".into(), m))?;
        Ok(())
    }

    /// `[http]`: the web endpoint.
    fn check_http(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        if let Some(h) = &self.http {
            check_listen(file, "http.listen", &h.listen)?;
            if h.max_connections == 0 || h.max_connections_per_ip == 0 {
                return Err(err(
                    "http.max_connections".into(),
                    "expected numbers of at least 1 (max_connections, max_connections_per_ip)"
                        .into(),
                ));
            }
            if h.idle_timeout < Duration::from_secs(1) {
                return Err(err(
                    "http.idle_timeout".into(),
                    "expected a duration of at least 1s".into(),
                ));
            }
            let b = h.base_url.trim_end_matches('/');
            if !(b.starts_with("https://") || b.starts_with("http://"))
                || b.len() <= "https://".len()
                || b.contains(char::is_whitespace)
            {
                return Err(err(
                    "http.base_url".into(),
                    format!(
                        "expected a URL such as \"https://lists.example.org\", got {:?}",
                        h.base_url
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[commands]`: confirmations and rate limits.
    fn check_commands(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        for (key, d) in [
            ("commands.confirm_expiry", self.commands.confirm_expiry),
            ("commands.rate_window", self.commands.rate_window),
        ] {
            if d < Duration::from_secs(1) {
                return Err(err(key.into(), "expected a duration of at least 1s".into()));
            }
        }
        if self.commands.max_commands == 0 {
            return Err(err(
                "commands.max_commands".into(),
                "expected a number of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `[[list]]`: each list on its own.
    fn check_lists(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let mut seen: Vec<String> = Vec::new();
        for (i, l) in self.lists.iter().enumerate() {
            let k = |f: &str| format!("list[{i}].{f}");
            if !valid_address(&l.address) || l.address.contains('+') {
                return Err(err(
                    k("address"),
                    format!(
                        "expected a list address such as \"forum@lists.example.org\", got {:?}",
                        l.address
                    ),
                ));
            }
            // The local part names the list's folders and files: a safe name only.
            let local = l.local();
            if local.starts_with(['.', '-'])
                || local.contains("..")
                || !local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                return Err(err(
                    k("address"),
                    format!(
                        "expected a local part of letters, digits, '.', '-' and '_' (it names \
                         the list's archive folder), got {local:?}"
                    ),
                ));
            }
            if let Some(j) = self.lists[..i]
                .iter()
                .position(|o| o.local().eq_ignore_ascii_case(local))
            {
                return Err(err(
                    k("address"),
                    format!(
                        "expected a local part of its own: list[{j}] ({}) has {local:?} too, \
                         and the archive names a list's folder by it",
                        self.lists[j].address
                    ),
                ));
            }
            if l.dkim_selector.is_some() != l.dkim_key.is_some() {
                let missing = if l.dkim_key.is_none() {
                    "dkim_key"
                } else {
                    "dkim_selector"
                };
                return Err(err(
                    k(missing),
                    "expected both dkim_selector and dkim_key (or neither)".into(),
                ));
            }
            if let Some(sel) = &l.dkim_selector {
                if sel.is_empty()
                    || !sel.split('.').all(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
                {
                    return Err(err(
                        k("dkim_selector"),
                        format!("expected a DNS label such as \"vb1\", got {sel:?}"),
                    ));
                }
            }
            if !l.bounce_score_threshold.is_finite() || l.bounce_score_threshold <= 0.0 {
                return Err(err(
                    k("bounce_score_threshold"),
                    "expected a number above 0 (Mailman's default is 5.0)".into(),
                ));
            }
            let lower = l.address.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(err(
                    k("address"),
                    format!(
                        "expected each list address once, {:?} is repeated",
                        l.address
                    ),
                ));
            }
            seen.push(lower);
            if l.name.trim().is_empty() {
                return Err(err(k("name"), "expected a non-empty list name".into()));
            }
            // The name goes into headers (From, List-Id) and every text: one line.
            if l.name.chars().any(char::is_control) {
                return Err(err(
                    k("name"),
                    format!(
                        "expected a name on one line, without control characters, got {:?}",
                        l.name
                    ),
                ));
            }
            for (j, o) in l.owners.iter().enumerate() {
                if !valid_address(o) {
                    return Err(err(
                        format!("list[{i}].owners[{j}]"),
                        format!("expected an e-mail address, got {o:?}"),
                    ));
                }
            }
            if let Some(p) = &l.subject_prefix {
                if p.contains(['\r', '\n']) {
                    return Err(err(k("subject_prefix"), "expected a single line".into()));
                }
            }
        }
        Ok(())
    }

    /// `[[imap]]`: mailboxes read for lists.
    fn check_imap(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let mut names: Vec<&str> = Vec::new();
        for (i, a) in self.imap.iter().enumerate() {
            let k = |f: &str| format!("imap[{i}].{f}");
            if a.name.is_empty()
                || a.name.contains(char::is_whitespace)
                || names.contains(&a.name.as_str())
            {
                return Err(err(
                    k("name"),
                    format!("expected a unique name without spaces, got {:?}", a.name),
                ));
            }
            names.push(&a.name);
            if a.host.is_empty() {
                return Err(err(k("host"), "expected a host name".into()));
            }
            let loopback = matches!(a.host.as_str(), "localhost" | "127.0.0.1" | "::1")
                || a.host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if a.tls == ImapTls::None && !loopback {
                return Err(err(
                    k("tls"),
                    "expected \"implicit\" or \"starttls\": \"none\" is only allowed to a loopback address".into(),
                ));
            }
            if a.password.is_some() == a.password_file.is_some() {
                return Err(err(
                    k("password"),
                    "expected exactly one of `password` and `password_file`".into(),
                ));
            }
            if let Some(l) = &a.list {
                if self.list(l).is_none() {
                    return Err(err(
                        k("list"),
                        format!("expected a configured list, got {l:?}"),
                    ));
                }
            }
            if a.poll_interval < Duration::from_secs(1) {
                return Err(err(
                    k("poll_interval"),
                    "expected a duration of at least 1s".into(),
                ));
            }
        }
        Ok(())
    }

    /// `[archive]`: the public and private folders apart.
    fn check_archive(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        {
            // Private archives are never written where a web server serves the public one.
            let norm = |p: PathBuf| -> PathBuf {
                let abs = if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir().unwrap_or_default().join(p)
                };
                let mut out = PathBuf::new();
                for c in abs.components() {
                    match c {
                        std::path::Component::ParentDir => {
                            out.pop();
                        }
                        std::path::Component::CurDir => {}
                        c => out.push(c),
                    }
                }
                // Through symlinks: the part that exists, resolved, and the rest below it.
                let mut base = out.clone();
                let mut rest = Vec::new();
                while !base.exists() {
                    match (base.file_name().map(|f| f.to_os_string()), base.parent()) {
                        (Some(f), Some(p)) => {
                            rest.push(f);
                            base = p.to_path_buf();
                        }
                        _ => break,
                    }
                }
                let mut resolved = std::fs::canonicalize(&base).unwrap_or(base);
                for f in rest.into_iter().rev() {
                    resolved.push(f);
                }
                resolved
            };
            let (public, private) = (norm(self.archive_dir()), norm(self.archive_private_dir()));
            if private.starts_with(&public) || public.starts_with(&private) {
                return Err(err(
                    "archive.private_dir".into(),
                    format!(
                        "expected a directory outside the public archive {}, got {}",
                        public.display(),
                        private.display()
                    ),
                ));
            }
            if self.archive.subject_window.is_zero() {
                return Err(err(
                    "archive.subject_window".into(),
                    "expected a duration of at least 1s".into(),
                ));
            }
        }
        Ok(())
    }

    /// Lists together: no list address looks like a sub-address of another.
    fn check_list_addresses(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        // A list's sub-addresses (forum-request@ ...) must not collide with another list.
        for a in &self.lists {
            for b in &self.lists {
                if a.domain().eq_ignore_ascii_case(b.domain())
                    && a.local() != b.local()
                    && b.local()
                        .to_ascii_lowercase()
                        .starts_with(&format!("{}-", a.local().to_ascii_lowercase()))
                {
                    let i = self.lists.iter().position(|l| l.address == b.address);
                    return Err(err(
                        format!("list[{}].address", i.unwrap_or(0)),
                        format!(
                            "expected an address that does not look like a sub-address of {:?}",
                            a.address
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
