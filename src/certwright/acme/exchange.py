"""One request and its answer, as every resource handler sees them, and the threads that
blocking work (the store) runs on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from certwright.acme.problems import AcmeProblem
from certwright.ca.profiles import Profile

JSON = "application/json"
PROBLEM = "application/problem+json"
PEM_CHAIN = "application/pem-certificate-chain"
HANDLER_THREADS = 32  # requests handled at once (each holds a thread while it runs)
T = TypeVar("T")


@dataclasses.dataclass
class Ctx:
    """One request as the handlers see it."""

    profile_name: str
    profile: Profile
    base: str  # https://host:port/acme/<profile>
    url: str
    method: str
    body: bytes
    params: dict[str, str]
    content_type: str
    # The Replay-Nonce of the reply, when it was issued with the redemption of the
    # request's nonce (one transaction); otherwise the reply gets one of its own.
    reply_nonce: str | None = None
    # finalize: CAA of the order's names re-checked before the unit (Challenges.caa_recheck).
    caa_problem: AcmeProblem | None = None


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes with media_type
    media_type: str = JSON
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    background: Callable[[], Coroutine[Any, Any, None]] | None = None


def problem_reply(p: AcmeProblem) -> Reply:
    return Reply(p.status, p.as_json(), PROBLEM, dict(p.headers))


Handler = Callable[[Ctx], Reply]


class Threads:
    """Blocking work (the store) on this server's threads. A plain executor: anyio's
    to_thread costs about twice as much per call. Made on first use, so that a worker
    process forked after start-up has threads of its own."""

    def __init__(self, size: int = HANDLER_THREADS) -> None:
        self._size = size
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._size, thread_name_prefix="acme")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
