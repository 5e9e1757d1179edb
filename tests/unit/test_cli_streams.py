"""The parsing and printing of ``zq stream``'s and ``zq consume --group``'s options."""

from __future__ import annotations

import pytest

from zq.cli.streams import (
    MAX_SIZE,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    parse_start,
)
from zq.client.streams import start_arg


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("90", 90.0), ("1.5", 1.5), (".5", 0.5), ("90s", 90.0), ("15m", 900.0),
    ("12h", 43_200.0), ("7d", 604_800.0), ("2w", 1_209_600.0), ("1.5h", 5_400.0),
    (" 7d ", 604_800.0), ("7 d", 604_800.0), ("0d", 0.0)])
def test_durations_are_seconds_or_a_number_with_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "d", "-1", "-7d", "7x", "7dd", "7 days", "1e3", "inf", "nan", "15M", "7D", "1,5h",
    "1.2.3s", "9" * 400, "1000000000000000d"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("1000", 1000), ("10B", 10), ("1KB", 1000), ("5MB", 5_000_000),
    ("10GB", 10_000_000_000), ("2TB", 2 * 10**12), ("1KiB", 1024), ("512MiB", 512 * 2**20),
    ("3GiB", 3 * 2**30), ("1TiB", 2**40), ("10gb", 10**10), ("10Gb", 10**10),
    ("1kib", 1024), ("1KIB", 1024), ("1.5GB", 1_500_000_000), ("0.5KiB", 512),
    (" 10 GB ", 10**10)])
def test_sizes_are_bytes_or_a_number_with_a_unit(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", [
    "", "GB", "-1", "-10GB", "10XB", "10 G", "10GBs", "1e9", "inf", "1.5", "1.0001KB",
    "0.3B", "1,000", "99999999TB"])
def test_a_bad_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|bytes"):
        parse_size(text)


def test_the_largest_size_is_what_the_wire_holds() -> None:
    assert parse_size(str(MAX_SIZE)) == MAX_SIZE
    with pytest.raises(ValueError, match="too large"):
        parse_size(str(MAX_SIZE + 1))


@pytest.mark.parametrize(("text", "start"), [
    ("first", "first"), ("last", "last"), ("next", "next"), ("1", 1), ("42", 42),
    ("2024-05-01", "2024-05-01"), ("2024-05-01T12:00:00", "2024-05-01T12:00:00"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
    ("2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00+02:00")])
def test_a_start_is_a_word_an_offset_or_an_iso_time(text: str, start: str | int) -> None:
    got = parse_start(text)
    assert got == start
    assert type(got) is type(start)
    start_arg(got)  # what the SDK takes, unchanged


@pytest.mark.parametrize("text", [
    "", "0", "00", "-1", "First", "LAST", "yesterday", "1.5", "2024-13-01", "12:00 tomorrow",
    "\u0663"])  # an Arabic-Indic digit is no offset
def test_a_bad_start_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_start(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (604_800, "7d"), (1_209_600, "14d"), (86_400, "1d"), (5_400, "90m"), (3_600, "1h"),
    (90, "90s"), (1.5, "1.5s"), (0.25, "0.25s")])
def test_durations_print_in_the_largest_unit_that_divides_them(seconds: float,
                                                              text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("size", "text"), [
    (10**10, "10GB"), (2**30, "1GiB"), (512 * 2**20, "512MiB"), (1000, "1KB"),
    (1500, "1500B"), (7, "7B"), (2**40, "1TiB"), (3 * 10**12, "3TB")])
def test_sizes_print_in_the_largest_unit_that_divides_them(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
