"""Turns bench/run.sh's raw outputs into a table and bench/out/results.json."""
import json
import os
import platform
import re
import sys

out, tenants = sys.argv[1], int(sys.argv[2])


def read(name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


levels = []
for c in (1, 32, 128):
    wrk = read(f"wrk-c{c}.txt")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
    lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", wrk, re.M)}
    requests = int(re.search(r"(\d+) requests in", wrk).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    pgbench = read(f"pgselect-c{c}.txt")
    pg = re.search(r"tps = ([\d.]+) \(without initial connection time\)", pgbench)
    pg_tps = float(pg.group(1)) if pg else None
    pg_rls = re.search(r"tps = ([\d.]+) \(without initial connection time\)", read(f"pgselect-rls-c{c}.txt"))
    pg_rls_tps = float(pg_rls.group(1)) if pg_rls else None
    pg_clients = re.search(r"clients: (\d+)", pgbench)
    rss = read(f"rss-c{c}.txt").strip()
    levels.append({
        "connections": c,
        "requests_per_sec": rps,
        "requests": requests,
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
        "errors": errors,
        "peak_rss_mb": round(int(rss) / 1024, 1) if rss else None,
        "pgbench_tps": pg_tps,
        "pgbench_rls_tps": pg_rls_tps,
        "pgbench_clients": int(pg_clients.group(1)) if pg_clients else None,
        "app_over_pgbench": round(rps / pg_tps, 3) if pg_tps else None,
    })

peak = read("rss-peak.txt").strip()
result = {
    "tenants": tenants,
    "machine": {"cores": os.cpu_count(), "system": platform.platform()},
    "postgres_transport": read("transport.txt").strip(),
    "levels": levels,
    "peak_rss_mb": round(int(peak) / 1024, 1) if peak else None,
}
json.dump(result, open(os.path.join(out, "results.json"), "w"), indent=2)

print(f"\n{tenants} tenants, {os.cpu_count()} cores, wrk + Postgres + server on this machine "
      f"(Postgres over {result['postgres_transport']})")
print(f"{'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'RSS MB':>7} {'pgbench tps':>12} {'app/pgbench':>11} {'pgbench RLS tps':>15}")
for l in levels:
    print(f"{l['connections']:>5} {l['requests_per_sec']:>10.0f} {l['p50_ms'] or 0:>8.3f} {l['p99_ms'] or 0:>8.3f} "
          f"{l['errors']:>7} {l['peak_rss_mb'] or 0:>7} {l['pgbench_tps'] or 0:>12.0f} {l['app_over_pgbench'] or 0:>11} "
          f"{l['pgbench_rls_tps'] or 0:>15.0f}")
capped = [l for l in levels if l["pgbench_clients"] and l["pgbench_clients"] < l["connections"]]
for l in capped:
    print(f"(pgbench at c{l['connections']} ran {l['pgbench_clients']} clients: the Postgres server's max_connections)")
print(f"peak RSS of the server over the whole run: {result['peak_rss_mb']} MB")
