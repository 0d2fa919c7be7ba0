#!/usr/bin/env python3
"""Generates the benchmark's token set in bentogate's own value format, plus the same set as an
nginx map and an HAProxy map, so every contender checks the same tokens.

usage: gen_tokens.py OUT_DIR COUNT
writes: import.json (bentogate token import), nginx-map.conf, haproxy.map,
        valid-alpha.txt (tokens allowed on /alpha), unknown.txt, wrong-scope.txt
"""
import json
import secrets
import sys
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def checksum(body: str) -> str:
    """CRC-32 of the body in 6 base62 digits, most significant first (src/token.rs)."""
    n = zlib.crc32(body.encode())
    out = []
    for _ in range(6):
        out.append(BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


RNG = secrets.SystemRandom()


def value() -> str:
    # One call per token (not per character): a million tokens in seconds.
    body = "bgt_" + "".join(RNG.choices(BASE62, k=30))
    return body + checksum(body)


def main() -> None:
    out, count = sys.argv[1], int(sys.argv[2])
    tokens = []
    for i in range(count):
        # About a tenth for All Deployments, the rest split between the two deployments.
        scope = "*" if i % 10 == 0 else ("alpha" if i % 2 else "beta")
        tokens.append((value(), scope))
    entries = []
    for i, (v, scope) in enumerate(tokens):
        e = {"name": f"bench{i}", "value": v}
        if scope == "*":
            e["all_deployments"] = True
        else:
            e["deployments"] = [scope]
        entries.append(e)
    with open(f"{out}/import.json", "w") as f:
        json.dump(entries, f)
    with open(f"{out}/nginx-map.conf", "w") as f:
        for v, scope in tokens:
            f.write(f'    "Bearer {v}" "{scope}";\n')
    with open(f"{out}/haproxy.map", "w") as f:
        for v, scope in tokens:
            f.write(f"{v} {scope}\n")
    with open(f"{out}/valid-alpha.txt", "w") as f:
        f.writelines(f"{v}\n" for v, scope in tokens if scope in ("alpha", "*"))
    with open(f"{out}/unknown.txt", "w") as f:
        f.write(value() + "\n")
    with open(f"{out}/wrong-scope.txt", "w") as f:
        f.write(next(v for v, scope in tokens if scope == "beta") + "\n")


if __name__ == "__main__":
    main()
