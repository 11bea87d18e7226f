#!/usr/bin/env bash
# Runs every test Anomos has, from a fresh machine: installs what the tests
# need, builds once, checks layering and formatting, runs unit, property,
# integration and end-to-end tests, runs each fuzz target for a few seconds,
# validates the deployment material against the built binaries, and
# compiles (does not run) the benchmarks.
#
# Environment: FUZZ_SECONDS (default 5) per fuzz target; SKIP_FUZZ=1 to skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
for pkg in pkg-config libssl-dev tcpdump iproute2 e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

step "format"
cargo fmt --all -- --check

step "layering: common stays sans-IO"
tree=$(cargo tree -p anomos-common -e normal --prefix none --locked)
if grep -E '^(actix|actix-[a-z-]+|tokio|tokio-[a-z-]+|mio|socket2|prometheus|hyper) ' <<<"$tree"; then
  echo "anomos-common must not depend on the crates above" >&2
  exit 1
fi

step "build"
cargo build --workspace --all-targets --locked

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
# The memory fault tests read the test process's own RSS (the endpoints
# run in it), so they run afterwards on their own, with no other test
# sharing the process.
{
  cargo test --workspace --locked -- --skip faults::memory &&
    cargo test -p peer --test peer --locked faults::memory -- --test-threads=1
} 2>&1 | tee "$test_log"
passed=$(grep -o '[0-9]* passed' "$test_log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$test_log" | awk '{s += $1} END {print s + 0}')

if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
  step "fuzz (${FUZZ_SECONDS:-5}s per target)"
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
  export RUSTC_BOOTSTRAP=1
  (
    cd fuzz
    cargo fuzz build
    for target in $(cargo fuzz list); do
      # New inputs go to the scratch corpus; checked-in seeds are read only.
      mkdir -p "target/corpus/$target" "seeds/$target"
      log="target/fuzz-$target.log"
      if ! cargo fuzz run "$target" "target/corpus/$target" "seeds/$target" -- \
          -max_total_time="${FUZZ_SECONDS:-5}" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
      fi
      echo "[$target] $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log") executions"
    done
  )
fi

step "deploy material (deploy/check.sh)"
./deploy/check.sh

step "benchmarks compile"
cargo bench --workspace --no-run --locked

echo
echo "all checks passed"
echo "tests: $passed passed, $failed failed"
