//! DNS TXT lookups for DMARC, behind a trait so that tests (and sites without a resolver)
//! answer from a fixed table.
//!
//! The real resolver is hickory (the system's `/etc/resolv.conf`), run on a runtime of its
//! own so that callers on blocking threads (the pipeline) and async ones alike can use it.
//! Answers are cached for their TTL, answers that a name has no record for their negative
//! TTL (5 minutes when the server gives none), and failures for a minute, so that one
//! unreachable DNS server costs one timeout a minute, not one per post.

use crate::config::DnsConfig;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The TXT strings of a name: each record's character-strings joined, as RFC 7489 and
/// RFC 6376 read them. `Ok(vec![])` when the name has no TXT record (or does not exist);
/// `Err` when the lookup failed (timeout, SERVFAIL, no resolver).
pub type TxtResult = Result<Vec<String>, String>;

pub trait Resolver: Send + Sync {
    fn txt(&self, name: &str) -> TxtResult;
}

/// Answers from a table; names not in it have no records.
#[derive(Debug, Default, Clone)]
pub struct Table(pub HashMap<String, Vec<String>>);

impl Resolver for Table {
    fn txt(&self, name: &str) -> TxtResult {
        Ok(self.0.get(&normal(name)).cloned().unwrap_or_default())
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

const NEGATIVE_TTL: Duration = Duration::from_secs(300);
const FAILURE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;

/// hickory on its own runtime, with a TTL cache in front.
pub struct Hickory {
    /// `Option` only so that `Drop` can shut it down without blocking: a runtime dropped
    /// the ordinary way panics when that happens on an async thread (a command-line run
    /// ends there).
    rt: Option<tokio::runtime::Runtime>,
    resolver: Result<TokioResolver, String>,
    cache: Mutex<HashMap<String, (TxtResult, Instant)>>,
}

impl Hickory {
    pub fn new(timeout: Duration, servers: &[std::net::SocketAddr]) -> Result<Hickory, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        // A machine without a usable resolv.conf still runs: every lookup then fails, and a
        // failed DMARC lookup is handled as p=reject (the From is rewritten).
        // On a thread of its own: the caller may be on a runtime's thread.
        let resolver = std::thread::scope(|s| {
            s.spawn(|| {
                rt.block_on(async {
                    let mut b = if servers.is_empty() {
                        TokioResolver::builder_tokio().map_err(|e| {
                            format!("cannot read the system's DNS configuration: {e}")
                        })?
                    } else {
                        use mail_auth::hickory_resolver::config::{
                            ConnectionConfig, NameServerConfig, ResolverConfig,
                        };
                        let ns = servers
                            .iter()
                            .map(|a| {
                                let (mut udp, mut tcp) =
                                    (ConnectionConfig::udp(), ConnectionConfig::tcp());
                                (udp.port, tcp.port) = (a.port(), a.port());
                                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                            })
                            .collect();
                        TokioResolver::builder_with_config(
                            ResolverConfig::from_name_servers(ns),
                            mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
                        )
                    };
                    b.options_mut().timeout = timeout;
                    b.options_mut().attempts = 2;
                    b.build()
                        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))
                })
            })
            .join()
            .unwrap_or_else(|_| Err("DNS set-up panicked".into()))
        });
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "no DNS resolver; DMARC lookups will fail");
        }
        Ok(Hickory {
            rt: Some(rt),
            resolver,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn lookup(&self, name: &str) -> (TxtResult, Duration) {
        let resolver = match &self.resolver {
            Ok(r) => r,
            Err(e) => return (Err(e.clone()), FAILURE_TTL),
        };
        let fqdn = format!("{}.", normal(name));
        // On a thread of its own: block_on may not run on a thread that drives a runtime.
        let Some(rt) = &self.rt else {
            return (Err("the DNS runtime has stopped".into()), FAILURE_TTL);
        };
        let r = std::thread::scope(|s| {
            s.spawn(|| rt.block_on(resolver.txt_lookup(fqdn.as_str())))
                .join()
        });
        match r {
            Ok(Ok(lookup)) => {
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let txts = lookup
                    .answers()
                    .iter()
                    .filter_map(|rec| match &rec.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                (Ok(txts), ttl)
            }
            Ok(Err(e)) if e.is_no_records_found() => (Ok(Vec::new()), NEGATIVE_TTL),
            Ok(Err(e)) => (Err(e.to_string()), FAILURE_TTL),
            Err(_) => (Err("DNS lookup thread panicked".into()), FAILURE_TTL),
        }
    }
}

impl Drop for Hickory {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Resolver for Hickory {
    fn txt(&self, name: &str) -> TxtResult {
        let key = normal(name);
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((r, until)) = cache.get(&key) {
                if *until > now {
                    return r.clone();
                }
            }
        }
        let (r, ttl) = self.lookup(&key);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (r.clone(), now + ttl));
        r
    }
}

/// The table of `[dns] records` in front of a real resolver, or alone (`offline`).
pub struct Layered {
    table: Table,
    next: Option<Hickory>,
}

impl Resolver for Layered {
    fn txt(&self, name: &str) -> TxtResult {
        let fixed = self.table.txt(name)?;
        if !fixed.is_empty() {
            return Ok(fixed);
        }
        match &self.next {
            Some(h) => h.txt(name),
            None => Ok(Vec::new()),
        }
    }
}

/// Answers looked up ahead, all at once, for a batch of decisions: each name is asked on a
/// thread of its own and whatever has not answered when `deadline` passes counts as a
/// failed lookup (a lookup still running goes on and fills the resolver's cache). Names not
/// looked up ahead go to the resolver behind.
pub struct Prefetched {
    answers: HashMap<String, TxtResult>,
    next: std::sync::Arc<dyn Resolver>,
}

impl Prefetched {
    pub fn new(
        next: std::sync::Arc<dyn Resolver>,
        names: Vec<String>,
        deadline: Duration,
    ) -> Prefetched {
        let mut answers = HashMap::new();
        if names.is_empty() {
            return Prefetched { answers, next };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut asked = Vec::new();
        for name in names.into_iter().take(64) {
            let (tx, r, n) = (tx.clone(), next.clone(), normal(&name));
            asked.push(n.clone());
            let spawned = std::thread::Builder::new()
                .name("dns-prefetch".into())
                .spawn(move || {
                    let a = r.txt(&n);
                    let _ = tx.send((n, a));
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a DNS lookup thread");
            }
        }
        drop(tx);
        let end = Instant::now() + deadline;
        while answers.len() < asked.len() {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((n, a)) => {
                    answers.insert(n, a);
                }
                Err(_) => break,
            }
        }
        for n in asked {
            answers
                .entry(n)
                .or_insert_with(|| Err("DNS lookup timed out".into()));
        }
        Prefetched { answers, next }
    }
}

impl Resolver for Prefetched {
    fn txt(&self, name: &str) -> TxtResult {
        match self.answers.get(&normal(name)) {
            Some(a) => a.clone(),
            None => self.next.txt(name),
        }
    }
}

/// The resolver the configuration asks for.
pub fn from_config(cfg: &DnsConfig) -> Result<Layered, String> {
    let table = Table(
        cfg.records
            .iter()
            .map(|(k, v)| (normal(k), v.clone().into_vec()))
            .collect(),
    );
    let next = if cfg.offline {
        None
    } else {
        Some(Hickory::new(cfg.timeout, &cfg.servers)?)
    };
    Ok(Layered { table, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command-line run drops its services on the main runtime's thread.
    #[test]
    fn the_resolver_can_be_dropped_on_an_async_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = Hickory::new(Duration::from_secs(1), &[]).unwrap();
            drop(h);
        });
    }

    struct Silent;
    impl Resolver for Silent {
        fn txt(&self, _: &str) -> TxtResult {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Vec::new())
        }
    }

    /// A resolver that never answers costs one deadline for the whole batch.
    #[test]
    fn prefetch_gives_up_at_the_deadline() {
        let names = (0..20).map(|i| format!("_dmarc.d{i}.example")).collect();
        let t = Instant::now();
        let p = Prefetched::new(
            std::sync::Arc::new(Silent),
            names,
            Duration::from_millis(200),
        );
        assert!(t.elapsed() < Duration::from_secs(60));
        assert!(p.txt("_dmarc.d3.example").is_err());
    }

    #[test]
    fn table_answers_case_insensitively() {
        let t = Table(HashMap::from([(
            "_dmarc.example.com".to_string(),
            vec!["v=DMARC1; p=reject".to_string()],
        )]));
        assert_eq!(t.txt("_DMARC.Example.COM.").unwrap().len(), 1);
        assert!(t.txt("_dmarc.example.org").unwrap().is_empty());
    }
}
