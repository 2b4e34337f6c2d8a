"""Sums `perf report --no-children --sort dso,symbol -g none --stdio` by component of the server.

Reads the report on stdin; prints a Markdown table of the components, largest first, and the ten
largest symbols.
"""

import re
import sys

# First match wins: (component, pattern on the symbol). Kernel samples are their own component.
COMPONENTS = [
    ("the library's state (AppState clone and drop)", r"connect_axum::state::AppState"),
    ("allocator", r"malloc|free|realloc|_int_|unlink_chunk|^mi_|_mi_|cfree|memalign"),
    ("memcpy/memcmp", r"mem(cpy|move|cmp|set)"),
    ("Postgres client (tokio-postgres)", r"tokio_postgres|postgres_protocol|deadpool"),
    ("Postgres client (sqlx)", r"sqlx"),
    ("logging (tracing)", r"tracing"),
    ("metrics", r"metrics"),
    ("HTTP (hyper)", r"hyper|h1::|httparse|http::"),
    ("routing and middleware (axum, tower)", r"(^|[<&\s])axum::|tower"),
    ("async runtime (tokio)", r"tokio::|tokio_util|mio::|futures"),
    ("JSON (serde_json)", r"serde_json"),
    ("JWT, QSH, hashing", r"jsonwebtoken|qsh|sha2|hmac|base64|jwt"),
    ("row decoding (serde)", r"rows::|serde"),
    ("the library (connect_axum)", r"connect_axum"),
    ("the sample (issue_notes)", r"issue_notes"),
    ("libc other", r"^__|^_IO|pthread|clock_gettime"),
]


def main() -> None:
    totals: dict[str, float] = {}
    symbols: list[tuple[float, str]] = []
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, kind = float(m[1]), m[2], m[3]
        symbol = re.split(r"\s{2,}", m[4].strip())[0]
        if kind == "k":
            name = "kernel (sockets, scheduling, syscalls)"
        else:
            name = next((c for c, p in COMPONENTS if re.search(p, symbol)), "other")
        totals[name] = totals.get(name, 0.0) + pct
        symbols.append((pct, f"{symbol} ({dso})"))
    print("| component | share of the server's samples |")
    print("|---|---|")
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {pct:.1f} % |")
    print()
    print("| largest symbols | share |")
    print("|---|---|")
    for pct, symbol in sorted(symbols, reverse=True)[:10]:
        print(f"| `{symbol[:100]}` | {pct:.1f} % |")


if __name__ == "__main__":
    main()
