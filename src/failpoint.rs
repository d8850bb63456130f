//! Named crash points for the crash tests: with the `test-hooks` feature (the test suite's
//! build only), `VRAAGBAAK_CRASH_AT=<name>` makes the daemon abort at that point, as a
//! `kill -9` would. In any other build [`hit`] does nothing.

/// Aborts the process when the test suite asked for a crash at `name`.
#[cfg(feature = "test-hooks")]
pub fn hit(name: &str) {
    if std::env::var("VRAAGBAAK_CRASH_AT").is_ok_and(|v| v == name) {
        tracing::warn!(point = name, "crash point reached: aborting");
        std::process::abort();
    }
}

/// Does nothing: crash points exist only in the test suite's build.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn hit(_name: &str) {}
