#!/usr/bin/env bash
# Archive benchmark: `archive import-mbox` + `archive rebuild` of the linux-man list
# (17,885 messages, 139 MB), then one incremental update (one new reply), then forgetting
# the list's most frequent author (every stored post relabelled, the archive written anew)
# and a store compaction, with wall time and peak memory (GNU time). Also checks that every
# message was stored and is on a page, and that the forgotten address is in no file after.
#
#   benches/archive.sh            # needs ../shared/corpora/linux-man.mbox.xz
#
# Prints one line per step; the README's performance table comes from it.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=../shared/corpora/linux-man.mbox.xz
if [ ! -f "$corpus" ]; then
  echo "skipped: $corpus not found" >&2
  exit 0
fi
cargo build --release --locked --quiet
bin=$PWD/target/release/vraagbaak
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
xz -dc "$corpus" > "$work/linux-man.mbox"
cat > "$work/vraagbaak.toml" <<TOML
data_dir = "$work/data"
[smtp]
listen = "127.0.0.1:0"
hostname = "lists.example.org"
[delivery]
relay = "outbox:$work/outbox"
[archive]
dir = "$work/archive"
private_dir = "$work/private"
[[list]]
address = "linux-man@lists.example.org"
name = "linux-man"
language = "en"
archive = "public"
TOML
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs kb < "$work/time"
  printf '%-34s %8.2f s  %6d MB peak\n' "$label" "$secs" $((kb / 1024))
  sed 's/^/    /' "$work/out"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
measure "import-mbox (store + first render)" "$bin" --config "$work/vraagbaak.toml" archive import-mbox linux-man "$work/linux-man.mbox"
measure "rebuild (all pages)" "$bin" --config "$work/vraagbaak.toml" archive rebuild linux-man
measure "rebuild --reindex (threads too)" "$bin" --config "$work/vraagbaak.toml" archive rebuild linux-man --reindex

# One new reply to the last message: the incremental update of a 17,885-message archive.
last_id=$(grep -i -m1 '^message-id:' <(tac "$work/linux-man.mbox" | grep -i -m1 '^message-id:') | sed 's/^[^<]*<\(.*\)>.*/\1/')
cat > "$work/one.mbox" <<MBOX
From bench Mon Nov 23 10:00:00 2026
From: Bench <bench@example.org>
Subject: Re: benchmark reply
Message-ID: <bench-reply-$(date +%s%N)@example.org>
In-Reply-To: <$last_id>
References: <$last_id>
Date: Mon, 23 Nov 2026 10:00:00 +0000

One more message.
MBOX
measure "one new message (incremental)" "$bin" --config "$work/vraagbaak.toml" archive import-mbox linux-man "$work/one.mbox"
pages=$(find "$work/archive/linux-man/t" -name '*.html' | wc -l)
articles=$(find "$work/archive/linux-man/t" -name '*.html' -exec cat {} + | grep -o '<article' | wc -l)
echo "thread pages: $pages, messages on pages: $articles, archive size: $(du -sh "$work/archive" | cut -f1)"

# Forgetting the most frequent author: every post of the list is read and relabelled where
# it names them, then the whole archive is written anew; then the database is compacted.
who=$(grep -i '^From: ' "$work/linux-man.mbox" | grep -o '[A-Za-z0-9._%+-]*@[A-Za-z0-9.-]*' | tr 'A-Z' 'a-z' | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
echo "forgetting the most frequent author ($(grep -ci "^From: .*$who" "$work/linux-man.mbox") posts)"
measure "members forget (relabel + rewrite)" "$bin" --config "$work/vraagbaak.toml" members forget linux-man "$who"
measure "store compact" "$bin" --config "$work/vraagbaak.toml" store compact
left=$(grep -rlaiF "$who" "$work/data" "$work/archive" || true)
echo "files still holding the address: $(printf '%s' "$left" | grep -c . || true)"
for f in $left; do
  echo "    ${f#$work/}: $(grep -aioF -m3 "$who" "$f" | head -3 | tr '\n' ' ')"
  # Up to 60 characters before and 20 after, on the same line (a blob may break lines).
  { grep -aio ".\{0,60\}$who.\{0,20\}" "$f" || true; } | head -2 | sed 's/^/      /'
done
# Every file is listed above; the benchmark fails when any still holds the address.
[ -z "$left" ]

