#!/usr/bin/env python3
"""One keep-alive client for bench/instructions.sh: sends N requests of a mode, one at a time, and
checks every answer's status, so every proxy is counted on exactly the same request mix.

usage: send.py PORT MODE N TOKENS_DIR [START]
EXPECT_STATUS in the environment overrides the status expected (bench/floor.rs refuses all with 401).
modes: valid (rotates over valid-alpha.txt, from line START), unknown (one unknown token),
       unknown-rotating (a different well-formed unknown token every request, the START-th onward
       of a fixed sequence, so no two phases repeat one), wrong-scope (a /beta token on /alpha)
"""
import http.client
import os
import random
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from gen_tokens import BASE62, checksum  # noqa: E402

EXPECT = {"valid": 200, "unknown": 401, "unknown-rotating": 401, "wrong-scope": 403}


def rotating(start: int):
    """Well-formed (right checksum) tokens nobody issued, from a fixed seed: the same sequence for
    every proxy."""
    rng = random.Random(16)
    i = 0
    while True:
        body = "bgt_" + "".join(rng.choice(BASE62) for _ in range(30))
        if i >= start:
            yield body + checksum(body)
        i += 1


def main() -> None:
    port, mode, n, tokens = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    start = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if mode == "valid":
        pool = open(f"{tokens}/valid-alpha.txt").read().split()
        values = (pool[(start + i) % len(pool)] for i in range(n))
    elif mode == "unknown-rotating":
        values = rotating(start)
    else:
        one = open(f"{tokens}/{'unknown' if mode == 'unknown' else 'wrong-scope'}.txt").read().strip()
        values = iter(lambda: one, None)
    c = http.client.HTTPConnection("127.0.0.1", port)
    expect = int(os.environ.get("EXPECT_STATUS", EXPECT[mode]))
    for _, value in zip(range(n), values):
        c.request("GET", "/alpha/x", headers={"Authorization": "Bearer " + value})
        r = c.getresponse()
        r.read()
        if r.status != expect:
            sys.exit(f"{mode}: got {r.status}, expected {expect}")


if __name__ == "__main__":
    main()
