"""Running the real ``certwright`` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CERTWRIGHT = str(Path(sys.executable).parent / "certwright")


def run(*args: str, input: bytes | None = None, check: bool = False,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CERTWRIGHT, *args], input=input.decode() if input else None,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"certwright {' '.join(args)} failed: {proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failed command: exit code != 0, one line on stderr naming the problem."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = lines[0]
    assert line.startswith("certwright: error: "), line
    for f in fragments:
        assert f in line, (f, line)
    return line
