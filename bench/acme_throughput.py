"""ACME throughput: certwright against Pebble, end to end, in one run on one machine.

    .venv/bin/python bench/acme_throughput.py [--count 200] [--clients 8] [--rounds 3]
                                              [--warmup 2] [--poll 0.02] [--json]

Each server gets ``--clients`` client threads built on the ``acme`` library (certbot's).
Each client registers one account (not timed), then takes certificates from a shared
queue until ``--count`` are issued: newOrder (with the authorization fetched, as
``ClientV2.new_order`` does) -> http-01 key authorization handed to the responder ->
challenge answered -> authorization polled until valid -> finalize -> order polled until
valid -> certificate downloaded. Every certificate has its own name, so no authorization
is reused.

certwright    `certwright serve` on a fresh data directory (`certwright init` defaults:
              ECDSA P-384 CA, SQLite store in WAL with synchronous=FULL, every state change
              and every certificate committed durably). Its validation is real: it looks up
              the name's A/AAAA records at pebble-challtestsrv (its DNS server) and fetches
              http://NAME:PORT/.well-known/acme-challenge/TOKEN from challtestsrv's http-01
              responder, where the client put the key authorization through challtestsrv's
              management API. That work is part of certwright's figures.
pebble        Debian's pebble (in-memory, no persistence) with PEBBLE_VA_NOSLEEP=1,
              PEBBLE_VA_ALWAYS_VALID=1 (it validates nothing), PEBBLE_WFE_NONCEREJECT=0.
              The clients still hand the key authorization to challtestsrv, so client-side
              work is the same for both servers.

Figures, per server: certificates/s (``--count`` / wall time of the timed phase), p50 and
p99 latency of one certificate (newOrder to certificate downloaded, as one client sees
it), server CPU-ms per certificate (utime+stime of the server process from
/proc/PID/stat, before and after the timed phase, divided by ``--count``), HTTP requests
per certificate; then certwright / Pebble ratios. Rounds alternate the servers (and
which goes first); each figure is the median over the rounds. Client keys and CSRs are
made before any timing. Everything runs on loopback in a temporary directory that is
removed at the end; every process the bench starts is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

try:
    import josepy as jose
    from acme import challenges, client, messages
except ImportError:  # pragma: no cover - said once, plainly
    raise SystemExit("the bench needs the acme library: .venv/bin/pip install -e '.[test]'"
                     ) from None

CERTWRIGHT = str(Path(sys.executable).parent / "certwright")
PROFILE = "tls-server"
DOMAIN = "bench.test"  # the tls-server profile allows every name below .test
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0  # seconds for a server to come up
CERT_TIMEOUT = 60.0  # seconds one certificate may take before the run is abandoned
ROUND_SECONDS_PER_CERT = 2.0  # and a round, beyond CERT_TIMEOUT (a healthy server: < 0.1)


# -- processes ----------------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out on 127.0.0.1 (all bound at once)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its live child processes
    (`certwright serve --workers N` forks N - 1), from /proc/PID/stat."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state); ppid is field 4; utime, stime fields 14 and 15.
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without proxies (everything here is loopback) plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("CERTWRIGHT_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def process(argv: Sequence[str], log: Path, env: dict[str, str],
            ready: Callable[[], bool], what: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until ``ready()``, and stop it (SIGTERM, then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode}:\n"
                                 + log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not come up within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    return check


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False
    return check


# -- inputs -------------------------------------------------------------------------------------

def make_csrs(names: Sequence[str]) -> list[bytes]:
    """P-256 keys and CSRs (SAN only), made before any timing: that is the client's cost."""
    out = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


def pebble_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for Pebble's HTTPS listener: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench pebble listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


# -- the servers --------------------------------------------------------------------------------

@dataclasses.dataclass
class Server:
    label: str
    directory_url: str
    ca_bundle: str
    pid: int


@dataclasses.dataclass
class Responder:
    """pebble-challtestsrv: DNS for certwright's validation, and the http-01 responder."""

    dns_port: int
    http01_port: int
    management_port: int
    pid: int = 0


@contextlib.contextmanager
def challtestsrv(work: Path) -> Iterator[Responder]:
    prog = shutil.which("pebble-challtestsrv")
    if prog is None:
        raise SystemExit("pebble-challtestsrv is not installed (Debian: apt-get install pebble)")
    dns, http01, mgmt = free_ports(3)
    r = Responder(dns, http01, mgmt)
    argv = [prog, "-dns01", f"127.0.0.1:{dns}", "-http01", f"127.0.0.1:{http01}",
            "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt}",
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
    with process(argv, work / "challtestsrv.log", clean_env(), listening(mgmt),
                 "pebble-challtestsrv") as proc:
        r.pid = proc.pid
        yield r


@contextlib.contextmanager
def certwright_server(work: Path, responder: Responder, workers: int) -> Iterator[Server]:
    data = work / "certwright"
    http_port, https_port = free_ports(2)
    init = subprocess.run([CERTWRIGHT, "init", "--data", str(data),
                           "--http", f"127.0.0.1:{http_port}",
                           "--https", f"127.0.0.1:{https_port}"],
                          capture_output=True, text=True, timeout=120, env=clean_env(),
                          check=False)
    if init.returncode != 0:
        raise SystemExit(f"certwright init failed: {init.stderr}")
    acme = f"CERTWRIGHT_PROFILES__{PROFILE.upper().replace('-', '_')}__ACME__"
    env = clean_env(**{
        "CERTWRIGHT_ACME__DNS_RESOLVER": f"127.0.0.1:{responder.dns_port}",
        "CERTWRIGHT_ACME__HTTP01_PORT": str(responder.http01_port),
        acme + "VALIDATION_NETWORKS": "[127.0.0.0/8]",
        # A benchmark is not abuse: lift the rate limits (they are still checked).
        acme + "RATE_LIMITS__ORDERS_PER_ACCOUNT": "1000000",
        acme + "RATE_LIMITS__ORDERS_PER_PROFILE": "1000000",
        acme + "RATE_LIMITS__PENDING_AUTHORIZATIONS_PER_ACCOUNT": "1000000",
    })
    with process([CERTWRIGHT, "serve", "--data", str(data), "--workers", str(workers)],
                 work / "certwright.log", env,
                 http_ok(f"http://127.0.0.1:{http_port}/health"), "certwright serve") as proc:
        yield Server("certwright", f"https://localhost:{https_port}/acme/directory",
                     str(data / "root.pem"), proc.pid)
    text = (work / "certwright.log").read_text(errors="replace")
    if "Traceback" in text:
        print(f"certwright serve logged a traceback:\n{text[-3000:]}", file=sys.stderr)


@contextlib.contextmanager
def pebble_server(work: Path, responder: Responder) -> Iterator[Server]:
    prog = shutil.which("pebble")
    if prog is None:
        raise SystemExit("pebble is not installed (Debian: apt-get install pebble)")
    ca, cert, key = pebble_tls(work)
    port, http01, tls = free_ports(3)
    config = work / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": "",
        "certificate": str(cert),
        "privateKey": str(key),
        # Never used (PEBBLE_VA_ALWAYS_VALID), but kept on loopback ports of our own.
        "httpPort": http01,
        "tlsPort": tls,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}, indent=2))
    env = clean_env(PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="1",
                    PEBBLE_WFE_NONCEREJECT="0")
    argv = [prog, "-config", str(config), "-dnsserver", f"127.0.0.1:{responder.dns_port}"]
    with process(argv, work / "pebble.log", env, listening(port), "pebble") as proc:
        yield Server("pebble", f"https://127.0.0.1:{port}/dir", str(ca), proc.pid)


# -- the clients --------------------------------------------------------------------------------

class CountingNetwork(client.ClientNetwork):
    """ClientNetwork that counts its HTTP requests and ignores proxy settings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session.trust_env = False
        self.requests = 0

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return super()._send_request(method, url, *args, **kwargs)


class Client:
    """One ACME client: one account, one keep-alive connection to the server."""

    def __init__(self, server: Server, responder: Responder, poll: float) -> None:
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.net = CountingNetwork(key, alg=jose.ES256, verify_ssl=server.ca_bundle,  # type: ignore[arg-type]
                                   user_agent="certwright-bench")
        self.acme = client.ClientV2(client.ClientV2.get_directory(server.directory_url,
                                                                  self.net), self.net)
        self.acme.new_account(messages.NewRegistration.from_data(
            terms_of_service_agreed=True))
        self.responder = httpx.Client(
            base_url=f"http://127.0.0.1:{responder.management_port}", trust_env=False,
            timeout=10)
        self.poll = poll

    def close(self) -> None:
        self.responder.close()
        self.net.session.close()

    def issue(self, csr_pem: bytes) -> str:
        """One certificate, end to end; returns the PEM chain."""
        deadline = time.monotonic() + CERT_TIMEOUT
        orderr = self.acme.new_order(csr_pem)
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = next(c for c in authzr.body.challenges
                          if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(self.net.key)
            r = self.responder.post("/add-http01", json={
                "token": challb.chall.encode("token"), "content": validation})
            r.raise_for_status()
            self.acme.answer_challenge(challb, response)
            while True:
                self._wait(deadline)
                authzr, _ = self.acme.poll(authzr)
                if authzr.body.status == messages.STATUS_VALID:
                    break
                if authzr.body.status != messages.STATUS_PENDING:
                    raise RuntimeError(f"authorization {authzr.uri} is {authzr.body.status}: "
                                       f"{[c.error for c in authzr.body.challenges]}")
        orderr = self.acme.begin_finalization(orderr)
        body = orderr.body
        while body.status != messages.STATUS_VALID:
            if body.status in (messages.STATUS_INVALID, messages.STATUS_READY):
                raise RuntimeError(f"order {orderr.uri} is {body.status}: {body.error}")
            self._wait(deadline)
            body = messages.Order.from_json(self.acme._post_as_get(orderr.uri).json())
        pem = self.acme._post_as_get(body.certificate).text
        if not pem.startswith("-----BEGIN CERTIFICATE-----"):
            raise RuntimeError(f"the certificate download gave {pem[:80]!r}")
        return pem

    def _wait(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"one certificate took more than {CERT_TIMEOUT:.0f} s")
        time.sleep(self.poll)


@dataclasses.dataclass
class Round:
    server: str
    count: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    responder_cpu: float
    client_cpu: float
    requests: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def latency(self, q: float) -> float:
        s = sorted(self.latencies)  # nearest rank
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.server_cpu / self.count

    def as_json(self) -> dict[str, Any]:
        return {"certs_per_s": round(self.rate, 2),
                "p50_ms": round(1000 * self.latency(0.50), 1),
                "p99_ms": round(1000 * self.latency(0.99), 1),
                "server_cpu_ms_per_cert": round(self.cpu_ms, 2),
                "responder_cpu_ms_per_cert": round(1000 * self.responder_cpu / self.count, 2),
                "client_cpu_ms_per_cert": round(1000 * self.client_cpu / self.count, 2),
                "requests_per_cert": round(self.requests / self.count, 2)}


def issue_all(clients: Sequence[Client], csrs: Sequence[bytes]) -> tuple[float, list[float]]:
    """Issue ``csrs`` with the clients in parallel: (wall seconds, latency of each)."""
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for c in csrs:
        work.put(c)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(clients) + 1)

    def worker(c: Client) -> None:
        start.wait()
        while not errors:
            try:
                csr = work.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                c.issue(csr)
            except BaseException as e:  # reported by the main thread
                with lock:
                    errors.append(e)
                return
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    # Each certificate is bounded by CERT_TIMEOUT; the round as a whole by this.
    deadline = time.monotonic() + CERT_TIMEOUT + ROUND_SECONDS_PER_CERT * len(csrs)
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"a client failed: {type(errors[0]).__name__}: {errors[0]}")
    if any(t.is_alive() for t in threads) or len(latencies) != len(csrs):
        raise SystemExit(f"the clients did not finish {len(csrs)} certificates in time "
                         f"({len(latencies)} done)")
    return seconds, latencies


def timed_round(server: Server, responder: Responder, clients: Sequence[Client],
                csrs: Sequence[bytes]) -> Round:
    requests0 = sum(c.net.requests for c in clients)
    s0, r0, c0 = cpu_seconds(server.pid), cpu_seconds(responder.pid), time.process_time()
    seconds, latencies = issue_all(clients, csrs)
    s1, r1, c1 = cpu_seconds(server.pid), cpu_seconds(responder.pid), time.process_time()
    return Round(server.label, len(csrs), seconds, latencies, s1 - s0, r1 - r0, c1 - c0,
                 sum(c.net.requests for c in clients) - requests0)


def pebble_version() -> str | None:
    """Debian's version of the pebble package (pebble itself has no --version)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pebble"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# -- the run ------------------------------------------------------------------------------------

def median(rounds: Sequence[Round], key: Callable[[Round], float]) -> float:
    return statistics.median(key(r) for r in rounds)


def summary(rounds: Sequence[Round]) -> dict[str, float]:
    return {
        "certs_per_s": round(median(rounds, lambda r: r.rate), 2),
        "p50_ms": round(1000 * median(rounds, lambda r: r.latency(0.50)), 1),
        "p99_ms": round(1000 * median(rounds, lambda r: r.latency(0.99)), 1),
        "server_cpu_ms_per_cert": round(median(rounds, lambda r: r.cpu_ms), 2),
        "responder_cpu_ms_per_cert": round(
            median(rounds, lambda r: 1000 * r.responder_cpu / r.count), 2),
        "client_cpu_ms_per_cert": round(
            median(rounds, lambda r: 1000 * r.client_cpu / r.count), 2),
        "requests_per_cert": round(median(rounds, lambda r: r.requests / r.count), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200,
                   help="certificates per server and round (default 200)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed rounds per server, alternated (default 3)")
    p.add_argument("--warmup", type=int, default=2,
                   help="certificates per client before timing (default 2)")
    p.add_argument("--poll", type=float, default=0.02,
                   help="seconds a client waits before each poll (default 0.02)")
    p.add_argument("--only", choices=("certwright", "pebble"),
                   help="run one server only (no ratios; for profiling)")
    p.add_argument("--workers", type=int, default=2,
                   help="certwright serve processes (default 2: one per core here; "
                        "Pebble, in Go, uses every core)")
    p.add_argument("--dir", type=Path, help="where the temporary directory goes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.count < 1 or args.clients < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--count, --clients and --rounds must be positive, --warmup not negative")
    if not 0 < args.poll <= 5:
        p.error("--poll must be between 0 and 5 seconds")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    labels = [x for x in ("certwright", "pebble") if args.only in (None, x)]
    rounds: dict[str, list[Round]] = {x: [] for x in labels}
    with tempfile.TemporaryDirectory(prefix="certwright-acme-bench-", dir=args.dir) as tmp, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        say(f"setting up in {work} ...")
        responder = stack.enter_context(challtestsrv(work))
        servers: dict[str, Server] = {}
        if "certwright" in labels:
            servers["certwright"] = stack.enter_context(
                certwright_server(work, responder, args.workers))
        if "pebble" in labels:
            servers["pebble"] = stack.enter_context(pebble_server(work, responder))

        n_csrs = (args.rounds * args.count + args.clients * args.warmup) * len(labels)
        say(f"generating {n_csrs} P-256 keys and CSRs (not timed) ...")
        csrs = {x: make_csrs([f"{x[0]}{i}.{DOMAIN}" for i in range(
            args.rounds * args.count + args.clients * args.warmup)]) for x in labels}
        warm = args.clients * args.warmup

        clients: dict[str, list[Client]] = {}
        for x in labels:
            say(f"{x}: {args.clients} accounts, {warm} warm-up certificates ...")
            clients[x] = [Client(servers[x], responder, args.poll)
                          for _ in range(args.clients)]
            stack.callback(lambda cs=clients[x]: [c.close() for c in cs])
            if warm:
                issue_all(clients[x], csrs[x][:warm])

        for r in range(args.rounds):
            order = labels if r % 2 == 0 else labels[::-1]
            for x in order:
                batch = csrs[x][warm + r * args.count: warm + (r + 1) * args.count]
                rounds[x].append(timed_round(servers[x], responder, clients[x], batch))
                last = rounds[x][-1]
                say(f"round {r + 1}/{args.rounds} {x:>10}: {last.rate:6.1f} certs/s, "
                    f"p50 {1000 * last.latency(0.5):6.0f} ms, "
                    f"p99 {1000 * last.latency(0.99):6.0f} ms, "
                    f"server {last.cpu_ms:6.2f} CPU-ms/cert, "
                    f"{last.requests / last.count:.1f} requests/cert")

    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "pebble": pebble_version()},
        "count": args.count, "clients": args.clients, "rounds": args.rounds,
        "certwright_workers": args.workers,
        "warmup_per_client": args.warmup, "poll_s": args.poll,
        "servers": {x: {"median": summary(rounds[x]),
                        "rounds": [r.as_json() for r in rounds[x]]} for x in labels},
    }
    if len(labels) == 2:
        cw, pb = (result["servers"][x]["median"] for x in labels)
        result["ratio_certwright_to_pebble"] = {
            k: round(cw[k] / pb[k], 2) if pb[k] else None
            for k in ("certs_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_cert",
                      "requests_per_cert")}
        result["goal_met"] = {
            "server_cpu": cw["server_cpu_ms_per_cert"] <= pb["server_cpu_ms_per_cert"],
            "throughput": cw["certs_per_s"] >= pb["certs_per_s"]}

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\nACME end to end: {args.count} certificates a round, {args.clients} clients, "
          f"{args.rounds} rounds (median), poll every {1000 * args.poll:.0f} ms, "
          f"certwright --workers {args.workers}; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    cols = [("certs_per_s", "certs/s", "{:.1f}"), ("p50_ms", "p50 ms", "{:.0f}"),
            ("p99_ms", "p99 ms", "{:.0f}"), ("server_cpu_ms_per_cert", "server CPU-ms",
                                              "{:.2f}"),
            ("requests_per_cert", "requests", "{:.1f}"),
            ("responder_cpu_ms_per_cert", "challtestsrv", "{:.2f}"),
            ("client_cpu_ms_per_cert", "client CPU-ms", "{:.2f}")]
    print(f"{'':12}" + "".join(f"{h:>15}" for _, h, _ in cols))
    for x in labels:
        m = result["servers"][x]["median"]
        print(f"{x:12}" + "".join(f"{f.format(m[k]):>15}" for k, _, f in cols))
    if len(labels) == 2:
        ratio = result["ratio_certwright_to_pebble"]
        print(f"{'ratio cw/pb':12}" + "".join(
            f"{'' if k not in ratio or ratio[k] is None else f'{ratio[k]:.2f}':>15}"
            for k, _, _ in cols))
        goal = result["goal_met"]
        print(f"\ngoal: server CPU per certificate <= Pebble's: "
              f"{'met' if goal['server_cpu'] else 'NOT met'}; throughput >= Pebble's: "
              f"{'met' if goal['throughput'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
