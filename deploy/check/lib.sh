# shellcheck shell=bash
# Shared by deploy/check.sh and deploy/nginx-e2e.sh (sourced, not run).
#
# Every process started through start_bg is killed by cleanup, which
# begin_work installs as the EXIT trap; every wait is bounded.

step() { printf '\n--> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

BG_PIDS=()

# start_bg NAME CMD...: run CMD in the background, stdout to $WORK/NAME.out,
# stderr to $WORK/NAME.err, and remember its pid.
start_bg() {
  local name=$1
  shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  BG_PIDS+=("$!")
}

# Stop what start_bg started, last started first (so peers announce
# `stopped` while the tracker still runs): SIGTERM (clean shutdown), then
# SIGKILL after 5 s. Only these pids, never by name.
stop_bg() {
  local i pid deadline
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${BG_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BG_PIDS=()
}

# show_logs NAME...: the tail of each process's output, for failures.
show_logs() {
  local name
  for name in "$@"; do
    for f in "$WORK/$name.out" "$WORK/$name.err"; do
      [[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
  done
  return 0
}

# wait_for SECONDS WHAT CMD...: retry CMD every 0.2 s until it succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || {
      echo "timed out after ${limit}s waiting for $what" >&2
      return 1
    }
    sleep 0.2
  done
}

# line_in FILE REGEX: succeed once FILE has a line matching REGEX.
line_in() { [[ -f $1 ]] && grep -qE -- "$2" "$1"; }

# The first match of sed expression EXPR in FILE.
field_of() { sed -nE "$2" "$1" | head -n 1; }

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# scrape HOST:PORT OUT: GET /metrics into OUT.
scrape() { curl -fsS --max-time 5 "http://$1/metrics" -o "$2"; }

# metric_value FILE SERIES: the value of one exact series line, or nothing.
metric_value() { awk -v s="$2" '$1 == s { print $2 }' "$1"; }

# Install Debian packages that are missing. Services they would start are
# not started (policy-rc.d), as on a build machine.
apt_install() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  ((${#need[@]})) || return 0
  local sudo=
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 0755 "$policy"
    made_policy=1
  fi
  note "apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  ((made_policy)) && $sudo rm -f "$policy"
  return 0
}

# begin_work NAME: a fresh temporary $WORK, removed with every background
# process stopped when the script exits; the built binaries must exist.
begin_work() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local b
  for b in anomos-tracker anomos; do
    [[ -x $BIN_DIR/$b ]] || fail "$BIN_DIR/$b is missing: cargo build -p tracker -p peer first"
  done
}

cleanup() {
  stop_bg
  rm -rf "$WORK"
}
