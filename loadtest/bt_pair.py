#!/usr/bin/python3
"""Real BitTorrent baseline on loopback: seed -> download of one file.

Runs every pair of Debian's BitTorrent clients that can talk to each other
on 127.0.0.1 (libtorrent through python3-libtorrent, and aria2c) with DHT,
local peer discovery, PEX, UPnP/NAT-PMP and uTP off, a tiny in-process HTTP
tracker that only ever hands out the seeder's loopback address, and checks
the downloaded file byte for byte. Prints one JSON object per pair and, with
--json, writes them all to a file.

Throughput is the file size over the time from the downloader's start to its
completion (connection set-up and the tracker round trip included, as for
`anomos get`), and separately from its first received byte.

Usage: bt_pair.py FILE [--pairs lt-lt,aria2-lt,...] [--json OUT]
"""

import argparse
import filecmp
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import libtorrent as lt

MIB = 1024 * 1024
PAIRS = ["lt-lt", "aria2-lt", "lt-aria2", "aria2-aria2"]
TIMEOUT = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tracker:
    """Answers every announce with one peer: the current seeder."""

    def __init__(self):
        self.seeder_port = 0
        tracker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                peer = socket.inet_aton("127.0.0.1") + struct.pack(">H", tracker.seeder_port)
                body = b"d8:intervali1800e5:peers6:" + peer + b"e"
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (aria2 retries on its own)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/announce" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def make_torrent(path, url, out):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    # v1 only: aria2 does not speak BitTorrent v2 (hybrid torrents stall).
    t = lt.create_torrent(fs, 1 << 20, flags=lt.create_torrent.v1_only)
    t.add_tracker(url)
    lt.set_piece_hashes(t, os.path.dirname(path))
    with open(out, "wb") as f:
        f.write(lt.bencode(t.generate()))


def lt_session(port):
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    })


def lt_add(ses, torrent, save, seed):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(atp)


ARIA2_COMMON = [
    "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
    "--enable-peer-exchange=false", "--disable-ipv6=true", "--console-log-level=warn",
    "--summary-interval=0", "--file-allocation=none", "--check-integrity=false",
    "--bt-max-peers=0", "--max-overall-upload-limit=0", "--max-overall-download-limit=0",
]


def start_seeder(kind, torrent, data_dir, port):
    if kind == "lt":
        ses = lt_session(port)
        h = lt_add(ses, torrent, data_dir, seed=True)
        return ("lt", ses, h)
    proc = subprocess.Popen(
        ["aria2c", *ARIA2_COMMON, "--listen-port=%d" % port, "--seed-ratio=0.0",
         "--bt-seed-unverified=true", "--dir=" + data_dir, torrent],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ("aria2", proc, None)


def stop_seeder(seeder):
    kind, obj, handle = seeder
    if kind == "lt":
        obj.remove_torrent(handle)
        del obj
    else:
        obj.terminate()
        obj.wait(10)


def download(kind, torrent, out_dir, size, seeder_port):
    """Returns (seconds from start, seconds from first byte)."""
    start = time.monotonic()
    first = None
    if kind == "lt":
        ses = lt_session(free_port())
        h = lt_add(ses, torrent, out_dir, seed=False)
        h.connect_peer(("127.0.0.1", seeder_port))
        while True:
            st = h.status()
            if first is None and st.total_wanted_done > 0:
                first = time.monotonic()
            if st.is_seeding or st.total_wanted_done >= size:
                break
            if time.monotonic() - start > TIMEOUT:
                raise RuntimeError("libtorrent download timed out")
            time.sleep(0.005)
        end = time.monotonic()
        ses.remove_torrent(h)
        del ses
    else:
        proc = subprocess.Popen(
            ["aria2c", *ARIA2_COMMON, "--listen-port=%d" % free_port(), "--seed-time=0",
             "--dir=" + out_dir, torrent],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = None
        while proc.poll() is None:
            if first is None:
                if target is None:
                    names = [n for n in os.listdir(out_dir) if not n.endswith(".aria2")]
                    target = os.path.join(out_dir, names[0]) if names else None
                if target and os.path.exists(target) and os.stat(target).st_blocks > 0:
                    first = time.monotonic()
            if time.monotonic() - start > TIMEOUT:
                proc.kill()
                raise RuntimeError("aria2c download timed out")
            time.sleep(0.005)
        end = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError("aria2c exited with %d" % proc.returncode)
    return end - start, end - (first or start)


def run_pair(pair, src, work, tracker):
    seed_kind, down_kind = pair.split("-")
    size = os.path.getsize(src)
    torrent = os.path.join(work, "file.torrent")
    port = free_port()
    tracker.seeder_port = port
    seeder = start_seeder(seed_kind, torrent, os.path.dirname(src), port)
    time.sleep(1.0)  # let the seeder listen (aria2 loads the torrent first)
    out = tempfile.mkdtemp(dir=work)
    try:
        total, from_first = download(down_kind, torrent, out, size, port)
    finally:
        stop_seeder(seeder)
    got = os.path.join(out, os.path.basename(src))
    same = filecmp.cmp(src, got, shallow=False)
    shutil.rmtree(out)
    if not same:
        raise RuntimeError("%s: downloaded file differs" % pair)
    return {
        "pair": pair,
        "bytes": size,
        "seconds": round(total, 3),
        "mib_per_s": round(size / MIB / total, 1),
        "mib_per_s_from_first_byte": round(size / MIB / from_first, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--json")
    args = ap.parse_args()
    src = os.path.abspath(args.file)
    work = tempfile.mkdtemp(prefix="bt-pair-")
    results = []
    try:
        tracker = Tracker()
        make_torrent(src, tracker.url, os.path.join(work, "file.torrent"))
        for pair in args.pairs.split(","):
            if pair not in PAIRS:
                sys.exit("unknown pair %r (known: %s)" % (pair, ", ".join(PAIRS)))
            r = run_pair(pair, src, work, tracker)
            print(json.dumps(r), flush=True)
            results.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
