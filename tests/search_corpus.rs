//! The archive's search on a real list: the linux-man archive (17,885 messages, see
//! `../shared/corpora/README.md`) imported with `archive import-mbox`, then typical queries
//! run by the reference searcher (`archive::search::Searcher`, which loads exactly the
//! files `static/search.js` loads; the browser test checks that they agree). Prints, per
//! query, the files loaded and their sizes, and checks that no query loads more than
//! 300 KB. Then one new reply: the update rewrites only a few index files.
//!
//! Without the corpus (or `xz`) the test is skipped with a message, except under CI.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use vraagbaak::archive::search::Searcher;

const CORPUS: &str = "../shared/corpora/linux-man.mbox.xz";
const BUDGET: usize = 300 * 1024;

/// `vraagbaak --config ... ARGS`, given up to 30 minutes (a debug build imports the corpus
/// in a minute or two); its exit code and standard output.
fn run_long(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let out_path = env.path().join("cli.out");
    let out = std::fs::File::create(&out_path).expect("create output");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .env_remove("VRAAGBAAK_CONFIG")
        .current_dir(env.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vraagbaak");
    let mut status = None;
    wait_until(std::time::Duration::from_secs(1800), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("vraagbaak {args:?} did not finish within 30 minutes");
    }
    (
        status.and_then(|s| s.code()),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
    )
}

/// Every file of the index with its bytes.
fn index_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for sub in ["search", "search/x"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file() {
                let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                out.insert(name, std::fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn linux_man_queries_load_at_most_300_kb() {
    let test = "linux_man_queries_load_at_most_300_kb";
    if !Path::new(CORPUS).exists() {
        skip(test, &format!("{CORPUS} not found"));
        return;
    }
    let env = TestEnv::new(
        free_port(),
        Opts {
            list_extra: "archive = \"public\"\n".into(),
            ..Opts::default()
        },
    );
    let mbox = env.path().join("linux-man.mbox");
    let out = std::fs::File::create(&mbox).expect("create mbox");
    let xz = Command::new("xz")
        .arg("-dc")
        .arg(CORPUS)
        .stdout(out)
        .stderr(Stdio::null())
        .status();
    if !xz.is_ok_and(|s| s.success()) {
        skip(
            test,
            "xz could not decompress the corpus (apt-get install xz-utils)",
        );
        return;
    }
    let (code, out) = run_long(
        &env,
        &[
            "archive",
            "import-mbox",
            "forum",
            mbox.to_str().expect("path"),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let site = env.data_dir.join("archive/forum");
    let all = index_files(&site);
    let total: usize = all.values().map(Vec::len).sum();
    let records = all.keys().filter(|k| k.starts_with("search/x/")).count();
    eprintln!(
        "index: {} files, {} KB ({} result records)",
        all.len(),
        total / 1024,
        records
    );

    for (q, page) in [
        ("manpage", 1),
        ("manpage", 2),
        ("groff typo", 1),
        ("mmap", 1),
        ("man page", 1),
        ("signal handler", 1),
        ("clock_gettime", 1),
        ("fix typo in", 1),
        ("the", 1),
    ] {
        let mut s = Searcher::open(&site);
        let r = s.search(q, page);
        let bytes: usize = s.loaded.iter().map(|(_, n)| n).sum();
        let kinds = |p: &str| {
            let f: Vec<&(String, usize)> =
                s.loaded.iter().filter(|(n, _)| n.starts_with(p)).collect();
            (f.len(), f.iter().map(|(_, n)| n).sum::<usize>() / 1024)
        };
        let (t, tk) = kinds("t-");
        let (n, nk) = kinds("n-");
        let (x, xk) = kinds("x-");
        let terms: Vec<String> = s
            .loaded
            .iter()
            .filter(|(n, _)| n.starts_with("t-"))
            .map(|(n, b)| format!("{n}.js {} KB", b / 1024))
            .collect();
        eprintln!(
            "{q:?} page {page}: {} results; {} files, {} KB: meta {} KB, {t} term files {tk} KB ({}), {n} figure files {nk} KB, {x} records {xk} KB",
            r.total,
            s.loaded.len(),
            bytes / 1024,
            s.loaded.iter().find(|(n, _)| n == "meta").map(|(_, b)| b / 1024).unwrap_or(0),
            terms.join(", "),
        );
        assert!(bytes <= BUDGET, "{q:?} loads {bytes} bytes: {:?}", s.loaded);
        if q != "the" {
            assert!(r.total > 0 && !r.hits.is_empty(), "{q:?}: no result");
        }
    }

    // One new reply: only its words' term files, its thread's figures and record, meta.js.
    let last = {
        let text = std::fs::read_to_string(&mbox).unwrap_or_default();
        text.lines()
            .rev()
            .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().trim_matches(['<', '>']).to_string())
            .unwrap_or_default()
    };
    let reply = env.path().join("one.mbox");
    std::fs::write(
        &reply,
        format!(
            "From bench Mon Nov 23 10:00:00 2026\nFrom: Bench <bench@example.org>\nSubject: Re: benchmark reply\n\
Message-ID: <search-corpus-reply@example.org>\nIn-Reply-To: <{last}>\nReferences: <{last}>\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\n\nOne more message about the mmap manpage.\n"
        ),
    )
    .expect("write reply");
    let (code, out) = run_long(
        &env,
        &[
            "archive",
            "import-mbox",
            "forum",
            reply.to_str().expect("path"),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let after = index_files(&site);
    let changed: Vec<(&String, usize)> = after
        .iter()
        .filter(|(k, v)| all.get(*k) != Some(v))
        .map(|(k, v)| (k, v.len()))
        .collect();
    eprintln!(
        "one new reply rewrote {} index files: {changed:?}",
        changed.len()
    );
    assert!(changed.len() <= 12, "{changed:?}");
}
