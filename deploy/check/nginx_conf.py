#!/usr/bin/env python3
"""Turn deploy/nginx/anomos-tracker.conf into a runnable test configuration.

The shipped file is what an operator installs; the tests run that same file
with only the host-specific parts replaced: listen addresses, the upstream
address, the certificate paths, and (optionally) a proxy_bind source
address. Every replacement must match exactly as often as expected, so a
change to the shipped file that the tests no longer cover fails loudly
instead of being tested half-way.

Usage: nginx_conf.py PREFIX --cert PEM --key PEM --trusted PEM
                     --listen HOST:PORT --http-listen HOST:PORT
                     --upstream HOST:PORT [--proxy-bind IP]

Writes PREFIX/nginx.conf (a minimal main config: pid, logs and temp paths
inside PREFIX) which includes PREFIX/anomos-tracker.conf.
"""

import argparse
import re
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "nginx" / "anomos-tracker.conf"
LIVE = "/etc/letsencrypt/live/tracker.example.org/"


def replace(text, pattern, repl, count):
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n != count:
        raise SystemExit(f"nginx_conf.py: expected {count} match(es) of {pattern!r}, found {n}")
    return new


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--trusted", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--http-listen", required=True)
    ap.add_argument("--proxy-bind")
    a = ap.parse_args()
    prefix = Path(a.prefix).resolve()
    prefix.mkdir(parents=True, exist_ok=True)

    conf = SHIPPED.read_text(encoding="utf-8")
    # IPv6 listeners: the test machine may have no IPv6 loopback.
    conf = replace(conf, r"^\s*listen \[::\]:\d+( ssl)?;\n", "", 2)
    conf = replace(conf, r"^(\s*)listen 443 ssl;", rf"\1listen {a.listen} ssl;", 1)
    conf = replace(conf, r"^(\s*)listen 80;", rf"\1listen {a.http_listen};", 1)
    conf = replace(conf, r"^(\s*)server 127\.0\.0\.1:8443;", rf"\1server {a.upstream};", 1)
    conf = replace(conf, re.escape(LIVE + "fullchain.pem"), a.cert, 1)
    conf = replace(conf, re.escape(LIVE + "privkey.pem"), a.key, 1)
    conf = replace(conf, r"/etc/nginx/anomos/tracker-cert\.pem", a.trusted, 1)
    conf = replace(conf, r"root /var/www/acme;", f"root {prefix / 'acme'};", 1)
    if a.proxy_bind:
        conf = replace(conf, r"^(\s*)proxy_pass https://anomos_tracker;",
                       rf"\1proxy_pass https://anomos_tracker;\n\1proxy_bind {a.proxy_bind};", 1)
    (prefix / "anomos-tracker.conf").write_text(conf, encoding="utf-8")
    (prefix / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)

    temp = "\n".join(f"    {d}_temp_path {prefix / 'tmp' / d};"
                     for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "tmp").mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(f"""# Test wrapper written by deploy/check/nginx_conf.py.
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
{temp}
    include {prefix / 'anomos-tracker.conf'};
}}
""", encoding="utf-8")


if __name__ == "__main__":
    main()
