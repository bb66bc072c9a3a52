"""Say only what exists (issue 11, defect 10): SCEP and CMP have no front-end yet, so
neither the README, ``certwright --help``, DESIGN.md's introduction nor the profiles
``certwright init`` writes promise them; a configuration that still lists them (earlier
``init``s wrote them) keeps loading, and ``serve`` says, in one line, that nothing answers
them (tests/server/test_reserved_protocols.py runs that server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from certwright import registry
from certwright.ca import datadir
from tests.cli import run

ROOT = Path(__file__).resolve().parents[2]
UNBUILT = re.compile(r"(?i)\b(scep|cmp)\b")


def _served_protocols() -> set[str]:
    return {f.name for f in registry.frontends() if f.enrolls} | {registry.LOCAL}


def test_ok_init_profiles_list_only_protocols_with_a_front_end(tmp_path: Path) -> None:
    """ok/init: every protocol of every profile is one something answers."""
    data = tmp_path / "ca"
    run("init", "--data", str(data), check=True)
    text = (data / "certwright.yaml").read_text()
    assert not UNBUILT.search(text), UNBUILT.findall(text)
    for name, profile in yaml.safe_load(text)["profiles"].items():
        assert set(profile["protocols"]) <= _served_protocols(), (name, profile["protocols"])
    _, config, _ = datadir.load(data)
    assert config.reserved_protocols() == {} and config.reserved_warning() is None


@pytest.mark.parametrize("case,text", [
    ("ok/help", lambda: run("--help", check=True).stdout),
    ("ok/readme-introduction", lambda: (ROOT / "README.md").read_text().split("\n\n")[1]),
    ("ok/design-introduction", lambda: (ROOT / "DESIGN.md").read_text().split("\n\n")[1]),
])
def test_ok_no_promise_of_protocols_without_a_front_end(case: str, text: object) -> None:
    assert callable(text)
    found = text()
    assert "ACME" in found and "EST" in found, (case, found)
    if case == "ok/design-introduction" and UNBUILT.search(found):
        # The design may name them as what the core is built for, saying they do not exist.
        assert re.search(r"do not\s+exist yet", found), found
    else:
        assert not UNBUILT.search(found), (case, found)


def test_ok_reserved_protocols_still_load_and_are_named(tmp_path: Path) -> None:
    """ok/reserved: an earlier init's profiles load; the warning names them once."""
    data = tmp_path / "ca"
    run("init", "--data", str(data), check=True)
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["device"]["protocols"] = ["est", "scep", "cmp", "cli"]
    doc["profiles"]["tls-client"]["protocols"] = ["est", "scep", "cli"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _, config, _ = datadir.load(data)
    assert config.reserved_protocols() == {"device": ("scep", "cmp"), "tls-client": ("scep",)}
    assert config.reserved_warning() == (
        "profiles device, tls-client list cmp, scep, which no front-end serves yet: nothing "
        "answers them (remove them from protocols to silence this)")
    assert run("requests", "list", "--data", str(data), check=True).stderr == ""
