//! The daemon's clock: milliseconds since the Unix epoch.
//!
//! Tests that must see days pass (bounce scores, digests, token expiry) move it with
//! `VRAAGBAAK_CLOCK_OFFSET` (seconds), but only in a build with the `test-hooks` feature,
//! which the test suite enables for itself (a dev-dependency on this crate with that
//! feature): a release build has no variable that changes its time.

/// Milliseconds since the Unix epoch, as the daemon's clock reads it.
pub fn now_ms() -> i64 {
    chrono::Utc::now()
        .timestamp_millis()
        .saturating_add(offset_ms())
}

#[cfg(feature = "test-hooks")]
fn offset_ms() -> i64 {
    static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET_MS.get_or_init(|| {
        std::env::var("VRAAGBAAK_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(0, |s| s.saturating_mul(1000))
    })
}

#[cfg(not(feature = "test-hooks"))]
fn offset_ms() -> i64 {
    0
}
