"""When to renew, and when to retry after a failure: pure arithmetic on injected time.

Without ARI (RFC 9773) a certificate is renewed when a third of its lifetime is left, or
half of it for lifetimes of 10 days or less (a short-lived certificate needs room for a
day of failed attempts). A random jitter of up to ``renewal.jitter`` of the lifetime
moves the moment earlier, so hosts enrolled together do not renew together. Failures
retry after ``retry_base`` doubled per consecutive failure, up to ``retry_cap``, with
"equal jitter" (half fixed, half random) so a fleet that lost its CA together does not
come back together.
"""

from __future__ import annotations

import datetime as dt
import random

from certwright.agent.spec import Renewal

SHORT_LIVED = dt.timedelta(days=10)


def lifetime_renewal(not_before: dt.datetime, not_after: dt.datetime, rule: Renewal,
                     rng: random.Random) -> dt.datetime:
    lifetime = not_after - not_before
    left = lifetime / 2 if lifetime <= SHORT_LIVED else lifetime / 3
    return not_after - left - lifetime * (rule.jitter * rng.random())


def retry_delay(failures: int, rule: Renewal, rng: random.Random) -> dt.timedelta:
    """The wait after the ``failures``-th consecutive failure (1, 2, ...)."""
    exponent = min(max(failures - 1, 0), 32)
    full: dt.timedelta = min(rule.retry_cap, rule.retry_base * (2 ** exponent))
    return full / 2 + (full / 2) * rng.random()
