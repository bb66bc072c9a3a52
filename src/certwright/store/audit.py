"""The tamper-evident audit log: a hash chain over every record.

Each record's hash covers its own fields and the previous record's hash, so editing a
record breaks its own hash, deleting or reordering records breaks the next link, and
truncating the tail is caught against ``audit_head`` (the newest link, which appenders
update in the same transaction).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

GENESIS = "0" * 64


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: dt.datetime
    event: str
    actor: str
    subject: str
    data: str  # canonical JSON text, hashed as stored
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "event": self.event,
            "actor": self.actor,
            "subject": self.subject,
            "data": json.loads(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def link_hash(
    seq: int, at: dt.datetime, event: str, actor: str, subject: str, data: str, prev_hash: str
) -> str:
    # Microseconds are dropped: not every database keeps them, and the hash must survive
    # a round trip through the store.
    body = canonical_json(
        {
            "seq": seq,
            "at": at.astimezone(dt.UTC).replace(microsecond=0).isoformat(),
            "event": event,
            "actor": actor,
            "subject": subject,
            "data": data,
            "prev": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""

    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "the chain"
        return f"audit chain broken at {where}: {self.problem}"


def verify(records: Iterator[AuditRecord], head: tuple[int, str] | None) -> tuple[int, Break | None]:
    """Walk the chain in ``seq`` order; return the number of good records and the first break."""
    expected_seq = 1
    prev = GENESIS
    count = 0
    for r in records:
        if r.seq != expected_seq:
            if r.seq > expected_seq:
                return count, Break(
                    expected_seq, f"record {expected_seq} is missing (next is {r.seq})"
                )
            return count, Break(r.seq, "sequence numbers are out of order")
        if r.prev_hash != prev:
            return count, Break(
                r.seq, "does not link to the previous record (deleted, inserted or reordered)"
            )
        h = link_hash(r.seq, r.at, r.event, r.actor, r.subject, r.data, r.prev_hash)
        if h != r.hash:
            return count, Break(r.seq, "contents do not match its hash (edited)")
        prev = r.hash
        expected_seq += 1
        count += 1
    if head is None:
        if count:
            return count, Break(None, "the head record is missing")
        return count, None
    head_seq, head_hash = head
    if head_seq != count or head_hash != prev:
        if head_seq > count:
            return count, Break(count + 1, f"records {count + 1}..{head_seq} are missing "
                                           "(the log was truncated)")
        return count, Break(head_seq, "the head does not match the last record")
    return count, None
