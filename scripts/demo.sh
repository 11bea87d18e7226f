#!/usr/bin/env bash
# The main job on a local default: an anonymous download on 127.0.0.1.
#
# Starts a tracker, RELAYS relay peers and two seeders, makes a torrent of a
# freshly generated random file, downloads it with `anomos get` through
# relay circuits, checks the copy byte for byte and prints what happened:
# relays per circuit, which seeders served, what each relay carried, and
# the throughput. Everything runs from a temporary directory and is stopped
# and removed at the end.
#
# Usage: scripts/demo.sh [MIB (default 64)] [RELAYS (default 6)]
# Environment: CIRCUIT_RELAYS=N plans every circuit with exactly N relays
# (default: the tracker's 2 to 4); SEEDERS (default 2); JSON=FILE writes
# the figures as JSON; ANOMOS_BIN=DIR runs the `anomos` and `anomos-tracker`
# binaries in DIR instead of building (e.g. to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-64}
RELAYS=${2:-6}
SEEDERS=${SEEDERS:-2}

if ! dpkg -s pkg-config libssl-dev >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config libssl-dev
fi
if [[ -n "${ANOMOS_BIN:-}" ]]; then
  BIN=$ANOMOS_BIN
else
  echo "building (release)…"
  cargo build --release --locked -q -p tracker -p peer
  BIN=${CARGO_TARGET_DIR:-target}/release
fi

DIR=$(mktemp -d /tmp/anomos-demo.XXXXXX)
PIDS=()
cleanup() {
  # Peers first (each breaks its circuits and announces `stopped`), the
  # tracker (the first started) last.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 1; i--)); do kill "${PIDS[$i]}" 2>/dev/null || true; done
  for ((i = ${#PIDS[@]} - 1; i >= 1; i--)); do wait "${PIDS[$i]}" 2>/dev/null || true; done
  if ((${#PIDS[@]})); then kill "${PIDS[0]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# Wait until FILE has a line matching PATTERN; print that line.
wait_line() {
  local file=$1 pattern=$2
  for _ in $(seq 1 300); do
    if grep -m1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2
  return 1
}

# Sum of a metric (all label values) at a metrics address.
metric() {
  curl -sf "http://$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# CPU seconds (user + system) the given processes have used so far.
cpu() {
  local ticks=0 f
  for p in "$@"; do
    read -r -a f <"/proc/$p/stat"
    ticks=$((ticks + f[13] + f[14]))
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# Short announce interval and tolerant rate limits: a lab on one host.
cat >"$DIR/tracker.toml" <<EOF
announce_interval_secs = 5
session_ttl_secs = 60
rate_per_ip = 10000.0
burst_per_ip = 10000.0
EOF
if [[ -n "${CIRCUIT_RELAYS:-}" ]]; then
  printf 'min_relays = %d\nmax_relays = %d\n' "$CIRCUIT_RELAYS" "$CIRCUIT_RELAYS" >>"$DIR/tracker.toml"
fi
cat >"$DIR/peer.toml" <<EOF
min_announce_gap_ms = 200
dial_retry_ms = 100
dial_retry_max_ms = 2000
EOF

"$BIN/anomos-tracker" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --data-dir "$DIR/tracker" \
  --allow-same-ip --config "$DIR/tracker.toml" >"$DIR/tracker.out" 2>"$DIR/tracker.err" &
PIDS+=($!)
URL=$(wait_line "$DIR/tracker.out" '^anomos-tracker listening on' | awk '{print $4}')
PIN=$(wait_line "$DIR/tracker.out" '^tracker pin' | awk '{print $3}')
echo "tracker at $URL"

peer_opts() { echo --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --data-dir "$DIR/$1" --config "$DIR/peer.toml"; }

RELAY_METRICS=()
RELAY_PIDS=()
for i in $(seq 1 "$RELAYS"); do
  # shellcheck disable=SC2046
  "$BIN/anomos" relay --tracker "$URL" --tracker-pin "$PIN" $(peer_opts "relay$i") \
    >"$DIR/relay$i.out" 2>"$DIR/relay$i.err" &
  PIDS+=($!)
  RELAY_PIDS+=($!)
done
for i in $(seq 1 "$RELAYS"); do
  RELAY_METRICS+=("$(wait_line "$DIR/relay$i.out" 'metrics' | awk '{print $NF}')")
done
echo "$RELAYS relays up"

mkdir -p "$DIR/share"
head -c "$((MIB * 1048576))" /dev/urandom >"$DIR/share/demo.bin"
"$BIN/anomos" make-torrent "$DIR/share/demo.bin" --tracker "$URL" --tracker-pin "$PIN" \
  -o "$DIR/demo.atorrent"

SEED_METRICS=()
SEED_PIDS=()
for s in $(seq 1 "$SEEDERS"); do
  # shellcheck disable=SC2046
  "$BIN/anomos" seed "$DIR/demo.atorrent" --data "$DIR/share/demo.bin" $(peer_opts "seed$s") \
    >"$DIR/seed$s.out" 2>"$DIR/seed$s.err" &
  PIDS+=($!)
  SEED_PIDS+=($!)
done
for s in $(seq 1 "$SEEDERS"); do
  SEED_METRICS+=("$(wait_line "$DIR/seed$s.out" 'metrics' | awk '{print $NF}')")
done
echo "$SEEDERS seeder(s) up; downloading ${MIB} MiB anonymously…"
sleep 1

SEED_CPU0=$(cpu "${SEED_PIDS[@]}")
RELAY_CPU0=$(cpu "${RELAY_PIDS[@]}")
START=$(date +%s.%N)
# `time` reports the downloader's own CPU seconds (tee's are negligible).
exec 3>&2
TIMEFORMAT='%U %S'
# shellcheck disable=SC2046
{ time "$BIN/anomos" get "$DIR/demo.atorrent" --out "$DIR/got" $(peer_opts downloader) 2>&3 \
  | tee "$DIR/get.out"; } 2>"$DIR/get.time"
END=$(date +%s.%N)
GET_CPU=$(awk '{ printf "%.2f", $1 + $2 }' "$DIR/get.time")
SEED_CPU=$(awk -v a="$(cpu "${SEED_PIDS[@]}")" -v b="$SEED_CPU0" 'BEGIN { printf "%.2f", a - b }')
RELAY_CPU=$(awk -v a="$(cpu "${RELAY_PIDS[@]}")" -v b="$RELAY_CPU0" 'BEGIN { printf "%.2f", a - b }')
cmp "$DIR/share/demo.bin" "$DIR/got/demo.bin"
sleep 1.5  # the peers publish their counters once a second
echo
echo "identical content: yes ($(mib $((MIB * 1048576))) checked with cmp)"
awk -v s="$START" -v e="$END" -v m="$MIB" 'BEGIN { printf "wall time of anomos get: %.1f s, %.1f MiB/s\n", e - s, m / (e - s) }'
# Seconds from the first block of data to the end, as `anomos get` reports it.
DATA_SECS=$(sed -n 's/.*(\([0-9.]*\) s from the first block).*/\1/p' "$DIR/get.out" | tail -1)
awk -v d="$DATA_SECS" -v m="$MIB" 'BEGIN { if (d > 0) printf "from the first block: %.2f s, %.1f MiB/s\n", d, m / d }'
for s in $(seq 1 "$SEEDERS"); do
  echo "seeder $s uploaded $(mib "$(metric "${SEED_METRICS[$((s - 1))]}" anomos_uploaded_bytes_total)")"
done
total=0
for i in $(seq 1 "$RELAYS"); do
  b=$(metric "${RELAY_METRICS[$((i - 1))]}" anomos_relay_bytes_total)
  total=$((total + b))
  echo "relay $i carried $(mib "$b")"
done
echo "all relays together: $(mib "$total") (every byte crosses at least two relays)"
awk -v g="$GET_CPU" -v s="$SEED_CPU" -v r="$RELAY_CPU" -v m="$MIB" 'BEGIN {
  b = m * 1048576
  printf "CPU during the download: downloader %.2f s, seeders %.2f s, relays %.2f s (%.1f ns per byte in all)\n", g, s, r, (g + s + r) * 1e9 / b
}'
if [[ -n "${JSON:-}" ]]; then
  awk -v s="$START" -v e="$END" -v m="$MIB" -v r="${CIRCUIT_RELAYS:-0}" -v t="$total" -v d="$DATA_SECS" \
    -v gc="$GET_CPU" -v sc="$SEED_CPU" -v rc="$RELAY_CPU" \
    'BEGIN { printf "{\"mib\": %d, \"circuit_relays\": %d, \"seconds\": %.3f, \"mib_per_s\": %.1f, \"mib_per_s_from_first_block\": %.1f, \"relay_bytes\": %d, \"cpu_seconds\": {\"downloader\": %.2f, \"seeders\": %.2f, \"relays\": %.2f}}\n", m, r, e - s, m / (e - s), (d > 0 ? m / d : 0), t, gc, sc, rc }' >"$JSON"
fi
