#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), starting from the seed corpus in
# fuzz/corpus/<target> (read only: new inputs go to a scratch corpus). Fails on the first crash, and
# prints each target's executions and final coverage.
#
#   fuzz/run.sh            # 30 s per target
#   fuzz/run.sh 600        # ten minutes per target
#   fuzz/run.sh 60 gossip  # one target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  if cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/^#([0-9]+)[[:space:]]+[A-Z]+[[:space:]]+cov: ([0-9]+).*/\1 execs, cov \2/' || true)
    echo "fuzz $t: ok (${stats:-no stats}) in ${seconds}s"
  else
    echo "fuzz $t: FAILED; last lines:"
    tail -n 40 "$log"
    status=1
  fi
done
exit $status
