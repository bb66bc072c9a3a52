"""The agent's core: plan (what each spec derives and whether it is due) and enroll (key
on the target, request, check, install, config test, deploy, endpoint check, rollback,
record).

Order of one enrollment, and what a failure at each step leaves:

1. derive the names; check the output directory (nothing written yet if either fails);
2. generate the key into a fresh version directory (or reuse a staged one, or the live
   one when ``key.reuse``); the CSR carries the derived names and the optional CN;
3. pre hook; the issuer's protocol (the key stays on disk, the CSR goes out);
4. check the certificate (key, exact names, chain to the trust anchor, validity): a
   failure keeps the old files live and records the error;
5. write the version's files, switch ``live`` (see ``agent.install``);
6. config test hook, deploy hook, endpoint checks: a failure switches back to the previous
   version, runs the deploy hook again so the service serves it, checks the endpoints
   serve the previous certificate again, and records the error (with any trouble on
   the way back);
7. record the enrollment and the next renewal (ARI when the ACME server offers it, else
   the lifetime rule); post hook, whatever the outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from certwright.agent import fs, hooks, install, renewal, sources, verify
from certwright.agent.install import Installer, Material
from certwright.agent.spec import Spec
from certwright.agent.state import Enrollment, State
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind

log = logging.getLogger("certwright.agent")

# RFC 9773 4.3.3: ask again after six hours when the server said nothing usable.
ARI_RETRY = dt.timedelta(hours=6)

if TYPE_CHECKING:
    from certwright.agent import issuers

ClientFactory = Callable[[Spec, State], "issuers.IssuerClient"]


def default_clients(spec: Spec, state: State) -> issuers.IssuerClient:
    # Imported here: the protocol clients (acme, requests, httpx, dnspython) are a third
    # of the agent's imports (0.1 s), and plan and status never talk to an issuer.
    from certwright.agent import issuers

    return issuers.client_for(spec.issuer, state)


@dataclasses.dataclass(frozen=True)
class Plan:
    spec: Spec
    derived: sources.Derived | None
    error: str | None  # the names could not be derived
    files: dict[str, Path]
    enrollment: Enrollment | None
    due: bool
    reason: str
    added: tuple[str, ...]  # derived now, not in the last enrolled certificate
    removed: tuple[str, ...]  # in the last enrolled certificate, no longer derived
    next_at: dt.datetime | None  # when to look at this spec again (None: now)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "issuer": self.spec.issuer.url,
            "protocol": self.spec.issuer.protocol,
            "validation": self.spec.issuer.validation,
            "names": {n: list(s) for n, s in self.derived.names.items()} if self.derived
            else None,
            "skipped": [dataclasses.asdict(s) for s in self.derived.skipped]
            if self.derived else [],
            "error": self.error,
            "files": {k: str(v) for k, v in self.files.items()},
            "key": str(self.spec.key),
            "due": self.due,
            "reason": self.reason,
            "drift": {"added": list(self.added), "removed": list(self.removed)},
            "next": self.next_at.isoformat() if self.next_at else None,
        }


@dataclasses.dataclass(frozen=True)
class Result:
    spec: str
    ok: bool
    serial: str | None = None
    error: str | None = None


def build_csr(key: fs.AgentKey, derived: sources.Derived, cn: str | None
              ) -> x509.CertificateSigningRequest:
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in derived.dns()]
    general += [x509.IPAddress(a) for a in derived.ips()]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(x509.SubjectAlternativeName(general), critical=False))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _hex(serial: int) -> str:
    return f"{serial:x}"


class Agent:
    def __init__(self, state: State, clock: Clock, *, rng: random.Random | None = None,
                 host: sources.HostInfo = sources.system_host,
                 clients: ClientFactory = default_clients) -> None:
        self.state = state
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self.host = host
        self.clients = clients

    # -- plan -----------------------------------------------------------------------------

    def plan(self, spec: Spec, enrollment: Enrollment | None = None,
             *, lookup: bool = True) -> Plan:
        e = self.state.get(spec.name) if lookup else enrollment
        files = install.spec_files(spec.output)
        derived: sources.Derived | None = None
        error: str | None = None
        try:
            derived = sources.derive(spec.names, host=self.host)
            if not derived.names:
                error = "the name sources give no name"
        except CertwrightError as exc:
            error = str(exc)
        now = self.clock.now()
        added: tuple[str, ...] = ()
        removed: tuple[str, ...] = ()
        if derived is not None and e is not None and e.serial is not None:
            added = tuple(n for n in derived.names if n not in e.names)
            removed = tuple(n for n in e.names if n not in derived.names)
        want: str | None
        if error is not None:
            want = None
        elif e is None or e.serial is None:
            want = "never enrolled"
        elif added or removed:
            want = "names changed"
        elif not files["cert"].exists():
            want = f"{files['cert']} is missing"
        elif e.next_renewal is not None and e.next_renewal <= now:
            want = f"renewal time {e.next_renewal:%Y-%m-%d %H:%M} UTC reached"
        else:
            want = None
        waiting = e is not None and e.failures > 0 and e.retry_at is not None \
            and e.retry_at > now
        if error is not None:
            due, reason, next_at = False, f"cannot derive names: {error}", None
        elif want is not None and waiting:
            assert e is not None and e.retry_at is not None
            due, reason, next_at = False, f"{want}; retrying at {e.retry_at:%Y-%m-%d %H:%M:%S}" \
                " UTC", e.retry_at
        elif want is not None:
            due, reason, next_at = True, want, now
        else:
            assert e is not None
            nxt = [t for t in (e.next_renewal, e.ari_next_check) if t is not None]
            next_at = min(nxt) if nxt else None
            due = False
            reason = (f"renews at {e.next_renewal:%Y-%m-%d %H:%M} UTC"
                      if e.next_renewal else "enrolled")
        return Plan(spec, derived, error, files, e, due, reason, added, removed, next_at)

    # -- enroll ---------------------------------------------------------------------------

    def enroll(self, spec: Spec, reason: str = "requested") -> Result:
        log.info("%s: enrolling (%s)", spec.name, reason)
        env = {"CERTWRIGHT_SPEC": spec.name}
        env.update({f"CERTWRIGHT_{role.upper()}_FILE": str(p)
                    for role, p in install.spec_files(spec.output).items()})
        outcome = "failure"
        try:
            result = self._enroll(spec, env)
            outcome = "success"
            return result
        except CertwrightError as e:
            return self._failed(spec, str(e))
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            return self._failed(spec, f"{where}{e.strerror or e}")
        finally:
            if spec.hooks.post is not None:
                try:
                    hooks.run_hook("post", spec.hooks.post,
                                   {**env, "CERTWRIGHT_OUTCOME": outcome})
                except CertwrightError as e:
                    log.warning("%s: %s", spec.name, e)

    def _failed(self, spec: Spec, error: str) -> Result:
        now = self.clock.now()
        prior = self.state.get(spec.name)
        failures = (prior.failures if prior else 0) + 1
        retry_at = now + renewal.retry_delay(failures, spec.renewal, self.rng)
        self.state.record_failure(spec=spec.name, protocol=spec.issuer.protocol,
                                  issuer=spec.issuer.url, validation=spec.issuer.validation,
                                  error=error, retry_at=retry_at, at=now)
        log.error("%s: %s (attempt %d failed; retrying at %s)", spec.name, error, failures,
                  f"{retry_at:%Y-%m-%d %H:%M:%S} UTC")
        return Result(spec.name, False, error=error)

    def _enroll(self, spec: Spec, env: dict[str, str]) -> Result:
        derived = sources.derive(spec.names, host=self.host)
        if not derived.names:
            raise CertwrightError(ErrorKind.CONFIG, "the name sources give no name",
                                  rule="names")
        if spec.subject.cn is not None and f"dns:{spec.subject.cn.lower().rstrip('.')}" \
                not in derived.names:
            raise CertwrightError(ErrorKind.CONFIG, f"subject.cn {spec.subject.cn!r} is not "
                                  "one of the derived names", rule="subject.cn")
        names = derived.values
        env["CERTWRIGHT_NAMES"] = " ".join(names)
        anchors = verify.load_anchors(spec.trust_anchor)
        with Installer(spec.name, spec.output) as inst:
            live = inst.live_version()
            key, version = self._key(spec, inst, live)
            current = install.live_pair(spec.output, spec.name) if live is not None else None
            if spec.hooks.pre is not None:
                hooks.run_hook("pre", spec.hooks.pre, env)
            client = self.clients(spec, self.state)
            csr = build_csr(key, derived, spec.subject.cn)
            obtained = client.obtain(csr, names, current)
            leaf = obtained.leaf
            verify.check_issued(leaf, obtained.chain, key, names, anchors, self.clock.now())
            inst.complete(version, Material(key, leaf, obtained.chain))
            previous = inst.activate(version)
            env["CERTWRIGHT_SERIAL"] = _hex(leaf.serial_number)
            try:
                self._deploy(spec, env, leaf)
            except CertwrightError as e:
                after = self._rollback(spec, inst, previous, version, env)
                raise CertwrightError(e.kind, f"{e.detail}; rolled back to the previous "
                                      f"certificate{after}", rule=e.rule) from None
            inst.prune(keep=previous)
        self._record(spec, derived, obtained, client, version)
        log.info("%s: installed serial %s for %s (not after %s UTC)", spec.name,
                 _hex(leaf.serial_number), ", ".join(names),
                 f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M}")
        return Result(spec.name, True, serial=_hex(leaf.serial_number))

    def _key(self, spec: Spec, inst: Installer, live: str | None) -> tuple[fs.AgentKey, str]:
        staged = inst.staged()
        if staged is not None:
            data = inst.read(staged, "key")
            key = fs.load_key(data or b"", f"staged key of version {staged}")
            if fs.key_matches(key, spec.key) and not spec.key.reuse:
                log.info("%s: reusing the key staged in version %s", spec.name, staged)
                return key, staged
            inst.discard(staged)
        if spec.key.reuse and live is not None:
            data = inst.read(live, "key")
            if data is not None:
                key = fs.load_key(data, "the live key")
                if fs.key_matches(key, spec.key):
                    return key, inst.stage_key(key)
        key = fs.generate_key(spec.key)
        return key, inst.stage_key(key)

    def _deploy(self, spec: Spec, env: dict[str, str], leaf: x509.Certificate) -> None:
        if spec.hooks.config_test is not None:
            hooks.run_hook("config_test", spec.hooks.config_test, env)
        if spec.hooks.deploy is not None:
            hooks.run_hook("deploy", spec.hooks.deploy, env)
        for ep in spec.endpoints:
            hooks.check_endpoint(ep, leaf.serial_number)

    def _rollback(self, spec: Spec, inst: Installer, previous: str | None, failed: str,
                  env: dict[str, str]) -> str:
        """Switch back, reload the service and check that the endpoints serve the previous
        certificate again; return what went wrong on the way back ("" if nothing), for
        the recorded error."""
        inst.rollback(previous, failed)
        log.warning("%s: rolled back to %s", spec.name,
                    f"version {previous}" if previous else "no certificate")
        if previous is None or spec.hooks.deploy is None:
            return ""
        try:
            hooks.run_hook("deploy", spec.hooks.deploy, {**env, "CERTWRIGHT_ROLLBACK": "1"})
            pem = inst.read(previous, "cert")
            if pem is not None:
                serial = x509.load_pem_x509_certificate(pem).serial_number
                for ep in spec.endpoints:
                    hooks.check_endpoint(ep, serial, what="the previous")
        except CertwrightError as e:
            log.error("%s: after the rollback: %s", spec.name, e)
            return f"; after the rollback: {e.detail}"
        return ""

    def _record(self, spec: Spec, derived: sources.Derived, obtained: issuers.Obtained,
                client: issuers.IssuerClient, version: str) -> None:
        leaf = obtained.leaf
        now = self.clock.now()
        next_renewal, ari_next, by_ari = self._schedule(spec, leaf, client)
        names = {n: list(s) for n, s in derived.names.items()}
        record: dict[str, Any] = {
            "spec": spec.model_dump(mode="json", by_alias=True),
            "names": names,
            "skipped": [dataclasses.asdict(s) for s in derived.skipped],
            "key": str(spec.key),
            "issuer_details": obtained.details,
            "chain": [c.subject.rfc4514_string() for c in obtained.chain],
            "certificate": leaf.public_bytes(serialization.Encoding.PEM).decode(),
            "renewal_rule": "ari" if by_ari else "lifetime",
        }
        self.state.record_success(
            spec=spec.name, protocol=spec.issuer.protocol, issuer=spec.issuer.url,
            profile=spec.issuer.profile, validation=spec.issuer.validation,
            account=obtained.account, names=names, serial=_hex(leaf.serial_number),
            not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
            next_renewal=next_renewal, ari_next_check=ari_next, version=version,
            record=record, at=now)

    def _schedule(self, spec: Spec, leaf: x509.Certificate, client: issuers.IssuerClient
                  ) -> tuple[dt.datetime, dt.datetime | None, bool]:
        """(next renewal, next ARI check, whether ARI set the time): ARI's moment when the
        server offers one, else the lifetime rule."""
        try:
            at, again = client.renewal_time(leaf)
        except CertwrightError as e:
            log.warning("%s: renewalInfo: %s", spec.name, e)
            at, again = None, self.clock.now() + ARI_RETRY
        if at is not None:
            return at, again, True
        return renewal.lifetime_renewal(leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                                        spec.renewal, self.rng), again, False

    def refresh_ari(self, spec: Spec, e: Enrollment) -> None:
        """Ask renewalInfo again (its Retry-After passed): the window may have moved, for
        instance because the certificate was revoked."""
        pem = e.record.get("certificate")
        if not pem:
            return
        leaf = x509.load_pem_x509_certificate(pem.encode())
        previous = e.next_renewal
        next_renewal, ari_next, by_ari = self._schedule(spec, leaf,
                                                        self.clients(spec, self.state))
        if not by_ari and previous is not None:
            next_renewal = previous  # keep the jittered lifetime moment already chosen
        self.state.set_next_renewal(spec.name, next_renewal, ari_next)
