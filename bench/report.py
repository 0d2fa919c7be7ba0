#!/usr/bin/env python3
"""Turns compare.sh's raw results into one table with ratios to nginx (median over runs).

usage: report.py RAW_TSV CLK_TCK MEMORY_TSV "MODES"
Reads wrk's output, or h2load's (with its per-request --log-file beside it, for percentiles).
"""
import os
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse_wrk(text: str) -> dict:
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    # Anchored: "99%" also ends percentages on wrk's "Latency ... 80.99%" line.
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests": requests, "rps": rps, "p50": p50, "p99": p99,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def parse_h2load(path: str, text: str) -> dict:
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    # The log: start time, status, duration in microseconds, one line per request.
    durations = sorted(int(line.split()[2]) for line in open(path + ".log") if line.strip())
    pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] / 1000 if durations else float("nan")
    return {"requests": done, "rps": rps, "p50": pick(0.5), "p99": pick(0.99),
            "non2xx": int(codes.group(3)) + int(codes.group(4)) if codes else 0}


def parse(path: str) -> dict:
    text = open(path).read()
    return parse_h2load(path, text) if os.path.exists(path + ".log") else parse_wrk(text)


def main() -> None:
    raw, tck, memory, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
    runs = {}
    for line in open(raw):
        proxy, mode, _run, ticks, path = line.rstrip("\n").split("\t")
        r = parse(path)
        r["cpu_us"] = int(ticks) * 1e6 / tck / max(r["requests"], 1)
        runs.setdefault((proxy, mode), []).append(r)
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("rps", "p50", "p99", "non2xx", "cpu_us")}
           for k, v in runs.items()}
    spread = {k: (min(x["cpu_us"] for x in v), max(x["cpu_us"] for x in v)) for k, v in runs.items()}
    print("| mode | proxy | req/s | p50 ms | p99 ms | non-2xx | CPU µs/req (min-max) | req/s vs nginx | CPU vs nginx | p99 vs nginx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        base = med.get(("nginx", mode))
        for proxy in ("nginx", "haproxy", "bentogate"):
            m = med.get((proxy, mode))
            if not m:
                continue
            lo, hi = spread[(proxy, mode)]
            ratio = lambda f: f"{m[f] / base[f]:.2f}" if base and base[f] else "-"
            print(f"| {mode} | {proxy} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['non2xx']:.0f} | "
                  f"{m['cpu_us']:.1f} ({lo:.1f}-{hi:.1f}) | {ratio('rps')} | {ratio('cpu_us')} | {ratio('p99')} |")
    print()
    rss = {}
    for line in open(memory):
        what, kib = line.split()
        rss[what] = max(rss.get(what, 0), int(kib))
    if rss:
        names = {"idle": "idle, no tokens", "valid": "under load, 10,000 tokens",
                 "valid-100k": "under load, 100,000 tokens", "valid-1m": "under load, 1,000,000 tokens"}
        print("bentogate resident memory: " + "; ".join(
            f"{names.get(k, k)} {v / 1024:.1f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    main()
