"""External ids: a short lowercase prefix and a ULID, such as ``pay_01J9ZQ3M4X7D8E9F0G1H2J3K4M``.

The ULID is 26 characters of Crockford base32 (``0-9A-Z`` without I, L, O, U)
encoding 128 bits: a 48-bit Unix time in milliseconds, then 80 bits from
``secrets``. Internal keys are integers; these ids are what callers see.

Guarantees
- Unique: within one process, every id differs from every earlier one; across
  processes, two ids collide only if they share a millisecond and 80 random bits.
- Sortable: within one process, ids with the same prefix are generated in
  strictly increasing string order, including from several threads and within
  one millisecond (the random part of the previous id is incremented, as in the
  ULID spec's monotonic mode). If the clock steps back, the previous timestamp
  is kept, so order holds and ``id_timestamp`` may be later than the wall clock
  by at most that step. Across processes, ids sort by millisecond of creation.
- A forked child starts a fresh sequence with fresh randomness, so parent and
  child never continue the same sequence.

Constraints
- Prefix: 2 to 8 lowercase ASCII letters (``pay``, ``ref``, ``mdt``). Anything
  else is a programming error and raises ``ValueError``.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

__all__ = ["id_timestamp", "is_valid_id", "new_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {char: value for value, char in enumerate(_CROCKFORD)}
_ULID_LENGTH = 26
_TIMESTAMP_BITS = 48
_RANDOM_BITS = 80
_TIMESTAMP_MAX = 2**_TIMESTAMP_BITS - 1
_RANDOM_MAX = 2**_RANDOM_BITS - 1
_PREFIX = re.compile(r"[a-z]{2,8}")
# 26 base32 characters hold 130 bits; a ULID uses 128, so the first is at most 7.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_id(prefix: str) -> str:
    """Returns a new external id ``f"{prefix}_{ulid}"``, later in string order than the previous one."""
    _check_prefix(prefix)
    return f"{prefix}_{_new_ulid()}"


def id_timestamp(external_id: str) -> datetime:
    """Returns the UTC creation time (millisecond precision) encoded in an external id.

    Raises ``ValueError`` if ``external_id`` is not a well-formed id; check
    caller input with ``is_valid_id`` first.
    """
    prefix, _, ulid = external_id.partition("_") if isinstance(external_id, str) else ("", "", "")
    if not _PREFIX.fullmatch(prefix) or not _ULID.fullmatch(ulid):
        raise ValueError(f"not a well-formed external id: {external_id!r}")
    timestamp_ms = _decode(ulid) >> _RANDOM_BITS
    return _EPOCH + timedelta(milliseconds=timestamp_ms)


def is_valid_id(value: object, prefix: str) -> bool:
    """Returns whether ``value`` is a well-formed external id with this prefix (canonical uppercase ULID)."""
    _check_prefix(prefix)
    if not isinstance(value, str) or not value.startswith(prefix + "_"):
        return False
    return _ULID.fullmatch(value[len(prefix) + 1 :]) is not None


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"id prefix must be 2 to 8 lowercase ASCII letters, got {prefix!r}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _random80() -> int:
    return secrets.randbits(_RANDOM_BITS)


def _new_ulid() -> str:
    global _last_ms, _last_random
    with _lock:
        now_ms = _now_ms()
        if now_ms > _last_ms:
            timestamp_ms, random_part = now_ms, _random80()
        elif _last_random < _RANDOM_MAX:
            timestamp_ms, random_part = _last_ms, _last_random + 1
        else:
            # 2**80 ids in one millisecond will not happen, but a random start near the top could
            # run out: borrow the next millisecond rather than break the order.
            timestamp_ms, random_part = _last_ms + 1, _random80()
        if timestamp_ms > _TIMESTAMP_MAX:
            raise OverflowError("ULID timestamp exceeds 48 bits (year 10889)")
        _last_ms, _last_random = timestamp_ms, random_part
    return _encode((timestamp_ms << _RANDOM_BITS) | random_part)


# Every pair of Crockford digits (10 bits), so a 130-bit ULID is 13 table lookups.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_PAIR_SHIFTS = range(120, -1, -10)


def _encode(value: int) -> str:
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def _decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + _DECODE[char]
    return value


def _reset_after_fork() -> None:
    global _lock, _last_ms, _last_random
    _lock = threading.Lock()
    _last_ms, _last_random = -1, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
