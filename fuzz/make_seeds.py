#!/usr/bin/env python3
"""Writes the checked-in seed corpus of every fuzz target from PROTOCOL.md.

Each seed is a valid input taken from the documented test vectors (so the
fuzzers start from inputs that get past the decoders' first checks), plus a
few hand-made edge shapes per target. Re-run after changing a vector:

    python3 fuzz/make_seeds.py        # from the repository root
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
CELL_LEN = 1024
CELL_HEADER_LEN = 5
CODE_LEN = 656
MAX_HOPS = 8
BLOCK_LEN = 64


def vectors():
    """NAME -> {key: value} for every ```vector block of PROTOCOL.md."""
    text = open(os.path.join(ROOT, "PROTOCOL.md")).read()
    out = {}
    for name, body in re.findall(r"```vector (\S+)\n(.*?)```", text, re.S):
        fields, key = {}, None
        for line in body.splitlines():
            m = re.match(r"(\w+) =\s*(.*)", line)
            if m:
                key = m.group(1)
                fields[key] = m.group(2).strip()
            elif key and line.startswith(" "):
                fields[key] += line.strip()
        out[name] = fields
    return out


def hexval(v, key):
    return bytes.fromhex(v[key])


def cell_bytes(v):
    """The documented cell: `head`, then its tail (see the cell tests)."""
    b = bytearray(hexval(v, "head"))
    length = int(v["len"])
    if v["tail"] == "pattern":
        until = int(v["pattern_until"])
        while len(b) < until:
            b.append((len(b) - CELL_HEADER_LEN) % 256)
    b.extend(b"\0" * (length - len(b)))
    return bytes(b)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    v = vectors()
    # hello: the documented hello, and it followed by a cell stream start.
    hello = hexval(v["hello"], "bytes")
    write("hello", "hello", hello)
    write("hello", "hello-then-padding", hello + b"\0" * 8)

    # cell: each command as a whole cell (first byte also picks the chunk
    # size of the stream half of the target), and a two-cell stream.
    cells = {n: cell_bytes(f) for n, f in v.items() if n.startswith("cell_")}
    for n, c in cells.items():
        write("cell", n, c)
    write("cell", "stream-create-data", cells["cell_padding"][:1] + cells["cell_create"]
          + cells["cell_data"])

    # metainfo: both documented torrents.
    write("metainfo", "single", hexval(v["atorrent_single"], "torrent"))
    write("metainfo", "multi", hexval(v["atorrent_multi"], "torrent"))

    # announce: the signed announce, its body, and a response.
    write("announce", "signed", hexval(v["announce_signed"], "signed_announce"))
    write("announce", "request", hexval(v["announce_signed"], "body"))
    write("announce", "response", hexval(v["announce_response"], "response"))

    # peerwire: a handshake alone, and a stream of every message after the
    # pick byte (chunk size and length limit).
    write("peerwire", "handshake", hexval(v["pw_handshake"], "bytes"))
    msgs = b"".join(hexval(f, "bytes") for n, f in sorted(v.items())
                    if n.startswith("pw_") and n != "pw_handshake")
    write("peerwire", "all-messages", b"\x00" + msgs)
    write("peerwire", "all-messages-chunked", b"\x07" + msgs)

    # peel: odd mode bytes steer a valid code of 1..8 hops (then tampered
    # with by what follows); even ones feed raw bytes.
    for hops in (1, 2, 3, 8):
        mode = ((hops - 1) << 1) | 1
        steer = bytes([0x11]) * (32 * hops) + b"\0" * ((MAX_HOPS - hops) * BLOCK_LEN)
        write("peel", "valid-%dhop" % hops, bytes([mode]) + steer + bytes([0x10]))
    write("peel", "raw-code", b"\x00" + bytes(range(256)) * (CODE_LEN // 256) + bytes(CODE_LEN % 256))

    # e2e_open: the first byte cuts the rest into records; shapes around the
    # 16-byte tag and the empty (FIN) record.
    for cut, body in ((15, bytes(16)), (16, bytes(17)), (0, bytes(64)), (255, bytes(300))):
        write("e2e_open", "cut%d-len%d" % (cut, len(body)), bytes([cut]) + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
