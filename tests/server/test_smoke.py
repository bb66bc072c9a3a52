from __future__ import annotations

from certwright.ca.service import CertificateAuthority, Issued
from tests.helpers import csr, request


def test_ok_issue_tls_server(ca: CertificateAuthority) -> None:
    out = ca.enroll(request(csr(["web.svc.internal", "10.1.2.3"], cn="web.svc.internal")))
    assert isinstance(out, Issued)
    assert out.record.names == ("dns:web.svc.internal", "ip:10.1.2.3")
