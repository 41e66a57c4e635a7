"""External ids: prefix + ULID, unique and sortable (no database)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from zhangfang import ids
from zhangfang.ids import id_timestamp, is_valid_id, new_id

_CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.fixture
def fresh_sequence(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Starts the id sequence afresh and puts it back afterwards, so a faked clock leaks nowhere."""
    monkeypatch.setattr(ids, "_last_ms", -1)
    monkeypatch.setattr(ids, "_last_random", 0)
    return monkeypatch


def test_an_id_is_the_prefix_an_underscore_and_a_26_character_ulid() -> None:
    external_id = new_id("pay")
    prefix, separator, ulid = external_id.partition("_")
    assert (prefix, separator) == ("pay", "_")
    assert len(ulid) == 26
    assert set(ulid) <= _CROCKFORD
    assert ulid[0] <= "7"
    assert is_valid_id(external_id, "pay")


@pytest.mark.parametrize("prefix", ["ab", "pay", "ref", "mdt", "abcdefgh"])
def test_prefixes_of_two_to_eight_lowercase_letters_are_accepted(prefix: str) -> None:
    assert new_id(prefix).startswith(prefix + "_")


@pytest.mark.parametrize("prefix", ["", "a", "abcdefghi", "Pay", "PAY", "pa1", "pay_", "p-y", "páy", " pay", None, 1])
def test_an_invalid_prefix_is_a_programming_error(prefix: object) -> None:
    with pytest.raises(ValueError):
        new_id(prefix)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        is_valid_id("pay_01J9ZQ3M4X7D8E9F0G1H2J3K4M", prefix)  # type: ignore[arg-type]


def test_ten_thousand_ids_made_quickly_are_unique_and_already_sorted() -> None:
    made = [new_id("pay") for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)


def test_ids_made_from_several_threads_are_unique_and_sorted_per_thread() -> None:
    per_thread: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(per_thread))

    def make(into: list[str]) -> None:
        start.wait()
        for _ in range(2_000):
            into.append(new_id("ref"))

    threads = [threading.Thread(target=make, args=(into,)) for into in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [external_id for made in per_thread for external_id in made]
    assert len(set(everything)) == len(everything) == 16_000
    for made in per_thread:
        assert made == sorted(made)


def test_within_one_millisecond_the_random_part_counts_up(fresh_sequence: pytest.MonkeyPatch) -> None:
    monkeypatch = fresh_sequence
    monkeypatch.setattr(ids, "_now_ms", lambda: 4_102_444_800_000)  # 2100-01-01
    monkeypatch.setattr(ids, "_random80", lambda: 41)
    first, second, third = (new_id("pay") for _ in range(3))
    assert first < second < third
    assert first.endswith("0000000000000019")  # 41 in base32 is 19
    assert second.endswith("000000000000001A")
    assert third.endswith("000000000000001B")
    assert id_timestamp(first) == id_timestamp(third) == datetime(2100, 1, 1, tzinfo=UTC)


def test_order_holds_when_the_clock_steps_back(fresh_sequence: pytest.MonkeyPatch) -> None:
    monkeypatch = fresh_sequence
    clock = iter([4_102_444_800_500, 4_102_444_800_000, 4_102_444_800_001])
    monkeypatch.setattr(ids, "_now_ms", lambda: next(clock))
    made = [new_id("pay") for _ in range(3)]
    assert made == sorted(made)
    assert len(set(made)) == 3
    assert {id_timestamp(external_id) for external_id in made} == {
        datetime(2100, 1, 1, tzinfo=UTC) + timedelta(milliseconds=500)
    }


def test_an_exhausted_random_part_borrows_the_next_millisecond(fresh_sequence: pytest.MonkeyPatch) -> None:
    monkeypatch = fresh_sequence
    monkeypatch.setattr(ids, "_now_ms", lambda: 4_102_444_800_000)
    monkeypatch.setattr(ids, "_random80", lambda: 2**80 - 1)
    first, second = new_id("pay"), new_id("pay")
    assert first < second
    assert first.endswith("ZZZZZZZZZZZZZZZZ")
    assert id_timestamp(second) - id_timestamp(first) == timedelta(milliseconds=1)


def test_the_timestamp_reads_back_in_utc_to_the_millisecond() -> None:
    before_ms = time.time_ns() // 1_000_000
    external_id = new_id("mdt")
    after_ms = time.time_ns() // 1_000_000
    created = id_timestamp(external_id)
    assert created.tzinfo is UTC
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch + timedelta(milliseconds=before_ms) <= created <= epoch + timedelta(milliseconds=after_ms)
    assert created.microsecond % 1000 == 0


@pytest.mark.parametrize(
    "value",
    [
        "pay_01J9ZQ3M4X7D8E9F0G1H2J3K4",  # 25 characters
        "pay_01J9ZQ3M4X7D8E9F0G1H2J3K4MM",  # 27 characters
        "pay_01j9zq3m4x7d8e9f0g1h2j3k4m",  # lowercase ULID
        "pay_01J9ZQ3M4X7D8E9F0G1H2J3K4I",  # I is not Crockford
        "pay_01J9ZQ3M4X7D8E9F0G1H2J3K4U",  # U is not Crockford
        "pay_81J9ZQ3M4X7D8E9F0G1H2J3K4M",  # more than 128 bits
        "pay01J9ZQ3M4X7D8E9F0G1H2J3K4MM",  # no separator
        "ref_01J9ZQ3M4X7D8E9F0G1H2J3K4M",  # another prefix
        "pay_01J9ZQ3M4X7D8E9F0G1H2J3K4M ",
        "",
        None,
        12,
    ],
)
def test_a_malformed_id_is_not_valid(value: object) -> None:
    assert not is_valid_id(value, "pay")


def test_a_well_formed_id_is_valid_only_with_its_own_prefix() -> None:
    assert is_valid_id("pay_01J9ZQ3M4X7D8E9F0G1H2J3K4M", "pay")
    assert not is_valid_id("pay_01J9ZQ3M4X7D8E9F0G1H2J3K4M", "pa")
    assert not is_valid_id(new_id("payx"), "pay")


@pytest.mark.parametrize("value", ["pay_01J9ZQ3M4X7D8E9F0G1H2J3K4", "01J9ZQ3M4X7D8E9F0G1H2J3K4M", "", "PAY_x", None])
def test_id_timestamp_refuses_a_malformed_id(value: object) -> None:
    with pytest.raises(ValueError):
        id_timestamp(value)  # type: ignore[arg-type]


def test_id_timestamp_of_a_known_ulid() -> None:
    # The ULID spec's example id; the tulid library decodes it to 2016-07-31 00:54:10 in UTC+1.
    assert id_timestamp("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV") == datetime(2016, 7, 30, 23, 54, 10, 259_000, tzinfo=UTC)
