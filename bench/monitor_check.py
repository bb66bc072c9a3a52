"""`certwright monitor check` over a large store: 100,000 certificates and 10,000
expectations (by default a tenth declared in the configuration, the rest reported by
agent check-ins), and at 1,000 to show how the cost grows.

    .venv/bin/python bench/monitor_check.py [--certs 100000] [--sizes 1000,10000]
                                            [--runs 5] [--declared-share 0.1] [--json]

The store is built with bulk inserts (rows only: the certificates' DER is a placeholder,
which the monitor never reads). About one expectation in ten has a problem (missing,
expiring, failing to renew, silent). For each size the first `monitor check` records the
expectations and opens the findings; the figure is the median of the next --runs, each
a fresh `certwright monitor check --json --no-alerts` process (wall time, including
Python start-up and the configuration load), beside the in-process evaluation time.
Everything runs in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from certwright.ca import datadir
from certwright.monitor.engine import Monitor
from certwright.store import schema

CERTWRIGHT = str(Path(sys.executable).parent / "certwright")


def build_certificates(data: Path, count: int) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = []
    for i in range(count):
        issued = now - dt.timedelta(minutes=(i * 7919) % (80 * 24 * 60))
        serial = hashlib.sha256(b"s%d" % i).hexdigest()[:32].lstrip("0")
        rows.append({
            "serial": serial, "issuer": "bench", "profile": "tls-server",
            "subject": "", "names": json.dumps([f"dns:host{i}.bench.test"]),
            "not_before": issued, "not_after": issued + dt.timedelta(days=90),
            "fingerprint": hashlib.sha256(b"f%d" % i).hexdigest(),
            "der": b"placeholder", "request_id": None, "requester": "bench:bench",
            "protocol": "acme", "issued_at": issued, "revoked_at": None,
            "revocation_reason": None})
    with datadir.opened(data) as ca, ca.store.state_write() as conn:
        conn.execute(schema.certificates.insert(), rows)


def set_expectations(data: Path, n: int, base_config: str, share: float) -> None:
    """``share`` of n declared in the configuration, the rest agent specs (5 per host)."""
    declared = int(n * share)
    lines = ["", "monitor:", "  grace: 1h", "  expect:"]
    for i in range(declared):
        # every 10th expects a name never issued (missing after the grace period)
        name = f"absent{i}.bench.test" if i % 10 == 0 else f"host{i}.bench.test"
        lines.append(f"    - {{host: h{i}.bench, names: [{name}], profile: tls-server}}")
    (data / "certwright.yaml").write_text(base_config + "\n".join(lines) + "\n")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    long_ago = now - dt.timedelta(days=2)
    agents, specs = [], []
    for j in range(n - declared):
        i = declared + j
        host = f"agent{j // 5}.bench"
        if j % 5 == 0:
            silent = j % 50 == 0
            agents.append({"host": host, "agent_version": "bench", "interval_seconds": 3600,
                           "checked_in_at": long_ago if silent else now,
                           "first_seen": long_ago})
        failing = j % 10 == 1
        specs.append({
            "key": f"agent:{host}/spec{j}", "source": "agent", "host": host,
            "spec": f"spec{j}", "profile": "tls-server", "issuer": "bench",
            "names": json.dumps([f"dns:host{i}.bench.test"]), "first_seen": long_ago,
            "serial": format(i, "x"), "cert_names": json.dumps([f"dns:host{i}.bench.test"]),
            "not_before": now - dt.timedelta(days=80 if j % 10 == 2 else 10),
            "not_after": now + dt.timedelta(days=10 if j % 10 == 2 else 80),
            "last_attempt_at": long_ago, "last_error": "timeout" if failing else None,
            "failing_since": long_ago if failing else None, "next_renewal_at": None,
            "observed_at": now})
    with datadir.opened(data) as ca, ca.store.state_write() as conn:
        conn.execute(schema.monitor_findings.delete())
        conn.execute(schema.monitor_expectations.delete())
        conn.execute(schema.monitor_agents.delete())
        if agents:
            conn.execute(schema.monitor_agents.insert(), agents)
        if specs:
            conn.execute(schema.monitor_expectations.insert(), specs)


def check(data: Path) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.run([CERTWRIGHT, "monitor", "check", "--data", str(data), "--json",
                           "--no-alerts"], capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"monitor check failed: {proc.stderr}")
    return took, len(json.loads(proc.stdout)["findings"])


def in_process(data: Path) -> float:
    with datadir.opened(data) as ca:
        m = Monitor.for_ca(ca, data)
        started = time.perf_counter()
        m.evaluate(alert=False)
        return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--certs", type=int, default=100_000)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--declared-share", type=float, default=0.1,
                    help="the share of expectations declared in certwright.yaml")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cw-bench-monitor-") as tmp:
        data = Path(tmp) / "ca"
        datadir.init(data)
        base_config = (data / "certwright.yaml").read_text()
        t = time.perf_counter()
        build_certificates(data, args.certs)
        built = time.perf_counter() - t
        with datadir.opened(data) as ca, ca.store.read() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(
                schema.certificates)).scalar_one()
        for n in sizes:
            set_expectations(data, n, base_config, args.declared_share)
            first, _ = check(data)
            walls, found = [], 0
            for _ in range(args.runs):
                took, found = check(data)
                walls.append(took)
            inner = statistics.median(in_process(data) for _ in range(3))
            results.append({"expectations": n, "certificates": stored,
                            "first_check_s": round(first, 3),
                            "check_median_s": round(statistics.median(walls), 3),
                            "evaluate_median_s": round(inner, 3), "open_findings": found})
    if args.json:
        print(json.dumps({"build_s": round(built, 1), "results": results,
                          "cpus": os.cpu_count()}, indent=2))
        return
    print(f"store: {stored} certificates, built in {built:.1f} s; "
          f"{args.declared_share:.0%} of the expectations declared in certwright.yaml")
    print(f"{'expectations':>12} {'first check':>12} {'check (median)':>15} "
          f"{'evaluate()':>11} {'findings':>9}")
    for r in results:
        print(f"{r['expectations']:>12} {r['first_check_s']:>11.2f}s "
              f"{r['check_median_s']:>14.2f}s {r['evaluate_median_s']:>10.2f}s "
              f"{r['open_findings']:>9}")


if __name__ == "__main__":
    main()
