#!/bin/bash
# Container health probe: GET /healthz on this container's operator
# listener and succeed only on status 200 with the body "ok". Plain bash
# (/dev/tcp, read -t), so the image needs no curl.
#
# Usage: anomos-healthcheck [PORT]
#   PORT defaults to $ANOMOS_HEALTH_PORT (set by the image), else 9100;
#   the host to $ANOMOS_HEALTH_HOST, else 127.0.0.1.
set -u
port=${1:-${ANOMOS_HEALTH_PORT:-9100}}
host=${ANOMOS_HEALTH_HOST:-127.0.0.1}
wait_s=3

fail() {
  echo "unhealthy: $*" >&2
  exit 1
}

# A connect to a local port answers at once (accepted or refused); every
# read below is bounded, so a listener that accepts and hangs fails too.
exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || fail "nothing listens on $host:$port"
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3 ||
  fail "could not send the request"
IFS= read -r -t "$wait_s" status <&3 || fail "no answer"
status=${status%$'\r'}
case $status in
  "HTTP/1."[01]" 200"*) ;;
  *) fail "$status" ;;
esac
while IFS= read -r -t "$wait_s" line <&3; do
  [[ -z ${line%$'\r'} ]] && break
done
IFS= read -r -t "$wait_s" body <&3
[[ ${body%$'\r'} == ok ]] || fail "unexpected body"
exit 0
