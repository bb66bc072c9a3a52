"""EST simpleenroll throughput against the Authority's own issuance rate, in one run.

    .venv/bin/python bench/est_throughput.py [--count 400] [--clients 8] [--rounds 3]
                                             [--warmup 3] [--json]

A fresh `certwright init` + `certwright serve` (ECDSA P-384 CA, SQLite in WAL with
synchronous=FULL) on free loopback ports, profile ``tls-client`` (automatic approval).
``--clients`` threads, each with one keep-alive HTTPS connection (http.client), send
``--count`` requests a round between them:

basic   POST /.well-known/est/simpleenroll, HTTP Basic with one bootstrap credential
        (scrypt-hashed; this process verifies it once, then from its memory cache)
mtls    POST /.well-known/est/simplereenroll over mutual TLS, each client presenting its
        own certificate (issued before the run) and re-keying it with every request

In the same run, rounds interleaved with those:

(a) bare       `cryptography` building and signing the same kind of certificate with the
               same CA key (bench/issuance.py's ``Bare``)
(b) Authority  CertificateAuthority.enroll in this process on a CA of its own: CSR decode
               and signature check, RA, template, sign, certificate + audit record in one
               durable commit; one request after another (bench/issuance.py's (b), here
               under tls-client)

Figures per variant: enrollments/s (count / wall time of the round), p50 and p99 latency
of one request as its client sees it, and server CPU-ms per certificate (utime + stime
of the `certwright serve` process from /proc/PID/stat around the round). The goal of the
issue: EST at least half of (b), "EST overhead (HTTP, TLS, auth, PKCS#7) costs no more
than the issuance itself". Client keys and CSRs are made before any timing; each figure
is the median over the rounds. Everything runs in a temporary directory, removed at the
end, and the server is stopped.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import http.client
import json
import math
import os
import platform
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The bench's neighbours (bench/ is on sys.path when this runs): the process handling of
# bench/acme_throughput.py, the bare signer and CSRs of bench/issuance.py.
from acme_throughput import CERTWRIGHT, clean_env, cpu_seconds, free_ports, http_ok, process
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from issuance import Bare, fresh_ca, make_csrs, rate

from certwright import registry
from certwright.ca import datadir
from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.service import CertificateAuthority, Issued
from certwright.pki import csr as csrlib
from certwright.pki.keys import load_private_key

PROFILE = "tls-client"
USER = "bench"


# -- inputs -------------------------------------------------------------------------------

def reenroll_csrs(name: str, n: int) -> list[bytes]:
    """``n`` requests renewing ``name``, each with a new P-256 key (a re-key)."""
    out = []
    for _ in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                              critical=False)
               .sign(k, hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.DER))
    return out


def body_of(pem_or_der: bytes) -> bytes:
    """The request body EST clients send: base64 of the DER CSR, in lines."""
    der = csrlib.decode(pem_or_der)
    return base64.encodebytes(der)


def enroll_in_process(ca: CertificateAuthority, pems: Sequence[bytes]) -> None:
    requester = Requester("bench", "est")
    for pem in pems:
        out = ca.enroll(EnrollmentRequest(profile=PROFILE, csr=csrlib.load(pem),
                                          requester=requester, protocol=registry.LOCAL))
        if not isinstance(out, Issued):
            raise SystemExit(f"expected a certificate, got {out!r}")


def split(items: Sequence[bytes], parts: int) -> list[list[bytes]]:
    return [list(items[i::parts]) for i in range(parts)]


# -- clients --------------------------------------------------------------------------------

@dataclasses.dataclass
class Variant:
    label: str
    operation: str
    contexts: list[ssl.SSLContext]  # one per client
    headers: dict[str, str]
    rates: list[float] = dataclasses.field(default_factory=list)
    p50: list[float] = dataclasses.field(default_factory=list)
    p99: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)
    client_ms: list[float] = dataclasses.field(default_factory=list)


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class Client(threading.Thread):
    """One keep-alive connection; sends its bodies one after the other."""

    def __init__(self, port: int, context: ssl.SSLContext, path: str,
                 headers: dict[str, str], bodies: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                timeout=60)
        self.path, self.headers, self.bodies = path, headers, bodies
        self.latencies: list[float] = []
        self.answers: list[bytes] = []
        self.error: str | None = None
        self.start_gate = threading.Event()

    def connect(self) -> None:
        self.conn.connect()  # the handshake is not timed: keep-alive is the point

    def run(self) -> None:
        self.start_gate.wait()
        try:
            for body in self.bodies:
                t0 = time.perf_counter()
                self.conn.request("POST", self.path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                answer = response.read()
                self.latencies.append(time.perf_counter() - t0)
                if response.status != 200:
                    self.error = f"{response.status} {answer[:200]!r}"
                    return
                self.answers.append(answer)
        except Exception as e:  # reported by the round
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.conn.close()


def run_round(port: int, variant: Variant, batches: list[list[bytes]], pid: int
              ) -> tuple[float, float, float, float, float, list[bytes]]:
    """(enrollments/s, p50 ms, p99 ms, server CPU-ms per certificate, client CPU-ms per
    certificate (this process, all its threads), answers)."""
    path = f"/.well-known/est/{PROFILE}/{variant.operation}"
    clients = [Client(port, variant.contexts[i], path, variant.headers, batch)
               for i, batch in enumerate(batches)]
    for c in clients:
        c.connect()
        c.start()
    n = sum(len(b) for b in batches)
    cpu0, mine0 = cpu_seconds(pid), time.process_time()
    t0 = time.perf_counter()
    for c in clients:
        c.start_gate.set()
    for c in clients:
        c.join(timeout=600)
    wall = time.perf_counter() - t0
    cpu, mine = cpu_seconds(pid) - cpu0, time.process_time() - mine0
    errors = [c.error for c in clients if c.error]
    if errors:
        raise SystemExit(f"{variant.label}: {errors[0]}")
    latencies = sorted(x for c in clients for x in c.latencies)
    answers = [a for c in clients for a in c.answers]
    return (n / wall, 1000 * nearest_rank(latencies, 0.50),
            1000 * nearest_rank(latencies, 0.99), 1000 * cpu / n, 1000 * mine / n, answers)


# -- the run ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=400, help="requests per round and variant")
    p.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed requests per client")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if min(args.count, args.clients, args.rounds) < 1 or args.count < args.clients:
        p.error("--count, --clients and --rounds must be positive; --count >= --clients")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="certwright-est-bench-") as tmp:
        work = Path(tmp)
        http_port, https_port = free_ports(2)
        data = work / "ca"
        datadir.init(data, hostnames=["127.0.0.1"], http=f"127.0.0.1:{http_port}",
                     https=f"127.0.0.1:{https_port}")
        n, rounds, clients = args.count, args.rounds, args.clients
        say(f"setting up in {work}: credentials, {clients} client certificates, "
            f"{rounds * n * 3} CSRs (not timed) ...")
        with datadir.opened(data) as ca:
            _, password = ca.credentials("est").create(USER, PROFILE, actor="bench")
            names = [f"client{k}.est.bench.internal" for k in range(clients)]
            for name in names:
                k = ec.generate_private_key(ec.SECP256R1())
                csr = (x509.CertificateSigningRequestBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                   name)]))
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                      critical=False).sign(k, hashes.SHA256()))
                out = ca.enroll(EnrollmentRequest(profile=PROFILE, csr=csr,
                                                  requester=Requester("bench", "setup"),
                                                  protocol=registry.LOCAL))
                assert isinstance(out, Issued)
                cert_path, key_path = work / f"{name}.pem", work / f"{name}.key"
                cert_path.write_bytes(out.certificate.public_bytes(serialization.Encoding.PEM))
                key_path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
            client_files = [(work / f"{nm}.pem", work / f"{nm}.key") for nm in names]
            server_issuing = ca.chain[0]
        issued_before = 0

        # Inputs, before any timing.
        per = [len(b) for b in split([b""] * n, clients)]
        basic_rounds = [split([body_of(pem) for pem in make_csrs(n, "p256", f"e{r}.est")],
                              clients) for r in range(rounds)]
        mtls_rounds = [[[base64.encodebytes(d) for d in reenroll_csrs(names[i], per[i])]
                        for i in range(clients)] for r in range(rounds)]
        local_rounds = [make_csrs(n, "p256", f"l{r}.est") for r in range(rounds)]
        warm = [body_of(pem) for pem in make_csrs(args.warmup * clients, "p256", "warm")]
        warm_mtls = [[base64.encodebytes(d) for d in reenroll_csrs(names[i], args.warmup)]
                     for i in range(clients)]

        local_path = fresh_ca(work, "local", "ec-p384")
        local = datadir.open_ca(local_path)
        bare = Bare(load_private_key(local_path / "ca" / "issuing.key"), local.chain[0],
                    local.config.server.http_url, local.authority.issuer_id)
        bare_inputs = [[(x509.load_pem_x509_csr(pem).public_key(), f"b{i}.bench.internal")
                        for i, pem in enumerate(batch)] for batch in local_rounds]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)

        root = str(data / "root.pem")
        auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
        headers = {"Content-Type": "application/pkcs10"}

        def context(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=root)
            if cert is not None:
                ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            return ctx

        basic = Variant("basic", "simpleenroll", [context(None)] * clients,
                        {**headers, "Authorization": f"Basic {auth}"})
        mtls = Variant("mtls", "simplereenroll", [context(f) for f in client_files], headers)
        s_bare: list[float] = []
        s_local: list[float] = []
        env = clean_env()
        with process([CERTWRIGHT, "serve", "--data", str(data)], work / "serve.log", env,
                     http_ok(f"http://127.0.0.1:{http_port}/health"), "certwright serve"
                     ) as proc:
            say("warming up ...")
            enroll_in_process(local, make_csrs(20, "p256", "lwarm"))
            run_round(https_port, basic, split(warm, clients), proc.pid)
            run_round(https_port, mtls, warm_mtls, proc.pid)
            issued_before = clients * args.warmup * 2

            sample: bytes = b""
            for r in range(rounds):
                order = [basic, mtls] if r % 2 == 0 else [mtls, basic]
                for v in order:
                    batches = basic_rounds[r] if v is basic else mtls_rounds[r]
                    per_s, p50, p99, cpu_ms, client_ms, answers = run_round(
                        https_port, v, batches, proc.pid)
                    v.client_ms.append(client_ms)
                    v.rates.append(per_s)
                    v.p50.append(p50)
                    v.p99.append(p99)
                    v.cpu_ms.append(cpu_ms)
                    sample = answers[-1]

                def bare_round(batch: list[tuple[Any, str]] = bare_inputs[r]) -> None:
                    for pk, name in batch:
                        bare.sign(pk, name, int.from_bytes(os.urandom(16), "big") | 1, now)

                s_bare.append(rate(n, bare_round))
                s_local.append(rate(n, lambda r=r: enroll_in_process(local, local_rounds[r])))
                say(f"round {r + 1}/{rounds}: basic {basic.rates[-1]:.0f}/s "
                    f"(p50 {basic.p50[-1]:.0f} ms, {basic.cpu_ms[-1]:.2f} CPU-ms), "
                    f"mtls {mtls.rates[-1]:.0f}/s (p50 {mtls.p50[-1]:.0f} ms, "
                    f"{mtls.cpu_ms[-1]:.2f} CPU-ms), Authority {s_local[-1]:.0f}/s, "
                    f"bare {s_bare[-1]:.0f}/s")
            # What came back is a certs-only PKCS#7 with one certificate of ours.
            certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(sample))
            if len(certs) != 1:
                raise SystemExit("the answer is not one certificate")
            certs[0].verify_directly_issued_by(server_issuing)
        local.store.close()
        with datadir.opened(data) as ca:
            held = ca.store.count_certificates()
        expected = clients + issued_before + 2 * rounds * n + 1  # + the listener's own
        if held != expected:
            raise SystemExit(f"the server's store holds {held} certificates, expected "
                             f"{expected}")
        log_text = (work / "serve.log").read_text(errors="replace")
        if "Traceback" in log_text or "ERROR" in log_text:
            raise SystemExit(f"certwright serve logged an error:\n{log_text[-3000:]}")

    med = statistics.median
    authority = med(s_local)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "count": n, "clients": clients, "rounds": rounds,
        "bare_per_s": round(med(s_bare), 1),
        "authority_per_s": round(authority, 1),
        "variants": {v.label: {"per_s": round(med(v.rates), 1), "p50_ms": round(med(v.p50), 1),
                               "p99_ms": round(med(v.p99), 1),
                               "server_cpu_ms": round(med(v.cpu_ms), 2),
                               "client_cpu_ms": round(med(v.client_ms), 2),
                               "rates": [round(x, 1) for x in v.rates],
                               "ratio_to_authority": round(med(v.rates) / authority, 3)}
                     for v in (basic, mtls)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\nEST end to end: {n} requests a round, {clients} keep-alive clients, {rounds} "
          f"rounds (median); profile {PROFILE}, CA ECDSA P-384, client keys P-256; Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"{'':40} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU-ms':>14} "
          f"{'client CPU-ms':>14}")
    print(f"{'(a) bare cryptography build+sign':40} {med(s_bare):8.0f}")
    print(f"{'(b) Authority in-process, durable':40} {authority:8.0f}")
    for v, title in ((basic, "EST simpleenroll, HTTP Basic"),
                     (mtls, "EST simplereenroll, mutual TLS")):
        print(f"{title:40} {med(v.rates):8.0f} {med(v.p50):8.1f} {med(v.p99):8.1f} "
              f"{med(v.cpu_ms):14.2f} {med(v.client_ms):14.2f}")
    for v in (basic, mtls):
        print(f"ratio EST {v.label} / (b): {result['variants'][v.label]['ratio_to_authority']:.3f}"
              "   (goal >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
