"""Time-ordered row ids: valid UUID version 7, unique, increasing within one process."""

from __future__ import annotations

import time
import uuid

from pqsync.db.ids import new_id


def test_ids_are_uuid_version_7_with_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    # The first 48 bits are the Unix time in milliseconds (a run of ids may borrow ahead).
    assert before <= value.int >> 80 <= after + 5


def test_ids_are_unique_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]  # many per millisecond: the counter orders them
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids, key=lambda u: u.int)
    # Their text (how SQLite stores them) sorts the same way, so index inserts append.
    assert [i.hex for i in ids] == sorted(i.hex for i in ids)
