"""Turns bench/container.sh's raw outputs into a table and bench/out/container/results.json."""
import json
import os
import platform
import re
import sys

out, installations = sys.argv[1], int(sys.argv[2])


def read(name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def mib(kib):
    return round(int(kib) / 1024, 1) if kib.strip() else None


def door(name):
    levels = []
    for c in (1, 32, 128):
        wrk = read(f"{name}-wrk-c{c}.txt")
        if not wrk:
            continue
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
        lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", wrk, re.M)}
        requests = int(re.search(r"(\d+) requests in", wrk).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
        socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
        errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
        ticks, hz = map(int, read(f"{name}-cpu-c{c}.txt").split())
        levels.append({
            "connections": c,
            "requests_per_sec": rps,
            "p50_ms": lat.get("50"),
            "p99_ms": lat.get("99"),
            "errors": errors,
            "cpu_us_per_request": round(ticks / hz * 1e6 / requests, 1) if requests else None,
            "peak_rss_mib": mib(read(f"{name}-rss-c{c}.txt")),
        })
    return {
        "levels": levels,
        "idle_rss_mib": mib(read(f"{name}-rss-idle.txt")),
        "peak_rss_mib": mib(read(f"{name}-rss-peak.txt")),
    }


doors = {name: door(name) for name in ("container", "connect", "remote")}
result = {
    "installations": installations,
    "machine": {"cores": os.cpu_count(), "system": platform.platform()},
    "doors": doors,
    "goal_rss_mib": 32,
}
json.dump(result, open(os.path.join(out, "results.json"), "w"), indent=2)

print(f"\n{installations} installations (tenants), {os.cpu_count()} cores; wrk, the server and (container) "
      "the fake sidecar with MariaDB on this machine")
print(f"{'door':>9} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU us/req':>11} {'RSS MiB':>8}")
for name, d in doors.items():
    for l in d["levels"]:
        print(f"{name:>9} {l['connections']:>5} {l['requests_per_sec']:>9.0f} {l['p50_ms'] or 0:>8.3f} "
              f"{l['p99_ms'] or 0:>8.3f} {l['errors']:>7} {l['cpu_us_per_request'] or 0:>11} {l['peak_rss_mib'] or 0:>8}")
for name, d in doors.items():
    print(f"{name}: RSS idle {d['idle_rss_mib']} MiB, peak over its run {d['peak_rss_mib']} MiB")
print(f"goal for the container: RSS <= {result['goal_rss_mib']} MiB under load")
