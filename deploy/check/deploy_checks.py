#!/usr/bin/env python3
"""Consistency checks of the operator material in deploy/, run by check.sh.

Schema validators see one file at a time; these checks look across files
and against the binaries:

  metrics-referenced      anomos_* names the alert rules and the dashboard query
  metrics-missing NAMES SCRAPE...
                          referenced names no scrape exports (exit 1 if any)
  dashboard               the dashboard's structure (ids, grid, targets, datasource)
  jobs                    job="..." matchers exist in every scrape config
  compose                 cross-references inside compose.yaml
  k8s RENDERED            cross-references inside the rendered manifests, and
                          the operator ports stay cluster-internal
  docker-context          what .dockerignore leaves in the build context: the
                          workspace sources, files they embed, the COPY sources
  cli BIN_DIR RENDERED    every flag deploy files pass to anomos / anomos-tracker
                          is one the built binary accepts

Each prints what it checked and exits non-zero on the first kind of problem.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\banomos_[a-z0-9_]+\b")
JOB = re.compile(r'\bjob\s*=~?\s*"([^"]+)"')


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dashboard():
    with open(DEPLOY / "grafana" / "anomos.json", encoding="utf-8") as f:
        return json.load(f)


def rule_exprs():
    doc = load_yaml(DEPLOY / "prometheus" / "rules.yml")
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_panels(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(d):
    out = [t["expr"] for p in dashboard_panels(d) for t in p.get("targets", [])]
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            out.append(q.get("query", ""))
        elif v.get("type") == "query" and isinstance(q, str):
            out.append(q)
    return out


def referenced():
    names = set()
    for e in rule_exprs() + dashboard_exprs(dashboard()):
        names.update(METRIC.findall(e))
    return sorted(names)


def cmd_metrics_referenced(_args):
    for n in referenced():
        print(n)


def scraped_names(paths):
    names = set()
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def cmd_metrics_missing(args):
    wanted = Path(args[0]).read_text(encoding="utf-8").split()
    have = scraped_names(args[1:])
    missing = [n for n in wanted if n not in have]
    for n in wanted:
        print(f"  {'ok     ' if n in have else 'MISSING'} {n}")
    if missing:
        fail(f"referenced but not exported: {' '.join(missing)}")
    print(f"all {len(wanted)} referenced metric names are exported")


def cmd_dashboard(_args):
    d = dashboard()
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in d:
            fail(f"dashboard has no {key}")
    ds_vars = {v["name"] for v in d["templating"]["list"] if v["type"] == "datasource"}
    ids, panels = set(), 0
    for p in dashboard_panels(d):
        if p["id"] in ids:
            fail(f"panel id {p['id']} used twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if not (0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0):
            fail(f"panel {p['title']!r} lies outside the 24-column grid")
        if p["type"] == "row":
            continue
        panels += 1
        uid = p["datasource"]["uid"]
        if uid.strip("${}") not in ds_vars:
            fail(f"panel {p['title']!r} uses data source {uid}, not a dashboard variable")
        refs = [t["refId"] for t in p["targets"]]
        if not refs or len(refs) != len(set(refs)):
            fail(f"panel {p['title']!r} has no targets or repeated refIds")
        for t in p["targets"]:
            if not METRIC.search(t["expr"]) and "up{" not in t["expr"]:
                fail(f"panel {p['title']!r} queries no Anomos metric: {t['expr']}")
    print(f"dashboard {d['uid']!r}: {panels} panels, {len(ids) - panels} rows, ids unique, grid ok")


def scrape_jobs(path):
    return {c["job_name"] for c in load_yaml(path)["scrape_configs"]}


def k8s_jobs():
    """Job names prometheus-k8s.yml and servicemonitor.yaml produce: the
    app.kubernetes.io/name label of the pods or Services they select."""
    cfg = load_yaml(DEPLOY / "prometheus" / "prometheus-k8s.yml")
    jobs = set()
    for c in cfg["scrape_configs"]:
        for r in c.get("relabel_configs", []):
            re.compile(r.get("regex", "(.*)"))
        if any(r.get("target_label") == "job" and
               r.get("source_labels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
               for r in c.get("relabel_configs", [])):
            for f in ("tracker.yaml", "peers.yaml"):
                for doc in load_yaml_all(DEPLOY / "k8s" / f):
                    if doc["kind"] in ("Deployment", "StatefulSet"):
                        jobs.add(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])
        else:
            jobs.add(c["job_name"])
    return jobs


def cmd_jobs(_args):
    used = set()
    for e in rule_exprs() + dashboard_exprs(dashboard()):
        used.update(JOB.findall(e))
    sm_jobs = set()
    for doc in load_yaml_all(DEPLOY / "k8s" / "servicemonitor.yaml"):
        label = doc["spec"]["jobLabel"]
        sm_jobs.add(doc["spec"]["selector"]["matchLabels"][label])
    configs = {
        "prometheus.yml": scrape_jobs(DEPLOY / "prometheus" / "prometheus.yml"),
        "prometheus-k8s.yml": k8s_jobs(),
        "servicemonitor.yaml": sm_jobs,
    }
    for name, jobs in configs.items():
        missing = used - jobs
        if missing:
            fail(f"{name} has no job {sorted(missing)} (it has {sorted(jobs)})")
    print(f"jobs {sorted(used)} exist in {', '.join(configs)}")


def cmd_compose(_args):
    c = load_yaml(DEPLOY / "compose.yaml")
    services, volumes = c["services"], set(c.get("volumes", {}))
    networks = set(c.get("networks", {}))
    built = {s["image"] for s in services.values() if "build" in s}
    for name, s in services.items():
        if s.get("image", "").startswith("anomos") and s["image"] not in built:
            fail(f"{name}: image {s['image']} is built by no service")
        for dep in s.get("depends_on", {}):
            if dep not in services:
                fail(f"{name} depends on unknown service {dep}")
        for n in s.get("networks", []):
            if n not in networks:
                fail(f"{name}: unknown network {n}")
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                if not (DEPLOY / src).exists():
                    fail(f"{name}: bind source {src} does not exist")
            elif src not in volumes:
                fail(f"{name}: volume {src} is not declared")
        if "build" in s:
            ctx = (DEPLOY / s["build"]["context"]).resolve()
            if not (ctx / s["build"]["dockerfile"]).is_file():
                fail(f"{name}: no Dockerfile at {ctx / s['build']['dockerfile']}")
            dockerfile = (ctx / s["build"]["dockerfile"]).read_text(encoding="utf-8")
            if f" AS {s['build']['target']}" not in dockerfile:
                fail(f"{name}: the Dockerfile has no target {s['build']['target']}")
    prom = services["prometheus"]
    rules = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["rule_files"]
    mounted = {v.split(":")[1] for v in prom["volumes"]}
    if not set(rules) <= mounted:
        fail(f"prometheus rule_files {rules} are not mounted ({sorted(mounted)})")
    prov = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "anomos.yaml")
    path = prov["providers"][0]["options"]["path"]
    if not any(v.split(":")[1].startswith(path + "/") for v in services["grafana"]["volumes"]):
        fail(f"grafana: nothing mounted under the provisioned path {path}")
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    url = ds["datasources"][0]["url"]
    if not url.startswith("http://prometheus:"):
        fail(f"grafana data source {url} is not the compose prometheus service")
    published = [p for s in services.values() for p in s.get("ports", [])]
    for p in published:
        port = str(p).split(":")[-1]
        if port in ("9090", "9100") and not str(p).startswith("127.0.0.1:"):
            fail(f"an operator port is published beyond localhost: {p}")
    print(f"compose: {len(services)} services, volumes, networks, mounts and images consistent")


def cmd_k8s(args):
    docs = load_yaml_all(args[0])
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    operator_ports = {"operator", "metrics"}
    for w in workloads:
        name = w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        sel = w["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            fail(f"{name}: selector does not match its pod labels")
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        vols = {v["name"] for v in spec.get("volumes", [])} | claims
        for v in spec.get("volumes", []):
            for kind, key in (("configMap", "ConfigMap"), ("secret", "Secret"),
                              ("persistentVolumeClaim", "PersistentVolumeClaim")):
                if kind in v:
                    ref = v[kind].get("name") or v[kind].get("secretName") or v[kind].get("claimName")
                    if ref not in by_kind.get(key, {}):
                        fail(f"{name}: {key} {ref} does not exist")
        ann = w["spec"]["template"]["metadata"].get("annotations", {})
        for c in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    fail(f"{name}: mount of unknown volume {m['name']}")
            if ann.get("prometheus.io/scrape") == "true":
                if int(ann["prometheus.io/port"]) not in ports.values():
                    fail(f"{name}: prometheus.io/port {ann['prometheus.io/port']} is no container port")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c and c[probe]["httpGet"]["port"] not in ports:
                    fail(f"{name}: {probe} uses unknown port {c[probe]['httpGet']['port']}")
        if w["kind"] == "StatefulSet" and w["spec"]["serviceName"] not in by_kind["Service"]:
            fail(f"{name}: governing Service {w['spec']['serviceName']} does not exist")
    for s in by_kind.get("Service", {}).values():
        name = s["metadata"]["name"]
        pods = [w for w in workloads if all(
            w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in s["spec"]["selector"].items())]
        if not pods:
            fail(f"Service {name} selects no pods")
        names = {p["name"] for w in pods for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for p in s["spec"]["ports"]:
            if p["targetPort"] not in names:
                fail(f"Service {name}: targetPort {p['targetPort']} is no container port")
            if s["spec"].get("type") in ("LoadBalancer", "NodePort") and p["targetPort"] in operator_ports:
                fail(f"Service {name} exposes the operator port {p['targetPort']} outside the cluster")
    if "Ingress" in by_kind:
        fail("an Ingress would expose the operator listener: there must be none")
    for np in by_kind.get("NetworkPolicy", {}).values():
        sel = np["spec"]["podSelector"]["matchLabels"]
        pods = [w for w in workloads if all(
            w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not pods:
            fail(f"NetworkPolicy {np['metadata']['name']} selects no pods")
        for rule in np["spec"]["ingress"]:
            for p in rule["ports"]:
                if p["port"] in operator_ports and "from" not in rule:
                    fail(f"NetworkPolicy {np['metadata']['name']} opens {p['port']} to everyone")
    for sm in load_yaml_all(DEPLOY / "k8s" / "servicemonitor.yaml"):
        sel = sm["spec"]["selector"]["matchLabels"]
        svcs = [s for s in by_kind["Service"].values()
                if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not svcs:
            fail(f"ServiceMonitor {sm['metadata']['name']} selects no Service")
        for e in sm["spec"]["endpoints"]:
            if not all(any(p["name"] == e["port"] for p in s["spec"]["ports"]) for s in svcs):
                fail(f"ServiceMonitor {sm['metadata']['name']}: port {e['port']} missing on a Service")
    print(f"k8s: {len(docs)} objects; references, selectors, ports, probes consistent; "
          "operator ports cluster-internal")


def invocations(rendered):
    """(file, argv) for every anomos / anomos-tracker invocation in compose,
    the rendered Kubernetes objects, the systemd units and the Dockerfile."""
    out = []
    c = load_yaml(DEPLOY / "compose.yaml")
    for name, s in c["services"].items():
        image = s.get("image", "")
        entry = s.get("entrypoint")
        cmd = [str(a) for a in s.get("command", [])]
        if entry and entry[0] == "anomos-peer-config":
            # URL, OUT_DIR, then options of `anomos-tracker pin`.
            out.append((f"compose:{name}", ["anomos-tracker", "pin"] + cmd[2:]))
        elif entry and entry[0] in ("anomos", "anomos-tracker"):
            out.append((f"compose:{name}", list(entry) + cmd))
        elif entry and entry[0] == "/bin/bash":
            argv = shlex.split(cmd[-1].replace("$$", "$"))
            if "anomos" in argv:
                i = argv.index("anomos")
                out.append((f"compose:{name}", argv[i:argv.index(";", i) if ";" in argv[i:] else None]))
        elif image.startswith("anomos-tracker"):
            out.append((f"compose:{name}", ["anomos-tracker"] + cmd))
        elif image.startswith("anomos"):
            out.append((f"compose:{name}", ["anomos"] + cmd))
    for d in load_yaml_all(rendered):
        if d["kind"] in ("Deployment", "StatefulSet"):
            for ct in d["spec"]["template"]["spec"]["containers"]:
                binary = "anomos-tracker" if "anomos-tracker" in ct["image"] else "anomos"
                out.append((f"k8s:{d['metadata']['name']}", [binary] + ct["args"]))
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.split("=", 1)[1])
                argv[0] = Path(argv[0]).name
                out.append((f"systemd:{unit.name}", argv))
    return out


def cmd_cli(args):
    bin_dir, rendered = Path(args[0]), args[1]
    helps, checked, absent = {}, 0, set()
    for where, argv in invocations(rendered):
        binary = argv[0]
        sub = [argv[1]] if binary == "anomos" and not argv[1].startswith("-") else []
        if binary == "anomos-tracker" and len(argv) > 1 and argv[1] == "pin":
            sub = ["pin"]
        key = (binary, tuple(sub))
        if key not in helps:
            r = subprocess.run([bin_dir / binary, *sub, "--help"], capture_output=True, text=True, timeout=20)
            helps[key] = r.stdout if r.returncode == 0 else None
        if helps[key] is None:
            absent.add(" ".join([binary, *sub]))
            continue
        for a in argv[1:]:
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and not re.search(rf"(?m)^\s+(-\w, )?{re.escape(flag)}\b", helps[key]):
                fail(f"{where}: {' '.join([binary, *sub])} has no option {flag}")
            checked += flag.startswith("--")
    print(f"cli: {checked} options in {len(helps)} commands accepted by the built binaries")
    for a in sorted(absent):
        print(f"cli: note: `{a}` is not in this build; its options were not checked")


def ignore_regex(pattern):
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out, i = out[:-2] + "(.*/)?", i + 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch))
        i += 1
    return re.compile(out + "$")


def context_files(root):
    """Files Docker sends as the build context: for each file the last
    pattern matching it or one of its parent directories decides."""
    rules = []
    for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            rules.append((neg, ignore_regex(line.lstrip("!").strip("/"))))
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    kept = set()
    for f in files:
        parts = f.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = False
        for neg, rx in rules:
            if any(rx.match(p) for p in prefixes):
                excluded = not neg
        if not excluded:
            kept.add(f)
    return set(files), kept


def cmd_docker_context(_args):
    root = DEPLOY.parent
    files, kept = context_files(root)
    members = load_toml_members(root)
    needed = {"Cargo.toml", "Cargo.lock"} | {f"{m}/Cargo.toml" for m in members}
    needed |= {f for f in files if any(f.startswith(f"{m}/src/") for m in members)}
    for f in files:
        if f.endswith(".rs") and f in needed:
            for inc in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', (root / f).read_text(encoding="utf-8")):
                needed.add(normalise(f"{Path(f).parent.as_posix()}/{inc}"))
    dockerfile = (root / "Dockerfile").read_text(encoding="utf-8")
    for src in re.findall(r"^COPY (?:--chmod=\S+ )?(?!--from)(\S+) ", dockerfile, flags=re.M):
        if src != ".":
            needed.add(src)
    lost = sorted(n for n in needed if n not in kept)
    if lost:
        fail(f".dockerignore leaves out what the build needs: {lost[:10]}")
    for heavy in ("target/", ".git/", "fuzz/"):
        if any(k.startswith(heavy) for k in kept):
            fail(f"the build context includes {heavy}")
    print(f"docker context: {len(kept)} of {len(files)} tracked files; all {len(needed)} needed ones kept")


def normalise(path):
    parts = []
    for p in path.split("/"):
        if p == "..":
            parts.pop()
        elif p not in ("", "."):
            parts.append(p)
    return "/".join(parts)


def load_toml_members(root):
    text = (root / "Cargo.toml").read_text(encoding="utf-8")
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    if not m:
        fail("no workspace members in Cargo.toml")
    return re.findall(r'"([^"]+)"', m.group(1))


COMMANDS = {
    "docker-context": cmd_docker_context,
    "metrics-referenced": cmd_metrics_referenced,
    "metrics-missing": cmd_metrics_missing,
    "dashboard": cmd_dashboard,
    "jobs": cmd_jobs,
    "compose": cmd_compose,
    "k8s": cmd_k8s,
    "cli": cmd_cli,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: deploy_checks.py {{{'|'.join(COMMANDS)}}} ...")
    COMMANDS[sys.argv[1]](sys.argv[2:])
