"""certbot 5.x from the package index, in a virtualenv of its own under ``.peers/certbot5``
(ignored by git): Debian's certbot 2.1 knows neither ARI (RFC 9773) nor IP identifiers
(RFC 8738). Built on first use, then reused."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import REQUIRE_PEERS, check_marked

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / ".peers"  # ignored by git: clients the tests install for themselves
CERTBOT5_SPEC = "certbot>=5"


def _unavailable(message: str) -> NoReturn:
    if REQUIRE_PEERS:
        pytest.fail(message + " (CERTWRIGHT_REQUIRE_PEERS=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def certbot5() -> Path:
    """The ``certbot`` program of a virtualenv with ``certbot>=5`` from the package index,
    built on first use and reused while its stamp names the same requirement. A lock
    keeps two test runs from building it at once."""
    check_marked("certbot5")
    venv = PEERS / "certbot5"
    prog = venv / "bin" / "certbot"
    stamp = venv / "certwright-stamp.json"

    def ready() -> bool:
        try:
            info = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return False
        return bool(info.get("spec") == CERTBOT5_SPEC and prog.exists()
                    and (venv / "bin" / "python").exists())

    if ready():
        return prog
    PEERS.mkdir(exist_ok=True)
    with (PEERS / "certbot5.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return prog
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=300)
        pip = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "--timeout", "60", CERTBOT5_SPEC],
            capture_output=True, text=True, timeout=1200, check=False)
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = "\n".join((pip.stderr or pip.stdout).strip().splitlines()[-5:])
            _unavailable(f"pip could not install {CERTBOT5_SPEC!r} into {venv} (the ARI "
                         f"tests need certbot 5 from PyPI; is the package index "
                         f"reachable?):\n{tail}")
        version = subprocess.run([str(prog), "--version"], capture_output=True, text=True,
                                 timeout=120, check=False)
        found = re.search(r"certbot ((\d+)\.\S+)", version.stdout + version.stderr)
        assert found and int(found.group(2)) >= 5, (version.stdout, version.stderr)
        stamp.write_text(json.dumps({"spec": CERTBOT5_SPEC, "certbot": found.group(1)}))
    return prog


