"""``agent run``: enroll what is due, then sleep until the next spec needs a look.

The process wakes only when something is due: the earliest next renewal, retry or ARI
check among the specs, or ``check_interval`` (to notice edited configurations: drift),
or a signal. SIGHUP re-reads the specs (a bad spec file leaves the previous ones in
force, with the error logged); SIGTERM and SIGINT finish the enrollment under way and
exit 0. Signals wake the sleep through a self-pipe (``signal.set_wakeup_fd``), so there is
no polling.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import select
import signal
from collections.abc import Callable, Iterator

from certwright.agent.core import Agent
from certwright.agent.spec import Spec
from certwright.clock import Clock
from certwright.errors import CertwrightError

log = logging.getLogger("certwright.agent")

MIN_SLEEP = dt.timedelta(seconds=1)


class Daemon:
    def __init__(self, load: Callable[[], list[Spec]], agent: Agent, clock: Clock, *,
                 check_interval: dt.timedelta,
                 checkin: Callable[[list[Spec]], object] | None = None,
                 checkin_interval: dt.timedelta = dt.timedelta(minutes=15)) -> None:
        self.load = load
        self.agent = agent
        self.clock = clock
        self.check_interval = check_interval
        # Check-ins to the server's monitor (agent/checkin.py): after a cycle that
        # enrolled something, and at least every checkin_interval.
        self.checkin = checkin
        self.checkin_interval = checkin_interval
        self._next_checkin: dt.datetime | None = None
        self.stop = False
        self.reload = False
        # Specs enrolled in this process and when they may be tried again at the earliest,
        # so a spec that stays due after a successful run cannot spin.
        self._cooldown: dict[str, dt.datetime] = {}

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True

    @contextlib.contextmanager
    def _signals(self) -> Iterator[int]:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        try:
            yield r
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_fd)
            os.close(r)
            os.close(w)

    def run(self) -> int:
        specs = self.load()
        log.info("agent running with %d spec(s)", len(specs))
        with self._signals() as wakeup:
            while not self.stop:
                if self.reload:
                    self.reload = False
                    try:
                        specs = self.load()
                        log.info("specs re-read: %d spec(s)", len(specs))
                    except CertwrightError as e:
                        log.error("specs not re-read, keeping the previous ones: %s", e)
                wake = self.tick(specs)
                if self.stop or self.reload:
                    continue
                seconds = max((wake - self.clock.now()).total_seconds(), 0.0)
                log.debug("sleeping %.0f s, until %s", seconds, wake.isoformat())
                select.select([wakeup], [], [], seconds)
                with contextlib.suppress(BlockingIOError):
                    while os.read(wakeup, 512):
                        pass
        log.info("agent stopped")
        return 0

    def tick(self, specs: list[Spec]) -> dt.datetime:
        """Enroll every spec that is due; return when to look again."""
        now = self.clock.now()
        wake = now + self.check_interval
        enrolled = False
        for spec in specs:
            if self.stop:
                break
            plan = self.agent.plan(spec)
            cool = self._cooldown.get(spec.name)
            e = plan.enrollment
            if plan.due and (cool is None or cool <= now):
                self.agent.enroll(spec, plan.reason)
                enrolled = True
                self._cooldown[spec.name] = self.clock.now() + spec.renewal.retry_base
                plan = self.agent.plan(spec)
            elif e is not None and e.ari_next_check is not None and e.ari_next_check <= now:
                self.agent.refresh_ari(spec, e)
                plan = self.agent.plan(spec)
            at = plan.next_at
            if plan.due:
                at = self._cooldown.get(spec.name, now)
            if at is not None:
                wake = min(wake, at)
        if self.checkin is not None and not self.stop:
            if enrolled or self._next_checkin is None or self._next_checkin <= self.clock.now():
                self.checkin(specs)  # logs its own failures; the next cycle tries again
                self._next_checkin = self.clock.now() + self.checkin_interval
            wake = min(wake, self._next_checkin)
        return max(wake, self.clock.now() + MIN_SLEEP)
