"""Turns bench/vs-ace.sh's raw outputs into the peer table and bench/out/vs-ace.json.

usage: report-vs-ace.py RAW_DIR TENANTS ROUNDS DURATION JSON_OUT

Per level and server: the median of the rounds' req/s, p50 and p99, and the highest RSS sampled
during any of its runs. Ratios say how many times better connect-axum is (req/s: axum / ACE;
latency and RSS: ACE / axum). Exits 1 when any run had a non-2xx answer or a socket error.
"""
import json
import os
import platform
import re
import statistics
import sys

raw, tenants, rounds, duration, json_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
SIDES = ("ace", "axum")


def read(name):
    path = os.path.join(raw, name)
    return open(path).read() if os.path.exists(path) else ""


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(text):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    requests = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests_per_sec": float(rps.group(1)) if rps else 0.0,
        "requests": int(requests.group(1)) if requests else 0,
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, socket.groups())) if socket else 0,
        "parsed": bool(rps),
    }


def steal_percent(text):
    """The share of the machine's CPU time its hypervisor gave to others during the run."""
    lines = [list(map(int, line.split()[1:])) for line in text.splitlines() if line.startswith("cpu ")]
    if len(lines) != 2:
        return None
    delta = [b - a for a, b in zip(*lines)]
    return round(100 * delta[7] / sum(delta), 1) if sum(delta) else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 2) if a and b else None


levels, invalid = [], []
for c in (1, 32, 128):
    level = {"connections": c}
    for side in SIDES:
        runs = []
        for r in range(1, rounds + 1):
            run = parse_wrk(read(f"wrk-c{c}-{side}-r{r}.txt"))
            warm = parse_wrk(read(f"warmup-c{c}-{side}-r{r}.txt"))
            rss = read(f"rss-c{c}-{side}-r{r}.txt").strip()
            run["peak_rss_mb"] = round(int(rss) / 1024, 1) if rss else None
            run["warmup_errors"] = warm["non_2xx"] + warm["socket_errors"]
            run["cpu_steal_percent"] = steal_percent(read(f"cpu-c{c}-{side}-r{r}.txt"))
            run["compiler_running"] = os.path.exists(os.path.join(raw, f"busy-c{c}-{side}-r{r}"))
            runs.append(run)
            if not run["parsed"] or run["non_2xx"] or run["socket_errors"] or run["warmup_errors"]:
                invalid.append(f"c{c} {side} round {r}: non-2xx {run['non_2xx']}, socket errors "
                               f"{run['socket_errors']}, warm-up errors {run['warmup_errors']}"
                               + ("" if run["parsed"] else ", no wrk output"))
        level[side] = {
            "requests_per_sec": median(r["requests_per_sec"] for r in runs),
            "p50_ms": median(r["p50_ms"] for r in runs),
            "p99_ms": median(r["p99_ms"] for r in runs),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if r["peak_rss_mb"]), default=None),
            "runs": runs,
        }
    level["throughput_ratio"] = ratio(level["axum"]["requests_per_sec"], level["ace"]["requests_per_sec"])
    level["p99_ratio"] = ratio(level["ace"]["p99_ms"], level["axum"]["p99_ms"])
    level["rss_ratio"] = ratio(level["ace"]["peak_rss_mb"], level["axum"]["peak_rss_mb"])
    levels.append(level)

hwm = {side: read(f"hwm-{side}.txt").strip() for side in SIDES}
result = {
    "tenants": tenants,
    "rounds": rounds,
    "duration_s": duration,
    "machine": {"cores": os.cpu_count(), "system": platform.platform()},
    "postgres_transport": read("transport.txt").strip(),
    "ace_version": read("ace-version.txt").strip(),
    "node_version": read("node-version.txt").strip(),
    "levels": levels,
    "whole_run_peak_rss_mb": {side: round(int(v) / 1024, 1) if v else None for side, v in hwm.items()},
    "valid": not invalid,
    "invalid_runs": invalid,
}
json.dump(result, open(json_out, "w"), indent=2)


def num(v, fmt="{:,.0f}"):
    return fmt.format(v).replace(",", " ") if v is not None else "–"


def lat(v):
    return f"{v:.2f} ms" if v is not None else "–"


def mb(v):
    return f"{v:.0f} MB" if v is not None else "–"


def times(v):
    return f"{v:.1f}×" if v is not None else "–"


print(f"\nconnect-axum vs atlassian-connect-express {result['ace_version']} (node {result['node_version']}): "
      f"{tenants} tenants, {rounds} alternating rounds of {duration} s per server and level, "
      f"{os.cpu_count()} cores shared by wrk, Postgres and both servers (Postgres over {result['postgres_transport']}); "
      f"medians of the rounds, RSS the highest sampled; ratios = how many times better connect-axum is\n")
print("| conns | ACE req/s | connect-axum req/s | ratio | ACE p99 | connect-axum p99 | p99 ratio | ACE RSS | connect-axum RSS | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for l in levels:
    a, x = l["ace"], l["axum"]
    print(f"| {l['connections']} | {num(a['requests_per_sec'])} | {num(x['requests_per_sec'])} | {times(l['throughput_ratio'])} "
          f"| {lat(a['p99_ms'])} | {lat(x['p99_ms'])} | {times(l['p99_ratio'])} "
          f"| {mb(a['peak_rss_mb'])} | {mb(x['peak_rss_mb'])} | {times(l['rss_ratio'])} |")
c1 = levels[0]
print(f"\np50 at c1: ACE {lat(c1['ace']['p50_ms'])}, connect-axum {lat(c1['axum']['p50_ms'])} "
      f"({times(ratio(c1['ace']['p50_ms'], c1['axum']['p50_ms']))})")
w = result["whole_run_peak_rss_mb"]
print(f"peak RSS over the whole run, seeding included: ACE {mb(w['ace'])}, connect-axum {mb(w['axum'])}")
print("rounds (req/s):")
for l in levels:
    for side, name in (("ace", "ACE"), ("axum", "connect-axum")):
        print(f"  c{l['connections']} {name}: " + ", ".join(num(r["requests_per_sec"]) for r in l[side]["runs"]))
steal = [r["cpu_steal_percent"] for l in levels for side in SIDES for r in l[side]["runs"] if r["cpu_steal_percent"] is not None]
if steal:
    print(f"CPU steal (the hypervisor's neighbours) during the runs: {min(steal)}–{max(steal)} %")
busy = [f"c{l['connections']} {side} round {i + 1}" for l in levels for side in SIDES
        for i, r in enumerate(l[side]["runs"]) if r["compiler_running"]]
if busy:
    print("a compiler (rustc) was running on this machine during: " + ", ".join(busy))
if invalid:
    print("\nINVALID RUN: errors in wrk output:", file=sys.stderr)
    for line in invalid:
        print("  " + line, file=sys.stderr)
    sys.exit(1)
print("no errors: every response 2xx, no socket errors")
