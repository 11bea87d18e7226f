#!/usr/bin/env bash
# End to end through nginx: Debian's nginx runs the shipped
# deploy/nginx/anomos-tracker.conf on 127.0.0.1 (TLS with its own
# certificate, re-encrypting to the tracker, which only speaks HTTPS), and
# relays announce through it with nginx's URL and nginx's certificate pin.
#
# What proves the tracker used X-Forwarded-For: nginx connects to the
# tracker from 127.0.0.3 (proxy_bind) while the relays listen on 127.0.0.1
# only. The tracker dials each peer back (reachability check) at the client
# address it believes, with the announced port, before handing it out as a
# neighbour. Trusting nginx (trusted_proxies = ["127.0.0.3"]), that is the
# X-Forwarded-For address 127.0.0.1 and the relays link up; the control
# phase runs the same tracker trusting nobody, so it dials 127.0.0.3, where
# nothing listens, and no link may form although every announce succeeds.
#
# Also checked: the ACME webroot and the redirect on the HTTP port, that
# only POST /v1/announce is proxied, and that nginx logged no error.
#
# Bounded: each wait has a limit (the whole run takes ~30 s); every process
# started here is stopped on exit. Environment: ANOMOS_BIN_DIR (default
# ${CARGO_TARGET_DIR:-target}/debug), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$ROOT/deploy
BIN_DIR=${ANOMOS_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
PYTHON=${PYTHON:-python3}
RELAYS=4
PROXY_SOURCE=127.0.0.3

# shellcheck source=deploy/check/lib.sh
source "$DEPLOY/check/lib.sh"
begin_work anomos-nginx-e2e
apt_install nginx openssl curl
# nginx's workers run as an unprivileged user when started as root: let
# them reach the temp directories (the private keys stay mode 0600).
chmod 0755 "$WORK"

tracker_port=$(free_port)
nginx_port=$(free_port)
http_port=$(free_port)
nginx_url=https://127.0.0.1:$nginx_port

# The tracker's own certificate (what nginx checks upstream) and nginx's
# certificate (what peers pin), with the pin computed as deploy/README.md
# tells operators to.
"$BIN_DIR/anomos-tracker" pin --data-dir "$WORK/tracker" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=tracker.example.org -keyout "$WORK/nginx-key.pem" -out "$WORK/nginx-cert.pem" 2>/dev/null
nginx_pin=$(openssl x509 -in "$WORK/nginx-cert.pem" -pubkey -noout |
  openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)

"$PYTHON" "$DEPLOY/check/nginx_conf.py" "$WORK/nginx" \
  --cert "$WORK/nginx-cert.pem" --key "$WORK/nginx-key.pem" \
  --trusted "$WORK/tracker/tracker-cert.pem" \
  --listen "127.0.0.1:$nginx_port" --http-listen "127.0.0.1:$http_port" \
  --upstream "127.0.0.1:$tracker_port" --proxy-bind "$PROXY_SOURCE"
chmod -R a+rX "$WORK/nginx"

# start_tracker NAME TRUSTED: the tracker on loopback only, as behind nginx
# in production, trusting the TOML list TRUSTED. Short announce intervals
# keep the test quick.
start_tracker() {
  cat >"$WORK/$1.toml" <<EOF
listen = "127.0.0.1:$tracker_port"
trusted_proxies = $2
announce_interval_secs = 5
session_ttl_secs = 30
reach_retry_secs = 1
reach_retry_max_secs = 2
EOF
  start_bg "$1" "$BIN_DIR/anomos-tracker" --config "$WORK/$1.toml" --data-dir "$WORK/tracker" \
    --metrics 127.0.0.1:0 --allow-same-ip
  wait_for 20 "tracker $1" line_in "$WORK/$1.out" '^operator endpoints on ' ||
    { show_logs "$1"; fail "tracker $1 did not start"; }
  TRACKER_OPERATOR=$(field_of "$WORK/$1.out" 's#^operator endpoints on http://(.*)$#\1#p')
}

# start_relays PREFIX N: N ephemeral relays announcing through nginx,
# listening on 127.0.0.1 only. Sets RELAY_METRICS (their operator addresses).
start_relays() {
  local i name
  RELAY_METRICS=()
  for ((i = 1; i <= $2; i++)); do
    name=$1-$i
    start_bg "$name" "$BIN_DIR/anomos" relay --tracker "$nginx_url" --tracker-pin "$nginx_pin" \
      --ephemeral --listen 127.0.0.1:0 --metrics 127.0.0.1:0
  done
  for ((i = 1; i <= $2; i++)); do
    name=$1-$i
    wait_for 20 "relay $name" line_in "$WORK/$name.out" ' metrics 127\.0\.0\.1:[0-9]+$' ||
      { show_logs "$name"; fail "relay $name did not start"; }
    RELAY_METRICS+=("$(field_of "$WORK/$name.out" 's#.* metrics (127\.0\.0\.1:[0-9]+)$#\1#p')")
  done
}

# status_field NAME: a number from the tracker's admin-token-protected /status.
status_field() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $(cat "$WORK/tracker/admin-token")" \
    "http://$TRACKER_OPERATOR/status" | awk -v k="$1" '$1 == k { print $2 }'
}

# tracker_metric SERIES: one exact series from the tracker's /metrics.
tracker_metric() {
  scrape "$TRACKER_OPERATOR" "$WORK/tracker.prom" && metric_value "$WORK/tracker.prom" "$1"
}

# min_neighbours: the fewest neighbour links any relay has right now.
min_neighbours() {
  local m min=999 v
  for m in "${RELAY_METRICS[@]}"; do
    scrape "$m" "$WORK/relay.prom" || return 1
    v=$(metric_value "$WORK/relay.prom" anomos_neighbors_connected)
    ((v < min)) && min=$v
  done
  echo "$min"
}

# Stop the tracker and the relays; nginx (started first) keeps running.
stop_all_but_nginx() {
  local keep=${BG_PIDS[0]}
  BG_PIDS=("${BG_PIDS[@]:1}")
  stop_bg
  BG_PIDS=("$keep")
}

all_linked() { [[ $(min_neighbours) -ge 1 ]]; }
announced_ok() { [[ $(tracker_metric 'anomos_tracker_announces_total{result="ok"}') -ge $1 ]]; }

step "nginx (shipped config) in front of the tracker"
start_bg nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;'
nginx_up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$http_port/"; }
wait_for 10 "nginx" nginx_up || { cat "$WORK/nginx/error.log" >&2; fail "nginx did not start"; }

echo acme-token-content >"$WORK/nginx/acme/.well-known/acme-challenge/e2e-token"
chmod a+r "$WORK/nginx/acme/.well-known/acme-challenge/e2e-token"
[[ $(curl -fsS --max-time 5 "http://127.0.0.1:$http_port/.well-known/acme-challenge/e2e-token") == acme-token-content ]] ||
  fail "the ACME webroot is not served on the HTTP port"
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' --max-time 5 "http://127.0.0.1:$http_port/v1/announce")
[[ $redirect == "301 https://127.0.0.1/v1/announce" ]] || fail "HTTP port answered '$redirect' instead of a redirect to https"
note "HTTP port: ACME challenge served, everything else redirected to https"

start_tracker tracker '["'"$PROXY_SOURCE"'"]'
for path in /metrics /status /healthz /; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$nginx_url$path")
  [[ $code == 404 ]] || fail "nginx answered $code for $path: only POST /v1/announce may pass"
done
code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$nginx_url/v1/announce")
[[ $code == 403 ]] || fail "GET /v1/announce answered $code, not 403"
note "only POST /v1/announce is proxied (operator paths 404, GET 403)"
# The refused GET is logged as an error; only what comes after counts.
log_start=$(($(wc -l <"$WORK/nginx/error.log") + 1))

# The network through nginx: every relay registers and links with a
# neighbour, which needs the address the tracker learned from
# X-Forwarded-For; then a seeder and a downloader that also announce
# through nginx move a file anonymously over that network.
exercise_network_through_nginx() {
  start_relays relay "$RELAYS"
  wait_for 30 "$RELAYS announces through nginx" announced_ok "$RELAYS" ||
    { show_logs tracker relay-1; cat "$WORK/nginx/error.log" >&2; fail "announces through nginx failed"; }
  wait_for 45 "every relay to link up" all_linked ||
    { show_logs tracker relay-1 relay-2; fail "relays behind nginx did not link up"; }
  local peers edges
  peers=$(status_field peers)
  edges=$(status_field graph_edges)
  [[ $peers -eq $RELAYS && $edges -ge 1 ]] || fail "/status shows $peers peers and $edges edges"
  note "$RELAYS relays announced through nginx, /status: $peers peers, $edges edges; every relay has a neighbour"
  download_through_nginx
}

# A torrent whose tracker is nginx (URL and pin), one seeder, and
# `anomos get` through circuits of the network above; the copy must match.
download_through_nginx() {
  head -c $((4 * 1048576 + 12345)) /dev/urandom >"$WORK/shared.bin"
  "$BIN_DIR/anomos" make-torrent "$WORK/shared.bin" --tracker "$nginx_url" \
    --tracker-pin "$nginx_pin" -o "$WORK/shared.atorrent" >/dev/null ||
    fail "make-torrent failed"
  start_bg seeder "$BIN_DIR/anomos" seed "$WORK/shared.atorrent" --data "$WORK/shared.bin" \
    --ephemeral --listen 127.0.0.1:0 --metrics 127.0.0.1:0
  wait_for 30 "the seeder" line_in "$WORK/seeder.out" ' metrics 127\.0\.0\.1:[0-9]+$' ||
    { show_logs seeder; fail "the seeder did not start"; }
  mkdir -p "$WORK/got"
  if ! timeout 120 "$BIN_DIR/anomos" get "$WORK/shared.atorrent" --out "$WORK/got" \
    --ephemeral --listen 127.0.0.1:0 --metrics 127.0.0.1:0 >"$WORK/get.out" 2>"$WORK/get.err"; then
    show_logs seeder get
    fail "anomos get through nginx failed"
  fi
  cmp -s "$WORK/shared.bin" "$WORK/got/shared.bin" || fail "the downloaded copy differs"
  note "anonymous download through the nginx-fronted tracker: $(grep -o 'relays per open circuit.*' "$WORK/get.out")"
}
exercise_network_through_nginx
stop_all_but_nginx

step "control: the same tracker trusting no proxy"
start_tracker control '[]'
start_relays control 2
wait_for 30 "2 announces through nginx" announced_ok 2 ||
  { show_logs control control-1; fail "announces through nginx failed in the control phase"; }
# Dials at 127.0.0.3 are refused at once and retried every 1-2 s: by now
# the tracker has tried several times.
sleep 6
[[ $(min_neighbours) -eq 0 && $(status_field graph_edges) -eq 0 ]] ||
  fail "relays linked although the tracker ignored X-Forwarded-For: the positive phase proves nothing"
note "announces accepted, no link: the tracker dialled nginx's address, as expected without trust"

if tail -n "+$log_start" "$WORK/nginx/error.log" | grep -E '\[(error|crit|alert|emerg)\]' >&2; then
  fail "nginx logged errors"
fi
note "nginx error log clean"
stop_bg
echo "nginx e2e passed"
