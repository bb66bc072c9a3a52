"""Renewal timing and the daemon's schedule, on a fake clock (no sleeping, no network:
nothing here is due for enrollment when the schedule is computed)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.agent.core import Agent
from certwright.agent.daemon import Daemon
from certwright.agent.renewal import lifetime_renewal, retry_delay
from certwright.agent.spec import Renewal, Spec, parse_spec
from certwright.agent.state import State
from certwright.clock import FakeClock
from tests.agent_support import safe_directory

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("case", "lifetime", "left"), [
    ("ok/90-days-third", 90 * DAY, 30 * DAY),
    ("ok/11-days-third", 11 * DAY, 11 * DAY / 3),
    ("ok/10-days-half", 10 * DAY, 5 * DAY),
    ("ok/6-hours-half", dt.timedelta(hours=6), dt.timedelta(hours=3)),
])
def test_ok_lifetime_rule(case: str, lifetime: dt.timedelta, left: dt.timedelta) -> None:
    rule = Renewal(jitter=0.02)
    rng = random.Random(7)
    times = [lifetime_renewal(T0, T0 + lifetime, rule, rng) for _ in range(200)]
    latest = T0 + lifetime - left
    assert all(latest - lifetime * 0.02 <= t <= latest for t in times), case
    assert len(set(times)) > 100  # jittered
    assert lifetime_renewal(T0, T0 + lifetime, Renewal(jitter=0), rng) == latest


def test_ok_retry_backoff_doubles_up_to_the_cap() -> None:
    rule = Renewal(retry_base="5m", retry_cap="1h")
    rng = random.Random(3)
    for failures, full in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (30, 60), (500, 60)]:
        d = retry_delay(failures, rule, rng)
        assert dt.timedelta(minutes=full) / 2 <= d <= dt.timedelta(minutes=full), failures


# -- the daemon's schedule ------------------------------------------------------------------


@pytest.fixture
def base() -> Iterator[Path]:
    with safe_directory() as d:
        yield d


def spec(base: Path, name: str, names: list[str]) -> Spec:
    out = base / "out" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert.pem").write_text("placeholder: the plan only checks that it exists\n")
    return parse_spec({
        "name": name,
        "issuer": {"acme": {"directory": "https://127.0.0.1:9/acme/directory",
                            "challenge": {"http-01": {"standalone": "127.0.0.1:9"}}}},
        "names": [{"static": names}],
        "output": {"directory": str(out)},
        "trust_anchor": str(base / "root.pem"),
    }, f"{name}.yaml")


def enrolled(state: State, s: Spec, next_renewal: dt.datetime, **kw: Any) -> None:
    state.record_success(
        spec=s.name, protocol="acme", issuer=s.issuer.url, profile=None,
        validation=s.issuer.validation, account=None,
        names={f"dns:{n}": ["static"] for n in s.names[0].static or ()}, serial="1",
        not_before=T0, not_after=T0 + 90 * DAY, next_renewal=next_renewal,
        ari_next_check=kw.get("ari"), version="000001", record={}, at=T0)


def test_ok_schedule_wakes_for_the_earliest_renewal_only(base: Path) -> None:
    clock = FakeClock(T0)
    state = State(base / "state")
    try:
        a, b = spec(base, "a", ["a.test"]), spec(base, "b", ["b.test"])
        enrolled(state, a, T0 + 60 * DAY)
        enrolled(state, b, T0 + 3 * DAY, ari=T0 + 2 * DAY)
        agent = Agent(state, clock, rng=random.Random(1))
        daemon = Daemon(lambda: [a, b], agent, clock, check_interval=30 * DAY)
        # b's ARI check comes first.
        assert daemon.tick([a, b]) == T0 + 2 * DAY
        # Nothing due: the daemon would sleep until the check interval, no earlier.
        assert Daemon(lambda: [a], agent, clock, check_interval=DAY).tick([a]) == T0 + DAY
        plan = agent.plan(a)
        assert not plan.due and plan.reason.startswith("renews at 2026-04-30")
        clock.advance(60 * DAY)
        plan = agent.plan(a)
        assert plan.due and plan.reason == "renewal time 2026-04-30 00:00 UTC reached"
    finally:
        state.close()


def test_ok_drift_is_due_at_once_and_failures_wait_for_their_retry(base: Path) -> None:
    clock = FakeClock(T0)
    state = State(base / "state")
    try:
        a = spec(base, "a", ["a.test"])
        enrolled(state, a, T0 + 60 * DAY)
        agent = Agent(state, clock, rng=random.Random(1))
        edited = spec(base, "a", ["a.test", "new.a.test"])
        plan = agent.plan(edited)
        assert plan.due and plan.reason == "names changed"
        assert plan.added == ("dns:new.a.test",) and plan.removed == ()
        state.record_failure(spec="a", protocol="acme", issuer=a.issuer.url,
                             validation="http-01 standalone", error="CA down",
                             retry_at=T0 + dt.timedelta(minutes=10), at=T0)
        plan = agent.plan(edited)
        assert not plan.due and plan.next_at == T0 + dt.timedelta(minutes=10)
        assert plan.reason == "names changed; retrying at 2026-03-01 00:10:00 UTC"
        daemon = Daemon(lambda: [edited], agent, clock, check_interval=DAY)
        assert daemon.tick([edited]) == T0 + dt.timedelta(minutes=10)
        clock.advance(dt.timedelta(minutes=10))
        assert agent.plan(edited).due
    finally:
        state.close()


def test_ok_unreadable_name_source_is_reported_not_enrolled(base: Path) -> None:
    clock = FakeClock(T0)
    state = State(base / "state")
    try:
        s = spec(base, "a", ["a.test"])
        broken = s.model_copy(update={"names": (s.names[0].model_copy(
            update={"static": None, "nginx": base / "missing.conf"}),)})
        plan = Agent(state, clock).plan(broken)
        assert not plan.due and plan.error is not None
        assert plan.reason == f"cannot derive names: nginx configuration {base}/missing.conf: " \
            "no such file"
    finally:
        state.close()
