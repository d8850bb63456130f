//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Every error names the file, the key (as a path such as `list[0].posting`) and what was
//! expected. Unknown keys are errors, so a typo never silently falls back to a default.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod validate;

/// The default configuration, compiled into the binary so that `vraagbaak serve` runs on a
/// fresh checkout (and from any directory) without further setup.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/vraagbaak.toml");
/// The name under which the embedded default is reported in errors.
pub const EMBEDDED_NAME: &str = "<embedded config/vraagbaak.toml>";

/// A configuration error: which file, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() || self.key == "." {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: key `{}`: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the store, quarantine, outbox and archive live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub lmtp: Option<LmtpConfig>,
    pub delivery: DeliveryConfig,
    /// The web endpoint for one-click unsubscribe and confirmation links; none when absent.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    #[serde(default)]
    pub commands: CommandsConfig,
    /// A directory with `nl/` and `en/` template files that replace the shipped texts of
    /// the same name (see `config/templates/`); files missing there fall back to the shipped ones.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    #[serde(rename = "list", default)]
    pub lists: Vec<ListConfig>,
    /// Mailboxes polled over IMAP, for list addresses that live at a provider.
    #[serde(rename = "imap", default)]
    pub imap: Vec<ImapConfig>,
    #[serde(default)]
    pub archive: ArchiveConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub inject: InjectConfig,
}

/// Pipe mode (`vraagbaak inject`): the socket through which an MTA's pipe command, running
/// as another user than the daemon, hands a message to the daemon. It takes only messages
/// (never an administrative command), so opening it gives no more than connecting to the
/// SMTP listener on the loopback does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    /// The socket; default `<data_dir>/inject.sock`. Every directory above it must be
    /// searchable by the pipe's user.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// A group (name or number) that may use the socket (mode 0660); without one, every
    /// local user may (mode 0666), as every local user may connect to the SMTP listener.
    #[serde(default)]
    pub group: Option<String>,
    /// How long `inject` waits for the daemon before it gives up with exit 75 (the MTA
    /// keeps the message and tries again); well below Postfix's `command_time_limit`.
    #[serde(default = "default_inject_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            socket: None,
            group: None,
            timeout: default_inject_timeout(),
        }
    }
}

fn default_inject_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The id of a group named in `/etc/group` (or given as a number). Read by hand: it is one
/// line format, and the crates that wrap getgrnam(3) need `unsafe` or libc bindings for it.
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group {group:?} in /etc/group"))
}

/// DNS lookups (DMARC policies of authors' domains).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Answer only from `records`, never from the network (for tests and closed networks:
    /// a name not in the table then has no record).
    #[serde(default)]
    pub offline: bool,
    /// Per query, before a lookup counts as failed. Also the longest a batch of posts
    /// waits for its authors' DMARC policies: a resolver that never answers delays mail by
    /// this much, then counts as p=reject.
    #[serde(default = "default_dns_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Name servers to ask (`"127.0.0.1:53"`), instead of the system's resolv.conf.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// Fixed TXT answers, consulted before the resolver:
    /// `"_dmarc.example.com" = "v=DMARC1; p=reject"`.
    #[serde(default)]
    pub records: std::collections::BTreeMap<String, TxtValue>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            offline: false,
            timeout: default_dns_timeout(),
            servers: Vec::new(),
            records: Default::default(),
        }
    }
}

fn default_dns_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One TXT string or several (several records for one name).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TxtValue {
    One(String),
    Many(Vec<String>),
}

impl TxtValue {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            TxtValue::One(s) => vec![s],
            TxtValue::Many(v) => v,
        }
    }
}

/// Where and how the static HTML archive is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The public web root: one folder per list with `archive = "public"`.
    /// Default `<data_dir>/archive`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Where lists with `archive = "private"` are written; never inside `dir`.
    /// Default `<data_dir>/archive-private`.
    #[serde(default)]
    pub private_dir: Option<PathBuf>,
    /// Templates (`archive-templates/`); files missing there fall back to the built-in ones.
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// How authors and addresses in bodies are shown: "hidden" (names only) or "local"
    /// (`name@…`).
    #[serde(default)]
    pub addresses: crate::archive::render::AddressMode,
    /// Messages without References or In-Reply-To join a thread with the same subject
    /// only when they are this close in time.
    #[serde(default = "default_subject_window", deserialize_with = "de_duration")]
    pub subject_window: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            dir: None,
            private_dir: None,
            templates: None,
            addresses: Default::default(),
            subject_window: default_subject_window(),
        }
    }
}

fn default_subject_window() -> Duration {
    Duration::from_secs(30 * 86_400)
}

/// Who can read a list's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// Written under `[archive] dir`, for a web server to serve to everybody.
    Public,
    /// Written under `[archive] private_dir`, outside the public web root.
    Private,
    /// Not archived.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain connection upgraded with STARTTLS (port 143).
    Starttls,
    /// No TLS: only allowed to a loopback address.
    None,
}

/// What is done with a message on the server once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapAfter {
    Delete,
    Move(String),
    /// Marked `\Seen` and left where it is.
    Flag,
}

/// A password that never shows in logs, errors or `Debug` output.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// The account's name, for `vraagbaak imap test NAME` and the logs.
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_imap_tls")]
    pub tls: ImapTls,
    pub username: String,
    #[serde(default)]
    pub password: Option<Password>,
    /// A file holding the password (one line); read at start-up.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the public roots (a provider with a
    /// private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// The list the mailbox feeds; without it, the list is found from the recipient headers
    /// (Delivered-To, X-Original-To, To, Cc).
    #[serde(default)]
    pub list: Option<String>,
    /// `"delete"`, `"move:Folder"` or `"flag"`.
    #[serde(default = "default_after", deserialize_with = "de_after")]
    pub after: ImapAfter,
    /// How often to look for new mail when the server has no IDLE (and at most how long
    /// an IDLE waits before looking anyway).
    #[serde(default = "default_poll_interval", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
}

impl ImapConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            ImapTls::Implicit => 993,
            _ => 143,
        })
    }

    /// The password, from `password` or `password_file`; the error never contains it.
    pub fn read_password(&self) -> Result<String, String> {
        if let Some(p) = &self.password {
            return Ok(p.0.clone());
        }
        match &self.password_file {
            Some(f) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read password_file {}: {e}", f.display())),
            None => Err("expected `password` or `password_file`".into()),
        }
    }
}

fn default_imap_tls() -> ImapTls {
    ImapTls::Implicit
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_after() -> ImapAfter {
    ImapAfter::Flag
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}

fn de_after<'de, D: Deserializer<'de>>(d: D) -> Result<ImapAfter, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "delete" => Ok(ImapAfter::Delete),
        "flag" => Ok(ImapAfter::Flag),
        m if m.starts_with("move:") && m.len() > 5 => Ok(ImapAfter::Move(m[5..].to_string())),
        _ => Err(de::Error::custom(format!(
            "expected \"delete\", \"move:Folder\" or \"flag\", got {s:?}"
        ))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` the endpoint listens on (behind a TLS-terminating proxy in production).
    pub listen: String,
    /// The public URL of the endpoint as members reach it, `https://lists.example.org`.
    pub base_url: String,
    /// Connections open at once; more are closed at once (the descriptors they would take
    /// belong to the mail side and the control socket).
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
    /// Connections from one client address (a proxy in front counts as one).
    #[serde(default = "default_http_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// A connection that sends nothing for this long (a request's headers included) is
    /// closed.
    #[serde(
        default = "default_http_idle_timeout",
        deserialize_with = "de_duration"
    )]
    pub idle_timeout: Duration,
}

/// Mail commands, confirmations and the limits that keep the list from being used to
/// mail-bomb a stranger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// How long a confirmation token stays valid.
    #[serde(default = "default_confirm_expiry", deserialize_with = "de_duration")]
    pub confirm_expiry: Duration,
    /// The window the limits below count in.
    #[serde(default = "default_rate_window", deserialize_with = "de_duration")]
    pub rate_window: Duration,
    /// Confirmation requests (and "already a member" notices) one address receives per window.
    #[serde(default = "default_max_confirmations_per_address")]
    pub max_confirmations_per_address: u32,
    /// Confirmation requests one requester may cause per window, over all addresses.
    #[serde(default = "default_max_confirmations_per_requester")]
    pub max_confirmations_per_requester: u32,
    /// Confirmation requests the list sends per hour, over all addresses: a ceiling for
    /// a flood of forged requests spread over many addresses.
    #[serde(default = "default_max_confirmations_per_hour")]
    pub max_confirmations_per_hour: u32,
    /// Answers to commands (help, results, errors) one address receives per window.
    #[serde(default = "default_max_replies_per_address")]
    pub max_replies_per_address: u32,
    /// Commands read from one mail; the rest is ignored, and the answer says so.
    #[serde(default = "default_max_commands")]
    pub max_commands: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            confirm_expiry: default_confirm_expiry(),
            rate_window: default_rate_window(),
            max_confirmations_per_address: default_max_confirmations_per_address(),
            max_confirmations_per_requester: default_max_confirmations_per_requester(),
            max_confirmations_per_hour: default_max_confirmations_per_hour(),
            max_replies_per_address: default_max_replies_per_address(),
            max_commands: default_max_commands(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `host:port` to listen on; an empty string disables the SMTP listener.
    pub listen: String,
    /// The name this server gives in its greeting and EHLO.
    pub hostname: String,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Sessions one client address may hold at once (Postfix in front opens up to its
    /// destination concurrency, 20 by default).
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// The longest a session may last, however busy: a client that trickles a byte per
    /// idle period cannot hold a slot for ever.
    #[serde(default = "default_session_timeout", deserialize_with = "de_duration")]
    pub session_timeout: Duration,
    /// Bytes all messages being received may hold together; beyond it a message is
    /// deferred with `452`. At least `max_message_size`.
    #[serde(default = "default_data_memory")]
    pub data_memory: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// `outbox:DIR` or `smtp://host:port`.
    pub relay: String,
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// First retry delay after a temporary failure; doubled each attempt up to `retry_max`.
    #[serde(default = "default_retry_base", deserialize_with = "de_duration")]
    pub retry_base: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// After this long in the queue a temporarily failing recipient is given up on.
    #[serde(default = "default_give_up_after", deserialize_with = "de_duration")]
    pub give_up_after: Duration,
    /// Timeout of one relay command (connect, EHLO, MAIL, RCPT, DATA).
    #[serde(default = "default_relay_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Posting {
    Members,
    Open,
    Moderated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTo {
    List,
    Author,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Nl,
    En,
}

impl ListConfig {
    /// What this list's archive masks.
    pub fn redaction(&self) -> crate::redact::Redact {
        crate::redact::Redact::from_kinds(&self.redact)
    }
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::Nl => "nl",
            Language::En => "en",
        }
    }
    pub fn from_code(s: &str) -> Option<Language> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nl" | "nederlands" | "dutch" | "vlaams" => Some(Language::Nl),
            "en" | "english" | "engels" => Some(Language::En),
            _ => None,
        }
    }
}

/// How owners hear of members joining and leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOwners {
    /// One mail per join or leave.
    Each,
    /// One summary a day (nothing when nothing happened).
    Daily,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The posting address, `forum@lists.example.org`.
    pub address: String,
    pub name: String,
    #[serde(default = "default_language")]
    pub language: Language,
    #[serde(default = "default_posting")]
    pub posting: Posting,
    #[serde(default)]
    pub subject_prefix: Option<String>,
    #[serde(default = "default_reply_to")]
    pub reply_to: ReplyTo,
    #[serde(default)]
    pub owners: Vec<String>,
    /// Keyword tags: a question whose subject holds one of these words gets that tag, as
    /// if it were written `#word`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When a new question is accepted, its asker alone gets a short mail with up to five
    /// earlier questions like it (solved first), when any is similar enough.
    #[serde(default)]
    pub suggest_similar: bool,
    /// Clients' identifiers masked in everything the archive publishes (pages, downloads,
    /// mbox, Atom, search index): "rijksregisternummer", "rekeningnummer" (IBAN and the old
    /// Belgian form), "telefoonnummer". All three by default; `[]` masks none.
    #[serde(default = "default_redact")]
    pub redact: Vec<crate::redact::Kind>,
    /// A post that carries a valid national number or account: "mask" (it goes out, the
    /// archive masks it, and the poster alone is told so) or "hold" (it waits until the
    /// poster confirms it by reply; the owners are not shown it).
    #[serde(default)]
    pub pii_posts: PiiPosts,
    /// The archive's public URL, for List-Archive; omitted when absent.
    #[serde(default)]
    pub archive_url: Option<String>,
    /// Extra footer text; the unsubscribe address is always added.
    #[serde(default)]
    pub footer: Option<String>,
    /// Owners are told of joins and leaves: "each", "daily" or "none".
    #[serde(default = "default_notify_owners")]
    pub notify_owners: NotifyOwners,
    /// One line about the list, for `info` and the welcome text.
    #[serde(default)]
    pub description: Option<String>,
    /// Who can read the web archive: "public", "private" (the default: these lists are
    /// often about clients) or "off".
    #[serde(default = "default_archive_mode")]
    pub archive: ArchiveMode,
    // Bounce handling, with the names and defaults of Mailman 3's list settings.
    /// Read bounces and keep scores at all.
    #[serde(default = "default_true")]
    pub process_bounces: bool,
    /// Delivery to a member is disabled when the score reaches this (hard bounce 1.0, soft
    /// 0.5, at most one bounce counted per day).
    #[serde(default = "default_bounce_threshold")]
    pub bounce_score_threshold: f64,
    /// A score is forgotten when no bounce came for this long.
    #[serde(default = "default_week", deserialize_with = "de_duration")]
    pub bounce_info_stale_after: Duration,
    /// Notices a disabled member gets (the first when disabled) before being removed.
    #[serde(default = "default_bounce_warnings")]
    pub bounce_you_are_disabled_warnings: u32,
    /// Time between those notices, and from the last one to the removal.
    #[serde(default = "default_week", deserialize_with = "de_duration")]
    pub bounce_you_are_disabled_warnings_interval: Duration,
    /// The owners hear when a member is disabled / removed for bouncing.
    #[serde(default = "default_true")]
    pub bounce_notify_owner_on_disable: bool,
    #[serde(default = "default_true")]
    pub bounce_notify_owner_on_removal: bool,
    /// When the From of a list copy becomes the list's own address (DMARC, RFC 7489 and
    /// RFC 7960): "never", "dmarc" (when the author's domain publishes p=quarantine or
    /// p=reject, or its policy cannot be looked up) or "always".
    #[serde(default = "default_from_rewrite")]
    pub from_rewrite: FromRewrite,
    /// Digests for members who ask for them (`set digest on`): "daily", "weekly" or "off"
    /// (then every member gets single posts).
    #[serde(default = "default_digest")]
    pub digest: DigestPeriod,
    /// When a due digest is sent, in `timezone`: "07:00".
    #[serde(default = "default_digest_time", deserialize_with = "de_clock_time")]
    pub digest_time: chrono::NaiveTime,
    /// The day of a weekly digest: "monday" ... "sunday".
    #[serde(default = "default_digest_day", deserialize_with = "de_weekday")]
    pub digest_day: chrono::Weekday,
    /// The list's time zone (IANA name), for digest times and dates in texts.
    #[serde(default = "default_timezone", deserialize_with = "de_timezone")]
    pub timezone: chrono_tz::Tz,
    /// A digest goes out early when its posts reach this many bytes (Mailman: 30 KB).
    #[serde(default = "default_digest_max_size")]
    pub digest_max_size: usize,
    /// How long a members-only archive login lasts (the session cookie), in days.
    #[serde(default = "default_session_days")]
    pub archive_session_days: u32,
    /// When a member is forgotten (`forget`): their posts stay, with a neutral author
    /// ("keep"), or go ("delete").
    #[serde(default = "default_forget_posts")]
    pub forget_posts: ForgetPosts,
    /// DKIM selector for signing list mail with the list domain's key (`vb1`).
    #[serde(default)]
    pub dkim_selector: Option<String>,
    /// The private key (PEM: RSA PKCS#8 or PKCS#1, or Ed25519 PKCS#8); written by
    /// `vraagbaak dkim keygen LIST`. Relative to the directory vraagbaak starts in.
    #[serde(default)]
    pub dkim_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgetPosts {
    Keep,
    Delete,
}

fn default_session_days() -> u32 {
    30
}

fn default_forget_posts() -> ForgetPosts {
    ForgetPosts::Keep
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestPeriod {
    Off,
    Daily,
    Weekly,
}

fn default_digest() -> DigestPeriod {
    DigestPeriod::Daily
}
fn default_digest_time() -> chrono::NaiveTime {
    chrono::NaiveTime::from_hms_opt(7, 0, 0).unwrap_or_default()
}
fn default_digest_day() -> chrono::Weekday {
    chrono::Weekday::Mon
}
fn default_redact() -> Vec<crate::redact::Kind> {
    use crate::redact::Kind;
    vec![Kind::National, Kind::Account, Kind::Phone]
}

/// What happens to a post that carries a client's national number or bank account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiPosts {
    #[default]
    Mask,
    Hold,
}

fn default_timezone() -> chrono_tz::Tz {
    chrono_tz::Europe::Brussels
}
fn default_digest_max_size() -> usize {
    30_000
}

fn de_clock_time<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::NaiveTime, D::Error> {
    let s = String::deserialize(d)?;
    chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .map_err(|_| de::Error::custom(format!("expected a time such as \"07:00\", got {s:?}")))
}

fn de_weekday<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::Weekday, D::Error> {
    let s = String::deserialize(d)?;
    s.trim()
        .parse::<chrono::Weekday>()
        .map_err(|_| de::Error::custom(format!("expected a day such as \"monday\", got {s:?}")))
}

fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        de::Error::custom(format!(
            "expected an IANA time zone such as \"Europe/Brussels\", got {s:?}"
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromRewrite {
    Never,
    Dmarc,
    Always,
}

fn default_from_rewrite() -> FromRewrite {
    FromRewrite::Dmarc
}

fn default_true() -> bool {
    true
}
fn default_bounce_threshold() -> f64 {
    5.0
}
fn default_week() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_bounce_warnings() -> u32 {
    3
}

fn default_archive_mode() -> ArchiveMode {
    ArchiveMode::Private
}

impl ListConfig {
    /// The local part of the posting address, `forum`.
    pub fn local(&self) -> &str {
        self.address.split('@').next().unwrap_or("")
    }
    /// The domain of the posting address, `lists.example.org`.
    pub fn domain(&self) -> &str {
        self.address.rsplit('@').next().unwrap_or("")
    }
    /// `forum-<suffix>@domain`
    pub fn sub_address(&self, suffix: &str) -> String {
        format!("{}-{}@{}", self.local(), suffix, self.domain())
    }
    /// RFC 2919 list identifier: `forum.lists.example.org`.
    pub fn list_id(&self) -> String {
        format!("{}.{}", self.local(), self.domain())
    }
    /// The list's short key used in the store and on the command line: the posting address.
    pub fn key(&self) -> &str {
        &self.address
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_max_message_size() -> usize {
    25 * 1024 * 1024
}
fn default_max_recipients() -> usize {
    100
}
fn default_max_connections() -> usize {
    200
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
pub(crate) fn default_http_max_connections() -> usize {
    256
}
pub(crate) fn default_http_max_connections_per_ip() -> usize {
    64
}
pub(crate) fn default_http_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections_per_ip() -> usize {
    20
}
fn default_data_memory() -> usize {
    256 * 1024 * 1024
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(1800)
}
fn default_connections() -> usize {
    8
}
fn default_retry_base() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}
fn default_relay_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_language() -> Language {
    Language::Nl
}
fn default_posting() -> Posting {
    Posting::Members
}
fn default_reply_to() -> ReplyTo {
    ReplyTo::List
}
fn default_notify_owners() -> NotifyOwners {
    NotifyOwners::Each
}
fn default_confirm_expiry() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_rate_window() -> Duration {
    Duration::from_secs(86400)
}
fn default_max_confirmations_per_address() -> u32 {
    3
}
fn default_max_confirmations_per_hour() -> u32 {
    100
}
fn default_max_confirmations_per_requester() -> u32 {
    10
}
fn default_max_replies_per_address() -> u32 {
    20
}
fn default_max_commands() -> usize {
    20
}

/// Parses `"30s"`, `"2m"`, `"1h"`, `"5d"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as \"30s\", \"2m\", \"1h\", got {s:?}"))?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    Ok(match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Duration::from_millis(n),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        other => {
            return Err(format!(
                "expected a duration unit ms, s, m, h or d, got {other:?} in {s:?}"
            ))
        }
    })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"2m\", \"1h\" or a number of seconds")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("expected a non-negative number of seconds"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Where delivered copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// One `.eml` file per recipient copy in this directory.
    Outbox(PathBuf),
    /// Plain SMTP to a relay (Postfix on loopback, typically).
    Smtp { host: String, port: u16 },
}

impl Relay {
    pub fn parse(s: &str) -> Result<Relay, String> {
        if let Some(dir) = s.strip_prefix("outbox:") {
            if dir.is_empty() {
                return Err("expected \"outbox:DIR\" with a directory".into());
            }
            return Ok(Relay::Outbox(PathBuf::from(dir)));
        }
        if let Some(rest) = s.strip_prefix("smtp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| format!("expected a port number after ':' in {s:?}"))?,
                ),
                None => (rest, 25),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("expected \"smtp://host:port\", got {s:?}"));
            }
            return Ok(Relay::Smtp {
                host: host.to_string(),
                port,
            });
        }
        Err(format!(
            "expected \"outbox:DIR\" or \"smtp://host:port\", got {s:?}"
        ))
    }
}

/// The dotted key written on the line of byte `at` (`smtp.max_recipients`), from the
/// line's `key =` and the nearest table header above it; `list[2].x` for the third
/// `[[list]]`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let name = line.split_once('=')?.0.trim().trim_matches('"');
    if name.is_empty() || name.starts_with('[') {
        return None;
    }
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for l in text[..start].lines() {
        let l = l.trim();
        if let Some(t) = l
            .strip_prefix("[[")
            .and_then(|t| t.split_once("]]"))
            .map(|t| t.0)
        {
            let n = counts.entry(t.trim().to_string()).or_insert(0);
            table = format!("{}[{}]", t.trim(), *n);
            *n += 1;
        } else if let Some(t) = l
            .strip_prefix('[')
            .and_then(|t| t.split_once(']'))
            .map(|t| t.0)
        {
            table = t.trim().to_string();
        }
    }
    Some(if table.is_empty() {
        name.to_string()
    } else {
        format!("{table}.{name}")
    })
}

/// A minimal syntactic check of an `addr-spec`: one `@`, non-empty local part and a domain
/// with a dot or `localhost`, no spaces or angle brackets.
pub fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && local.len() <= 128
        && domain.len() <= 255
        && !a
            .chars()
            .any(|c| c.is_whitespace() || "<>(),;\"".contains(c))
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

impl Config {
    /// Loads the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Self::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
    }

    /// Parses and validates TOML text; `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_string();
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
                // The parser fails some values (a number too large for any integer)
                // before the key is known: name it from the line and its table.
                if key.is_empty() || key == "." {
                    key = key_at(text, span.start).unwrap_or(key);
                }
            }
            ConfigError {
                file: file.to_string(),
                key,
                message,
            }
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn relay(&self) -> Relay {
        // Validated in `parse`; the fallback is never reached for a loaded config.
        Relay::parse(&self.delivery.relay)
            .unwrap_or_else(|_| Relay::Outbox(self.data_dir.join("outbox")))
    }

    /// The list whose posting address is `addr` (case-insensitive), or whose name/local part is.
    pub fn list(&self, name: &str) -> Option<&ListConfig> {
        self.lists
            .iter()
            .find(|l| l.address.eq_ignore_ascii_case(name) || l.local().eq_ignore_ascii_case(name))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
    /// The socket `inject` uses (`[inject] socket`).
    pub fn inject_socket(&self) -> PathBuf {
        self.inject
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("inject.sock"))
    }
    /// The HMAC key for tokens, created on first use.
    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }
    /// The public archive's root (one folder per list).
    pub fn archive_dir(&self) -> PathBuf {
        self.archive
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("archive"))
    }
    /// The private archives' root, outside the public one.
    pub fn archive_private_dir(&self) -> PathBuf {
        self.archive
            .private_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("archive-private"))
    }
    /// Where a list's archive is written, or None when it is off.
    pub fn list_archive_dir(&self, list: &ListConfig) -> Option<PathBuf> {
        match list.archive {
            ArchiveMode::Public => Some(self.archive_dir().join(list.local())),
            ArchiveMode::Private => Some(self.archive_private_dir().join(list.local())),
            ArchiveMode::Off => None,
        }
    }
    /// The public base URL of the web endpoint without a trailing slash, when configured.
    pub fn base_url(&self) -> Option<&str> {
        self.http.as_ref().map(|h| h.base_url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
data_dir = "d"
[smtp]
listen = "127.0.0.1:2525"
hostname = "lists.example.org"
[delivery]
relay = "outbox:d/outbox"
[[list]]
address = "forum@lists.example.org"
name = "Forum"
"#;

    /// The configs an attacker or a slip could use to hurt the list are refused, each
    /// naming its key.
    #[test]
    fn a_number_too_large_names_its_key() {
        let text = MIN.replace(
            "hostname = \"lists.example.org\"",
            "hostname = \"lists.example.org\"\nmax_recipients = 99999999999999999999999",
        );
        let e = Config::parse(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "smtp.max_recipients", "{e}");
        let text = format!("{MIN}[[list]]\naddress = \"b@lists.example.org\"\nname = \"B\"\nmax_x = 99999999999999999999\n");
        let e = Config::parse(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "list[1].max_x", "{e}");
    }

    #[test]
    fn dangerous_configs_are_refused_by_key() {
        let bad = |text: &str, key: &str| {
            let e = Config::parse(text, "t.toml").expect_err(text);
            assert_eq!(e.key, key, "{e}");
        };
        bad(
            &MIN.replace("[delivery]", "[delivery]\ngive_up_after = \"0s\""),
            "delivery.give_up_after",
        );
        bad(
            &MIN.replace(
                "[delivery]",
                "[delivery]\nretry_base = \"10m\"\nretry_max = \"1m\"",
            ),
            "delivery.retry_max",
        );
        bad(
            &MIN.replace("forum@lists.example.org", "../../x@lists.example.org"),
            "list[0].address",
        );
        bad(
            &MIN.replace("forum@lists.example.org", ".forum@lists.example.org"),
            "list[0].address",
        );
        bad(
            &MIN.replace("name = \"Forum\"", "name = \"Forum\\r\\nBcc: x@y.z\""),
            "list[0].name",
        );
        bad(
            &format!("{MIN}[[list]]\naddress = \"Forum@other.example.org\"\nname = \"B\"\n"),
            "list[1].address",
        );
        // A private directory that reaches into the public root through a symlink.
        let d = tempfile::tempdir().unwrap();
        let public = d.path().join("public");
        std::fs::create_dir_all(public.join("inside")).unwrap();
        let link = d.path().join("private-link");
        std::os::unix::fs::symlink(public.join("inside"), &link).unwrap();
        let with = |private: &std::path::Path| {
            MIN.replace(
                "data_dir = \"d\"\n",
                &format!(
                    "data_dir = \"d\"\n[archive]\ndir = {public:?}\nprivate_dir = {private:?}\n"
                ),
            )
        };
        let text = with(&link.join("lists"));
        bad(&text, "archive.private_dir");
        // The same paths without the link are fine.
        Config::parse(&with(&d.path().join("private")), "t.toml").unwrap();
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded().unwrap();
        assert!(!c.lists.is_empty());
        assert!(matches!(c.relay(), Relay::Outbox(_)));
    }

    #[test]
    fn minimal_gets_defaults() {
        let c = Config::parse(MIN, "t.toml").unwrap();
        assert_eq!(c.lists[0].posting, Posting::Members);
        assert_eq!(c.lists[0].language, Language::Nl);
        assert_eq!(c.delivery.connections, 8);
        assert_eq!(c.lists[0].list_id(), "forum.lists.example.org");
        assert_eq!(
            c.lists[0].sub_address("request"),
            "forum-request@lists.example.org"
        );
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let text = MIN.replace("name = \"Forum\"", "name = \"Forum\"\npostign = \"open\"");
        let e = Config::parse(&text, "t.toml").unwrap_err();
        assert_eq!(e.file, "t.toml");
        assert!(e.key.starts_with("list[0]"), "{e}");
        assert!(e.message.contains("postign"), "{e}");
    }

    #[test]
    fn bad_enum_value_says_what_was_expected() {
        let text = MIN.replace(
            "name = \"Forum\"",
            "name = \"Forum\"\nposting = \"everyone\"",
        );
        let e = Config::parse(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "list[0].posting", "{e}");
        assert!(e.message.contains("members"), "{e}");
        assert!(e.to_string().starts_with("t.toml: key `list[0].posting`"));
    }

    #[test]
    fn bad_relay_and_listen_are_named() {
        let e = Config::parse(&MIN.replace("outbox:d/outbox", "ftp://x"), "t.toml").unwrap_err();
        assert_eq!(e.key, "delivery.relay");
        let e = Config::parse(&MIN.replace("127.0.0.1:2525", "localhost"), "t.toml").unwrap_err();
        assert_eq!(e.key, "smtp.listen");
        let e = Config::parse(
            &MIN.replace("[delivery]", "[delivery]\nretry_base = \"5 parsecs\""),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "delivery.retry_base", "{e}");
    }

    #[test]
    fn imap_accounts_are_checked_and_passwords_hidden() {
        let acct = |extra: &str| {
            format!(
                "{MIN}\n[[imap]]\nname = \"p\"\nhost = \"imap.provider.be\"\nusername = \"u\"\n\
password = \"s3cret\"\nlist = \"forum\"\n{extra}"
            )
        };
        let c = Config::parse(&acct("after = \"move:Verwerkt\""), "t.toml").unwrap();
        assert_eq!(c.imap[0].after, ImapAfter::Move("Verwerkt".into()));
        assert_eq!(c.imap[0].port(), 993);
        assert!(!format!("{:?}", c.imap[0]).contains("s3cret"));
        let e = Config::parse(&acct("tls = \"none\""), "t.toml").unwrap_err();
        assert_eq!(e.key, "imap[0].tls", "{e}");
        let e = Config::parse(&acct("after = \"archive\""), "t.toml").unwrap_err();
        assert_eq!(e.key, "imap[0].after", "{e}");
        assert!(!e.to_string().contains("s3cret"));
        let e = Config::parse(&acct("password_file = \"/x\""), "t.toml").unwrap_err();
        assert_eq!(e.key, "imap[0].password", "{e}");
    }

    #[test]
    fn relay_parsing() {
        assert_eq!(
            Relay::parse("smtp://127.0.0.1:2526").unwrap(),
            Relay::Smtp {
                host: "127.0.0.1".into(),
                port: 2526
            }
        );
        assert_eq!(
            Relay::parse("smtp://relay").unwrap(),
            Relay::Smtp {
                host: "relay".into(),
                port: 25
            }
        );
        assert!(Relay::parse("smtp://:25").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
