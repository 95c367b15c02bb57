"""Time-ordered row ids (UUID version 7, RFC 9562) for the tables that grow fastest.

A random UUID (version 4) sends every insert to a random leaf of the primary-key index, so
a page of 100 new appointments dirties ~100 index pages, each written again at commit. A
version 7 id starts with the millisecond it was made: new rows land at the index's right
edge, together. The 12 bits after the time count up within one millisecond, so ids made by
one process are strictly increasing; the last 62 bits are random.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

_COUNTER_MAX = 0xFFF
_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> uuid.UUID:
    """A new UUID version 7: time-ordered, unique, 62 random bits."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = 0
        elif _counter < _COUNTER_MAX:
            _counter += 1  # same millisecond (or the clock went back): keep counting up
        else:
            _last_ms += 1  # 4,096 ids in one millisecond: borrow the next one
            _counter = 0
        ms, counter = _last_ms, _counter
    # Uniqueness, not secrecy: ids are no credentials (every read is authorised by role and
    # organisation). `random` is reseeded in a forked child, so processes differ.
    random_bits = random.getrandbits(62)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random_bits)
