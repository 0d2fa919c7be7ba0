#!/usr/bin/env python3
"""Turns compare.sh's raw results into one table with ratios to nginx (median over runs)."""
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse(path: str) -> dict:
    text = open(path).read()
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    # Anchored: "99%" also ends percentages on wrk's "Latency ... 80.99%" line.
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"requests": requests, "rps": rps, "p50": p50, "p99": p99,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else ""}


def main() -> None:
    raw, tck, idle, loaded, under_load = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    runs = {}
    for line in open(raw):
        proxy, mode, _run, ticks, path = line.rstrip("\n").split("\t")
        r = parse(path)
        r["cpu_us"] = int(ticks) * 1e6 / tck / r["requests"]
        runs.setdefault((proxy, mode), []).append(r)
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("rps", "p50", "p99", "non2xx", "cpu_us")}
           for k, v in runs.items()}
    spread = {k: (min(x["cpu_us"] for x in v), max(x["cpu_us"] for x in v)) for k, v in runs.items()}
    print("| mode | proxy | req/s | p50 ms | p99 ms | non-2xx | CPU µs/req (min-max) | req/s vs nginx | CPU vs nginx | p99 vs nginx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ("valid", "unknown", "wrong-scope"):
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
    mib = lambda kib: f"{int(kib) / 1024:.1f} MiB"
    if not (idle and loaded and under_load):
        return  # bentogate was not among the proxies measured
    print(f"bentogate resident memory: idle (no tokens) {mib(idle)}; with 10,000 tokens under load "
          f"{mib(under_load)}; idle with 100,000 tokens {mib(loaded)}")


if __name__ == "__main__":
    main()
