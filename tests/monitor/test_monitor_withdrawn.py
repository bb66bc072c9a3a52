"""A declared expectation is withdrawn only by a configuration at least as new as the one
that declared it (issue 11, defect 1), and a withdrawal is not a resolution.

- In process, with a FakeClock: evaluators holding configurations read at different
  times (one loaded before the expectation was added, one after, one after it was
  removed) take turns; the finding opens once, at the end of the grace period counted
  from when the expectation was first declared, and stays open until the newest
  configuration withdraws it: then it is closed as ``withdrawn`` with one ``withdrawn``
  alert, never ``resolved``, and the evaluator still declaring it does not bring it back.
- A real `certwright serve` (evaluating every second with the configuration it started
  with) and `certwright monitor check` after the operator adds an expectation: the
  server's loop keeps the finding open (one ``open`` webhook alert, no ``resolved``);
  removed from the file, `monitor check` closes it as withdrawn.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority
from certwright.clock import FakeClock
from certwright.model.monitor import Probe
from tests.cli import run
from tests.monitor.monitor_support import Receiver, add_monitor_config, fast_monitor, receiving
from tests.monitor.test_monitor_units import Inbox, kinds, make
from tests.served import Served, serving

SUBJECT = "declared:db9"
EXPECT = ("  expect:\n"
          "    - {id: db9, host: db9.test, names: [db9.test], profile: tls-server%s}\n")


def _edit(data: Path, old: str, new: str) -> None:
    cfg = data / "certwright.yaml"
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))


@pytest.fixture
def generations(ca_dir: Path, clock: FakeClock) -> Iterator[list[CertificateAuthority]]:
    """The CA opened three times: before the expectation is added, with it, and after
    it was removed again (each holds the configuration it read)."""
    add_monitor_config(ca_dir, "monitor:\n  grace: 1h\n  expect: []\n  alerts: {reminder: 0s}")
    opened = [datadir.open_ca(ca_dir, clock=clock)]
    _edit(ca_dir, "  expect: []\n", EXPECT % "")
    opened.append(datadir.open_ca(ca_dir, clock=clock))
    try:
        yield opened
    finally:
        for ca in opened:
            ca.store.close()


def test_ok_evaluators_with_older_and_newer_configurations_never_fight(
        generations: list[CertificateAuthority], ca_dir: Path, clock: FakeClock) -> None:
    inbox = Inbox()
    old_ca, new_ca = generations
    old, new = make(old_ca, inbox), make(new_ca, inbox)
    assert kinds(new) == [] and kinds(old) == [], "declared now: within its grace period"
    for step in (10, 10, 10, 10, 10, 9):  # 59 minutes, the evaluators taking turns
        clock.advance(dt.timedelta(minutes=step))
        assert kinds(old) == [] and kinds(new) == []
    clock.advance(dt.timedelta(minutes=2))
    missing = [("missing", "critical", SUBJECT)]
    assert kinds(old) == missing, ("the older evaluator judges what the newer declared, "
                                   "grace counted from when it was first declared")
    for _ in range(3):
        clock.advance(dt.timedelta(minutes=5))
        assert kinds(new) == missing and kinds(old) == missing
    assert inbox.take() == [("open", "missing", "critical")], "one open alert, no resolved"
    first = next(f for f in old.evaluate().open if f.subject == SUBJECT)
    assert first.since == first.opened_at - dt.timedelta(minutes=1)

    # The operator removes it: a configuration read now withdraws it.
    _edit(ca_dir, EXPECT % "", "  expect: []\n")
    generations.append(datadir.open_ca(ca_dir, clock=clock))
    newest = make(generations[-1], inbox)
    assert kinds(newest) == []
    events = inbox.events[:]
    assert [(e.event, e.finding.kind) for e in events] == [("withdrawn", "missing")]
    assert events[0].finding.closed_as == "withdrawn" and events[0].finding.id == first.id
    inbox.take()
    for _ in range(3):  # the evaluator that still declares it does not bring it back
        clock.advance(dt.timedelta(hours=2))
        assert kinds(new) == [] and kinds(newest) == [] and kinds(old) == []
    assert inbox.take() == []


def test_ok_declared_again_by_a_newer_configuration_starts_a_new_grace_period(
        generations: list[CertificateAuthority], ca_dir: Path, clock: FakeClock) -> None:
    old_ca, new_ca = generations
    old = make(old_ca)  # an evaluator is made as its configuration is read
    kinds(make(new_ca))
    _edit(ca_dir, EXPECT % "", "  expect: []\n")
    generations.append(datadir.open_ca(ca_dir, clock=clock))
    kinds(make(generations[-1]))  # withdrawn
    clock.advance(dt.timedelta(hours=2))
    _edit(ca_dir, "  expect: []\n", EXPECT % "")
    generations.append(datadir.open_ca(ca_dir, clock=clock))
    again = make(generations[-1])
    assert kinds(again) == [], "declared again now: a new grace period"
    clock.advance(dt.timedelta(minutes=61))
    assert kinds(old) == [("missing", "critical", SUBJECT)]


def test_ok_an_evaluation_begun_before_the_declaration_leaves_its_finding_open(
        ca_dir: Path, clock: FakeClock) -> None:
    """Two evaluations overlapping: the older configuration's snapshot is taken before
    the newer one declares the expectation and opens its finding (its prober runs the
    other evaluation), and it records its findings after: it did not judge the
    expectation, so it leaves the finding open."""
    add_monitor_config(ca_dir, "monitor:\n  expect: []\n  alerts: {reminder: 0s}")
    inbox = Inbox()
    with datadir.opened(ca_dir, clock=clock) as old_ca:
        old = make(old_ca, inbox)
        _edit(ca_dir, "  expect: []\n", EXPECT % ", deadline: 2020-01-01T00:00:00Z")
        with datadir.opened(ca_dir, clock=clock) as new_ca:
            new = make(new_ca, inbox)

            def overlapping(*_: object) -> dict[str, Probe]:
                assert kinds(new) == [("missing", "critical", SUBJECT)]
                return {}

            old.prober = overlapping
            assert kinds(old) == [("missing", "critical", SUBJECT)]
            assert inbox.take() == [("open", "missing", "critical")]


def _check(data: Path) -> dict[str, Any]:
    proc = run("monitor", "check", "--data", str(data), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _of(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e["finding"]["kind"]) for e in events
            if e["finding"]["subject"] == SUBJECT]


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("monitor-withdrawn"),
                 lambda data: fast_monitor(data, hook.url, extra="  expect: []")) as s:
        yield s


@pytest.mark.peer("curl")
def test_ok_served_loop_keeps_a_missing_certificate_open_until_withdrawn(
        server: Served, hook: Receiver) -> None:
    past = ", deadline: 2020-01-01T00:00:00Z"
    _edit(server.data, "  expect: []\n", EXPECT % past)
    report = _check(server.data)
    found = [f for f in report["findings"] if f["subject"] == SUBJECT]
    assert [(f["kind"], f["severity"]) for f in found] == [("missing", "critical")], report
    hook.wait_for(lambda ev: _of(ev) == [("open", "missing")])
    time.sleep(4)  # the server's loop, on the configuration it started with, runs 4 times
    assert _of(hook.delivered()) == [("open", "missing")], "no resolved: nothing was issued"
    again = [f for f in _check(server.data)["findings"] if f["subject"] == SUBJECT]
    assert [f["id"] for f in again] == [found[0]["id"]], "the same finding, still open"

    _edit(server.data, EXPECT % past, "  expect: []\n")
    report = _check(server.data)
    assert [f for f in report["findings"] if f["subject"] == SUBJECT] == []
    events = hook.wait_for(lambda ev: len(_of(ev)) == 2)
    assert _of(events) == [("open", "missing"), ("withdrawn", "missing")]
    closed = next(e["finding"] for e in events if e["event"] == "withdrawn")
    assert closed["closed_as"] == "withdrawn" and closed["id"] == found[0]["id"]
    time.sleep(2.5)
    assert _of(hook.delivered()) == [("open", "missing"), ("withdrawn", "missing")]
