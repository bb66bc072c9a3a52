"""The import contracts of DESIGN.md's layers hold, and the checker that `make lint` runs
catches each kind of violation (tools/check_layers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import check_layers  # noqa: E402

MAX_LINES = 500


def test_ok_the_tree_keeps_its_contracts() -> None:
    assert [str(v) for v in check_layers.check(ROOT / "src")] == []


def test_ok_no_source_file_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "src").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "certwright" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("case,files,expected", [
    ("fail/front-end-imports-store",
     {"acme/server.py": "from certwright.store.repo import Store\n"},
     "front-end acme imports certwright.store.repo"),
    ("fail/front-end-imports-sqlalchemy",
     {"est/state.py": "import sqlalchemy as sa\n"},
     "front-end est imports sqlalchemy"),
    ("fail/front-end-imports-front-end",
     {"est/x.py": "from certwright.acme import jws\n"},
     "front-end est imports front-end acme"),
    ("fail/upward-import",
     {"ca/service.py": "from certwright.server.app import BodyLimit\n"},
     "imports run downward only"),
    ("fail/relative-upward-import",
     {"store/repo.py": "from ..ca import policy\n"},
     "store (layer 1) imports certwright.ca"),
    ("fail/agent-imports-server-side",
     {"agent/core.py": "from certwright.ca import datadir\n"},
     "the agent imports certwright.ca"),
    ("fail/reaching-past-the-core",
     {"commands.py": "def f(ca):\n    return ca.store.requests()\n"},
     "ca.store: commands reaches past the core"),
    ("fail/reaching-past-the-core-from-a-front-end",
     {"est/x.py": "class X:\n    def f(self):\n        return self.core.authority.issuer_id\n"},
     "self.core.authority: est reaches past the core"),
    ("fail/core-names-a-protocol",
     {"ca/policy.py": 'def f(p):\n    return p == "est"\n'},
     "ca/ names the protocol 'est'"),
    ("fail/server-names-a-protocol",
     {"server/app.py": "ACME_PREFIX = '/x/'\n"},
     "server/ names the protocol 'ACME'"),
])
def test_fail_checker_reports(tmp_path: Path, case: str, files: dict[str, str],
                              expected: str) -> None:
    violations = [str(v) for v in check_layers.check(_tree(tmp_path, files))]
    assert any(expected in v for v in violations), (case, violations)


@pytest.mark.parametrize("case,files", [
    ("ok/type-checking-import-is-not-a-dependency",
     {"ca/frontend.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from certwright.server.app import BodyLimit\n"}),
    ("ok/comments-and-docstrings-may-cite-protocols",
     {"ca/policy.py": '"""Applies to ACME, EST, SCEP and CMP alike."""\n# RFC 8555 (ACME)\n'}),
    ("ok/downward-import", {"acme/server.py": "from certwright.ca.policy import Requester\n"}),
])
def test_ok_checker_allows(tmp_path: Path, case: str, files: dict[str, str]) -> None:
    assert [str(v) for v in check_layers.check(_tree(tmp_path, files))] == [], case


def test_fail_make_lint_command_exits_non_zero_on_a_violation(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"acme/server.py": "import sqlalchemy\n"})
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_layers.py"), str(src)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "front-end acme imports sqlalchemy" in proc.stdout
    assert "1 import contract violation(s)" in proc.stderr
