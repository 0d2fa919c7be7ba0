#!/usr/bin/env python3
"""Groups a callgrind profile's self cost by crate (from each function's name), per request.

usage: by_crate.py CALLGRIND_OUT REQUESTS
Functions inlined from the standard library are counted with the crate whose function they were
inlined into (callgrind names the enclosing function); libc's memcpy/malloc/free stay apart.
"""
import re
import subprocess
import sys
from collections import Counter

out, n = sys.argv[1], int(sys.argv[2])
text = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", out],
                      capture_output=True, text=True, check=True).stdout
costs = Counter()
started = False
for line in text.splitlines():
    if "file:function" in line:
        started = True
        continue
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
    if not started or not m:
        continue
    ir = int(m.group(1).replace(",", ""))
    where = m.group(2)
    fn = where.split(":", 1)[1] if ":" in where else where
    if "libc.so" in where:
        name = re.sub(r"^__|_avx.*|_erms.*|@.*| \[.*", "", fn.split(" ")[0])
        key = "libc " + ("memcpy/memmove" if "mem" in name else "malloc/free" if "alloc" in name or "free" in name else name)
    else:
        crate = re.match(r"[<&\s]*(?:dyn |impl )?([A-Za-z_][A-Za-z0-9_]*)", fn)
        key = crate.group(1) if crate else "?"
    costs[key] += ir
total = sum(costs.values())
for key, ir in costs.most_common(18):
    print(f"{ir / n:8.0f}  {100 * ir / total:5.1f} %  {key}")
print(f"{total / n:8.0f}  100.0 %  total")
