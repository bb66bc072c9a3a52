"""``certwright serve`` with a configuration an earlier ``init`` wrote, whose profiles
list ``scep`` and ``cmp`` (no front-end yet): it starts and serves, and says once, in
one line on stderr, which profiles list protocols nothing answers (issue 11, defect 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.served import curl, serving

pytestmark = pytest.mark.peer("curl")


def _earlier_init(data: Path) -> None:
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tls-server"]["protocols"] = ["acme", "est", "scep", "cmp", "cli"]
    doc["profiles"]["device"]["protocols"] = ["est", "scep", "cmp", "cli"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_ok_serve_warns_once_about_reserved_protocols(tmp_path: Path) -> None:
    with serving(tmp_path, _earlier_init) as served:
        assert curl(f"{served.http}/health").status == 200
        warnings = [line for line in served.log.read_text().splitlines()
                    if line.startswith("certwright: warning:")]
    assert warnings == [
        "certwright: warning: profiles device, tls-server list cmp, scep, which no front-end "
        "serves yet: nothing answers them (remove them from protocols to silence this)"]
