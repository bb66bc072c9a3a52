"""The ACME front-end behind its seam: it reaches the core and its storage only through
the Protocols of ``acme/ports.py``, renders core errors as it did, and parses each wire
message into a declared type."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from certwright import acme
from certwright.acme import messages, ports
from certwright.acme.problems import AcmeProblem, from_error
from certwright.ca.service import CertificateAuthority
from certwright.errors import CertwrightError, ErrorKind
from certwright.store.acme import AcmeRepository

PACKAGE = Path(acme.__file__).parent
FORBIDDEN = ("certwright.store", "sqlalchemy", "certwright.ca.authority")
MODULES = sorted(PACKAGE.glob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_stays_behind_the_seam(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for name in _imports(tree):
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), name
    reached = [n.attr for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and n.attr in ("store", "authority")]
    assert reached == [], f"{path.name} reaches {reached}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_short(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 500


def _members(protocol: type) -> dict[str, Any]:
    return {name: value for name, value in vars(protocol).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _parameters(fn: Any) -> list[tuple[str, Any, bool]]:
    return [(p.name, p.kind, p.default is inspect.Parameter.empty)
            for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def _has_every_call(protocol: type, implementation: object) -> None:
    for name, member in _members(protocol).items():
        assert hasattr(implementation, name), name
        if isinstance(member, property):
            continue
        theirs = getattr(implementation, name)
        assert callable(theirs), name
        assert _parameters(theirs) == _parameters(member), name


def test_ok_the_acme_repository_is_acme_storage() -> None:
    _has_every_call(ports.AcmeStorage, AcmeRepository)


def test_ok_the_core_is_acme_core(ca: CertificateAuthority) -> None:
    _has_every_call(ports.AcmeCore, ca)


# Each kind as ACME rendered it before the seam (type, status); the tests of real clients
# depend on them.
RENDERED = {
    ErrorKind.MALFORMED: ("malformed", 400),
    ErrorKind.BAD_CSR: ("badCSR", 400),
    ErrorKind.BAD_PUBLIC_KEY: ("badPublicKey", 400),
    ErrorKind.REJECTED_IDENTIFIER: ("rejectedIdentifier", 400),
    ErrorKind.POLICY: ("rejectedIdentifier", 400),
    ErrorKind.UNAUTHORIZED: ("unauthorized", 403),
    ErrorKind.NOT_FOUND: ("malformed", 404),
    ErrorKind.CONFLICT: ("malformed", 409),
    ErrorKind.CONFIG: ("serverInternal", 500),
    ErrorKind.INTERNAL: ("serverInternal", 500),
}


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_core_error_rendering(kind: ErrorKind) -> None:
    p = from_error(CertwrightError(kind, "secret detail", rule="r"))
    assert (p.type, p.status) == RENDERED[kind]
    if RENDERED[kind][1] == 500:
        assert "secret" not in p.detail
    else:
        assert p.detail == "secret detail (rule r)"
    at_finalize = from_error(CertwrightError(kind, "d"), csr_stage=True)
    expected = "badCSR" if kind in (ErrorKind.POLICY, ErrorKind.MALFORMED,
                                    ErrorKind.BAD_PUBLIC_KEY, ErrorKind.BAD_CSR) \
        else RENDERED[kind][0]
    assert (at_finalize.type, at_finalize.status) == (expected, RENDERED[kind][1])


# -- wire messages ------------------------------------------------------------------------

MALFORMED: dict[str, tuple[type, dict[str, Any], str, str]] = {
    "fail/newAccount-contact-not-a-list": (
        messages.NewAccount, {"contact": "mailto:a@lab.test"}, "malformed", "contact"),
    "fail/newAccount-tos-not-a-boolean": (
        messages.NewAccount, {"termsOfServiceAgreed": "yes"}, "malformed",
        "termsOfServiceAgreed"),
    "fail/newAccount-eab-not-a-jws": (
        messages.NewAccount, {"externalAccountBinding": "kid-1"}, "malformed",
        "externalAccountBinding"),
    "fail/account-status-not-a-string": (
        messages.AccountUpdate, {"status": 1}, "malformed", "status"),
    "fail/keyChange-without-account": (
        messages.KeyChange, {"oldKey": {}}, "malformed", "account"),
    "fail/keyChange-oldKey-not-an-object": (
        messages.KeyChange, {"account": "https://x/acct/1", "oldKey": "k"}, "malformed",
        "oldKey"),
    "fail/newOrder-without-identifiers": (
        messages.NewOrder, {}, "malformed", "identifiers"),
    "fail/newOrder-identifier-without-value": (
        messages.NewOrder, {"identifiers": [{"type": "dns"}]}, "malformed", "identifier"),
    "fail/newOrder-notAfter-without-zone": (
        messages.NewOrder, {"identifiers": [{"type": "dns", "value": "a.lab.test"}],
                            "notAfter": "2030-01-01T00:00:00"}, "malformed", "notAfter"),
    "fail/newOrder-replaces-not-a-string": (
        messages.NewOrder, {"identifiers": [{"type": "dns", "value": "a.lab.test"}],
                            "replaces": 7}, "malformed", "replaces"),
    "fail/authorization-status-not-deactivated": (
        messages.AuthorizationUpdate, {"status": "valid"}, "malformed", "deactivated"),
    "fail/finalize-without-csr": (messages.Finalize, {}, "malformed", "csr"),
    "fail/finalize-csr-not-base64url": (
        messages.Finalize, {"csr": "not base64url!"}, "malformed", "csr"),
    "fail/finalize-csr-not-der": (messages.Finalize, {"csr": "bm90IGEgQ1NS"}, "badCSR", "CSR"),
    "fail/revokeCert-without-certificate": (
        messages.RevokeCert, {}, "malformed", "certificate"),
    "fail/revokeCert-not-der": (
        messages.RevokeCert, {"certificate": "bm90IGEgY2VydA"}, "malformed", "certificate"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_message(case: str) -> None:
    cls, payload, type_, names = MALFORMED[case]
    with pytest.raises(AcmeProblem) as e:
        cls.from_json(payload)
    assert e.value.type == type_ and names in e.value.detail, e.value.detail


def test_ok_messages_ignore_unknown_fields_and_nulls() -> None:
    assert messages.NewAccount.from_json({"contact": None, "x": 1}) == messages.NewAccount()
    assert messages.NewAccount.from_json(
        {"onlyReturnExisting": True, "contact": "ignored"}).only_return_existing
    order = messages.NewOrder.from_json(
        {"identifiers": [{"type": "email", "value": "a@lab.test"}], "notBefore": None,
         "replaces": None, "profile": "other"})
    assert order.identifiers == (messages.RequestedIdentifier("email", "a@lab.test"),)
    assert (order.not_before, order.replaces) == (None, None)
    assert messages.ChallengeResponse.from_json({"keyAuthorization": "t.k"}) == \
        messages.ChallengeResponse()
