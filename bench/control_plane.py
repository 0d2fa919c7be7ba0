#!/usr/bin/env python3
"""The control plane at scale: every token operation against the running binary, at several token
counts, for the file source and the PostgreSQL source. Driven by bench/control-plane.sh.

usage: control_plane.py BIN OUT_DIR UPSTREAM_PORT SOURCE COUNT [LABEL]
  SOURCE: file | postgres (uses $BENCH_POSTGRES, a server URL; the database bentogate_bench_cp
  is dropped and recreated). Prints one JSON line of results; the wrapper makes the table.

What it measures, in this order, on one server process:
  creates (200), gets (200), list first page (50), list by cursor (50 pages of 100),
  list at an offset in the middle (20), searches (50, selective), deletes (the 200 created);
  p50/p99 of each; the server's RSS before, its peak during the operations (VmHWM after
  clear_refs), and after; then the data plane's p99 under wrk, quiet and while the control
  plane takes 100 creates per second.
"""
import hashlib
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KNOWN = 1000  # tokens whose values the data-plane load presents


def checksum(body):
    n = zlib.crc32(body.encode())
    out = []
    for _ in range(6):
        out.append(BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


def value():
    body = "bgt_" + "".join(secrets.choice(BASE62) for _ in range(30))
    return body + checksum(body)


def write_token_file(path, count, values_path):
    """A token file in bentogate's own line format: KNOWN tokens with known values, the rest
    random digests; creation times spread over a year."""
    known = []
    base = 1_735_689_600  # 2025-01-01
    with open(path, "w") as f:
        f.write('{"organization": {"name": "bench"},\n"members": [],\n"tokens": [')
        for i in range(count):
            if i < KNOWN:
                v = value()
                known.append(v)
                digest = hashlib.sha256(v.encode()).hexdigest()
            else:
                digest = secrets.token_hex(32)
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i * 31))
            rec = {
                "uid": secrets.token_hex(10),
                "name": f"bench{i}",
                "digest": f"sha256:{digest}",
                "kind": "organization",
                "user": "admin",
                "created_at": at,
                "updated_at": at,
                "deployments": ["alpha"],
            }
            f.write(("\n  " if i == 0 else ",\n  ") + json.dumps(rec, separators=(",", ":")))
        f.write("\n]}\n")
    with open(values_path, "w") as f:
        f.writelines(v + "\n" for v in known)


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Api:
    def __init__(self, port, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"X-YATAI-API-TOKEN": self.token, "Content-Type": "application/json"}
        t = time.perf_counter()
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        text = r.read()
        took = (time.perf_counter() - t) * 1000
        if r.status != 200:
            raise SystemExit(f"{method} {path}: {r.status} {text[:200]!r}")
        return took, json.loads(text)


def wait_ready(port, limit=600):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def to_ms(text):
    """A wrk duration (`812.00us`, `1.25ms`, `1.02s`) in milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def wrk_p99(port, values, seconds):
    """p99 (ms) of wrk against the data plane with the known tokens, round robin."""
    env = dict(os.environ, TOKENS=values)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s",
         os.path.join(os.path.dirname(__file__), "tokens.lua"), f"http://127.0.0.1:{port}/alpha/x"],
        env=env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "99%":
            return to_ms(parts[1])
    raise SystemExit("no p99 in wrk output:\n" + out)


def main():
    binary, out, upstream, source, count = sys.argv[1:6]
    label = sys.argv[6] if len(sys.argv) > 6 else ""
    count = int(count)
    work = os.path.join(out, f"cp-{source}-{count}{label}")
    os.makedirs(work, exist_ok=True)
    tokens = os.path.join(work, "tokens.json")
    values = os.path.join(work, "values.txt")
    write_token_file(tokens, count, values)
    proxy_port, admin_port = 18183, 18193
    if source == "postgres":
        url = os.environ["BENCH_POSTGRES"].rsplit("/", 1)[0] + "/bentogate_bench_cp"
        admin = os.environ["BENCH_POSTGRES"]
        subprocess.run(["psql", admin, "-qc", "DROP DATABASE IF EXISTS bentogate_bench_cp WITH (FORCE)"], check=True)
        subprocess.run(["psql", admin, "-qc", "CREATE DATABASE bentogate_bench_cp"], check=True)
        tokens_section = f'tokens: {{source: postgres, postgres: {{url: "{url}"}}}}'
    else:
        tokens_section = f"tokens: {{file: {tokens}}}"
    config = os.path.join(work, "bentogate.yaml")
    with open(config, "w") as f:
        f.write(f"""listeners: [{{address: "127.0.0.1:{proxy_port}"}}]
admin: {{address: "127.0.0.1:{admin_port}"}}
log: {{access: false, level: warn}}
throttle: {{failures_per_minute: 0}}
{tokens_section}
deployments:
  - {{name: alpha, path_prefix: /alpha, upstream: "http://127.0.0.1:{upstream}", policy: protected}}
""")
    t = time.time()
    if source == "postgres":
        subprocess.run([binary, "migrate", "--config", config, "--from-file", tokens], check=True,
                       stdout=subprocess.DEVNULL)
    load_s = time.time() - t
    root = json.loads(subprocess.run(
        [binary, "token", "create", "root", "--org", "--scope", "api", "--scope", "write_organization",
         "--all-deployments", "-o", "json", "--config", config],
        check=True, capture_output=True, text=True).stdout)["token"]
    server = subprocess.Popen([binary, "serve", "--config", config], start_new_session=True)
    try:
        t = time.time()
        wait_ready(admin_port)
        start_s = time.time() - t
        time.sleep(1)
        rss_before = rss_kib(server.pid)
        with open(f"/proc/{server.pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM: the peak below is the operations' own
        api = Api(admin_port, root)
        # A change rewrites the whole file: at a million tokens (past the file source's intended
        # size) fewer changes are timed, so the run ends.
        changes = 20 if source == "file" and count >= 1_000_000 else 200
        r = {}
        created = []
        lat = []
        for i in range(changes):
            took, v = api.call("POST", "/api/v1/api_tokens", {"name": f"cp{i}", "deployments": ["alpha"]})
            lat.append(took)
            created.append(v["uid"])
        r["create"] = lat
        _, page = api.call("GET", "/api/v1/api_tokens?count=1000")
        uids = [t["uid"] for t in page["items"]]
        r["get"] = [api.call("GET", f"/api/v1/api_tokens/{uids[i % len(uids)]}")[0] for i in range(200)]
        r["list first page"] = [api.call("GET", "/api/v1/api_tokens?count=100")[0] for _ in range(50)]
        lat, after = [], None
        for _ in range(50):
            path = "/api/v1/api_tokens?count=100" + (f"&after={after}" if after else "")
            took, page = api.call("GET", path)
            lat.append(took)
            after = page["next"]
        r["list by cursor"] = lat
        r["list at offset N/2"] = [api.call("GET", f"/api/v1/api_tokens?count=100&start={count // 2}")[0] for _ in range(20)]
        r["search"] = [api.call("GET", f"/api/v1/api_tokens?count=100&search=bench{(i * 7919) % count}")[0] for i in range(50)]
        r["delete"] = [api.call("DELETE", f"/api/v1/api_tokens/{u}")[0] for u in created]
        peak = rss_kib(server.pid, "VmHWM")
        time.sleep(2)
        rss_after = rss_kib(server.pid)
        # The data plane's p99, quiet and while the control plane takes 100 creates a second.
        quiet = wrk_p99(proxy_port, values, 8)
        stop = threading.Event()
        made = []

        def churn(k):
            # Four clients at 25 creates a second each: 100 a second if the store keeps up.
            api2 = Api(admin_port, root)
            n = 0
            while not stop.is_set():
                t0 = time.time()
                _, v = api2.call("POST", "/api/v1/api_tokens", {"name": f"churn{k}-{n}", "deployments": ["alpha"]})
                made.append(v["uid"])
                n += 1
                time.sleep(max(0.0, 0.04 - (time.time() - t0)))

        threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        busy = wrk_p99(proxy_port, values, 8)
        stop.set()
        for th in threads:
            th.join()
        result = {
            "source": source, "tokens": count, "label": label, "load_s": round(load_s, 1),
            "start_s": round(start_s, 1),
            "ops": {k: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in r.items()},
            "rss_mib": {"before": round(rss_before / 1024), "peak": round(peak / 1024), "after": round(rss_after / 1024)},
            "data_plane_p99_ms": {"quiet": quiet, "busy": busy, "creates_per_s": round(len(made) / 8, 1)},
        }
        print(json.dumps(result), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
