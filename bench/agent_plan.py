"""`certwright agent plan` and `agent status` over many specs, as an operator runs them.

    .venv/bin/python bench/agent_plan.py [--specs 500] [--rounds 7] [--json]

Builds, in a temporary directory removed at the end:

- ``--specs`` spec files, half with a static list of names, half taking their names from
  an nginx configuration (its own ``nginx.conf`` with ``include sites/*.conf`` and two
  site files, one of them with a regular-expression server_name that is skipped);
- each spec's certificate file in its output directory, and a state directory
  recording every spec as enrolled (serial, dates, names and their
  sources, the certificate's PEM in the record, one attempt each), as after a fleet's
  first run; nothing is due.

Then, alternately for ``--rounds`` rounds, runs the real command in a subprocess and
takes its wall time (start to exit, Python's start and imports included):

plan         ``certwright agent plan``: load and validate every spec, derive every name
             (parse the nginx files with crossplane), read the record, decide what is due
plan --json  the same, one JSON document
status       ``certwright agent status``: load the specs, read the record, print the table

The issue's figure: each answers in under a second on 500 specs. For comparison the bench
also times ``certwright agent --help`` (the interpreter and the imports alone). Each
figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.agent.state import State

CERTWRIGHT = str(Path(sys.executable).parent / "certwright")

MAIN = """\
events {{ worker_connections 64; }}
http {{
    include {dir}/sites/*.conf;
    server {{
        listen 80 default_server;
        server_name _;
    }}
}}
"""
SITE = """\
server {{
    listen 443 ssl;
    server_name {names};
    ssl_certificate /etc/ssl/{spec}/fullchain.pem;
    ssl_certificate_key /etc/ssl/{spec}/privkey.pem;
    location / {{ proxy_pass http://127.0.0.1:8080; }}
}}
"""


def certificate(names: list[str], key: ec.EllipticCurvePrivateKey, now: dt.datetime
                ) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=89))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))


def build(root: Path, count: int) -> tuple[Path, Path]:
    specs, state_dir, nginx = root / "specs", root / "state", root / "nginx"
    specs.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    state = State(state_dir)
    try:
        for i in range(count):
            name = f"svc{i:04d}"
            doc: dict[str, object] = {
                "name": name,
                "issuer": {"acme": {"directory": "https://ca.internal/acme/directory",
                                    "challenge": {"http-01": {"webroot": "/var/www/html"}}}},
                "output": {"directory": str(root / "out" / name), "fullchain": "fullchain.pem"},
                "trust_anchor": "/etc/ssl/root.pem",
                "hooks": {"config_test": ["nginx", "-t"], "deploy": ["nginx", "-s", "reload"]},
            }
            names = [f"{name}.example.internal", f"www.{name}.example.internal"]
            if i % 2:
                doc["names"] = [{"static": names}]
                sources = {f"dns:{n}": ["static"] for n in names}
            else:
                d = nginx / name
                (d / "sites").mkdir(parents=True)
                (d / "nginx.conf").write_text(MAIN.format(dir=d))
                (d / "sites" / "a.conf").write_text(SITE.format(names=" ".join(names),
                                                                spec=name))
                (d / "sites" / "b.conf").write_text(SITE.format(
                    names=f"{names[0]} ~^(?<u>.+)\\.{name}\\.example\\.internal$", spec=name))
                doc["names"] = [{"nginx": str(d / "nginx.conf")}]
                sources = {f"dns:{names[0]}": [f"nginx {d}/sites/a.conf:3",
                                               f"nginx {d}/sites/b.conf:3"],
                           f"dns:{names[1]}": [f"nginx {d}/sites/a.conf:3"]}
            (specs / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            cert = certificate(names, key, now)
            (root / "out" / name).mkdir(parents=True)
            (root / "out" / name / "cert.pem").write_bytes(
                cert.public_bytes(serialization.Encoding.PEM))
            state.record_success(
                spec=name, protocol="acme", issuer="https://ca.internal/acme/directory",
                profile=None, validation="http-01 webroot",
                account="https://ca.internal/acme/acct/1", names=sources,
                serial=f"{cert.serial_number:x}", not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                next_renewal=now + dt.timedelta(days=59), ari_next_check=None,
                version="000001", at=now,
                record={"spec": doc, "names": sources, "renewal_rule": "lifetime",
                        "certificate": cert.public_bytes(
                            serialization.Encoding.PEM).decode()})
    finally:
        state.close()
    return specs, state_dir


def timed(args: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWRIGHT_")}
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return took, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certwright-bench-agent-") as tmp:
        specs, state = build(Path(tmp), args.specs)
        base = [CERTWRIGHT, "agent", "--specs", str(specs), "--state", str(state)]
        commands = {"plan": [*base, "plan"], "plan --json": [*base, "plan", "--json"],
                    "status": [*base, "status"], "agent --help": [*base, "--help"]}
        # One untimed run each (file cache, .pyc), and a check of what they print.
        _, out = timed(commands["plan --json"])
        plans = json.loads(out)
        odd = [(p["name"], p["reason"]) for p in plans if p["due"] or p["error"]]
        assert len(plans) == args.specs and not odd, odd[:3]
        # Each nginx spec skips its catch-all "_" and its regular expression.
        assert sum(len(p["skipped"]) for p in plans) == 2 * (args.specs - args.specs // 2)
        _, out = timed(commands["status"])
        assert len(out.splitlines()) == args.specs + 1
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.rounds):
            for k, cmd in commands.items():
                times[k].append(timed(cmd)[0])
    result = {k: {"median_s": statistics.median(v), "rounds_s": v} for k, v in times.items()}
    if args.json:
        print(json.dumps({"specs": args.specs, "rounds": args.rounds, "python":
                          platform.python_version(), "cpus": os.cpu_count(),
                          "results": result}, indent=2))
        return
    print(f"{args.specs} specs (half static names, half nginx with includes), "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"    {'command':<16} {'median s':>9}   rounds")
    for k, r in result.items():
        rounds = " ".join(f"{t:.3f}" for t in r["rounds_s"])
        print(f"    {k:<16} {r['median_s']:>9.3f}   {rounds}")


if __name__ == "__main__":
    main()
