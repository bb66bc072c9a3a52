"""Named shared secrets: what a requester proves it knows before it may enroll.

EST bootstrap passwords (RFC 7030 3.2.3) today; SCEP challenge passwords (RFC 8894)
and CMP MAC secrets (RFC 9810) are the same thing. Each is bound to the one
protocol that accepts it and to one profile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

__all__ = ["Credential"]


@dataclasses.dataclass(frozen=True)
class Credential:
    protocol: str  # the front-end that accepts it ("est", ...)
    name: str
    profile: str
    secret: str  # a hash of the secret, never the secret: scrypt$N$r$p$salt$hash
    one_time: bool
    expires_at: dt.datetime | None
    used_at: dt.datetime | None  # one-time: when it was spent
    created_at: dt.datetime

    def spent(self) -> bool:
        return self.one_time and self.used_at is not None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
