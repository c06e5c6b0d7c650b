"""Retries with backoff and their counts (`rsbuild.retries`); how network errors are classified."""

from __future__ import annotations

import pytest

from rsbuild.records import Failure
from rsbuild.retries import RETRIES, Backoff, RetryCounts, describe_table, jitter, retry_call
from rsbuild.sources.raster_io import _transient_cause
from rsbuild.testing.faults import FaultProxy, draw


def flaky(failures: list[BaseException]):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return "done"

    return call, calls


def cause_of(exc: BaseException) -> str | None:
    return "timeout" if isinstance(exc, TimeoutError) else None


def test_transient_errors_are_retried_with_waits_from_the_backoff() -> None:
    counts = RETRIES.mark()
    call, calls = flaky([TimeoutError(), TimeoutError()])
    waits: list[float] = []
    backoff = Backoff(attempts=4, base_s=1.0, cap_s=1.5)
    assert retry_call("stac", call, transient=cause_of, key="k", backoff=backoff, sleep=waits.append) == "done"
    assert calls["n"] == 3
    assert waits == [1.0 * jitter("k", 0), 1.5 * jitter("k", 1)]  # doubled, capped
    assert RETRIES.snapshot(since=counts) == {"stac": {"retries": 2, "gave_up": 0, "causes": {"timeout": 2}}}


def test_the_last_error_comes_out_and_is_counted_as_given_up() -> None:
    counts = RETRIES.mark()
    call, calls = flaky([TimeoutError("slow")] * 5)
    with pytest.raises(TimeoutError, match="slow"):
        retry_call("cog", call, transient=cause_of, key="k", backoff=Backoff(attempts=3), sleep=lambda s: None)
    assert calls["n"] == 3
    assert RETRIES.snapshot(since=counts)["cog"] == {"retries": 2, "gave_up": 1, "causes": {"timeout": 2}}


def test_errors_that_are_not_transient_pass_at_once() -> None:
    call, calls = flaky([ValueError("404")])
    with pytest.raises(ValueError):
        retry_call("cog", call, transient=cause_of, key="k", sleep=lambda s: None)
    assert calls["n"] == 1


def test_jitter_is_deterministic_and_spread() -> None:
    assert jitter("a", 0) == jitter("a", 0)
    values = {jitter(f"key{i}", 0) for i in range(50)}
    assert len(values) == 50 and all(0.5 <= v < 1.5 for v in values)


def test_counts_and_their_summary_line() -> None:
    counts = RetryCounts()
    counts.retried("stac", "HTTP 503", 2)
    counts.retried("gdal", "connection")
    counts.gave_up("stac", "HTTP 503")
    assert counts.total() == 3 and counts.total("stac") == 2
    assert describe_table(counts.snapshot()) == "gdal 1 (connection 1); stac 2 (HTTP 503 2, 1 given up)"
    counts.reset()
    assert counts.snapshot() == {}


@pytest.mark.parametrize(("href", "message", "cause"), [
    ("https://x/a.tif", "HTTP response code: 503", "HTTP 503"),
    ("https://x/a.tif", "HTTP response code: 429", "HTTP 429"),
    ("https://x/a.tif", "HTTP response code: 404", None),
    ("https://x/a.tif", "HTTP response code: 403", None),
    ("https://x/a.tif", "CURL error: Operation timed out after 2002 milliseconds", "timeout"),
    ("https://x/a.tif", "CURL error: Recv failure: Connection reset by peer", "connection"),
    ("s3://b/a.tif", "TIFFReadEncodedTile() failed.", "bad read"),
    ("https://x/a.tif", "'/vsicurl/https://x/a.tif' not recognized as being in a supported file format.", "bad read"),
    ("/data/a.tif", "TIFFReadEncodedTile() failed.", None),  # a local file: retrying will not help
])  # fmt: skip
def test_gdal_errors_are_classified(href: str, message: str, cause: str | None) -> None:
    assert _transient_cause(href, message) == cause


def test_failure_records_carry_transient_through_json() -> None:
    failure = Failure("read", "read_error", "p1", detail="HTTP 503 (after 4 tries)", transient=True)
    assert failure.to_json()["transient"] is True
    assert Failure.from_json(failure.to_json()) == failure
    assert Failure.from_json({"stage": "read", "reason": "read_error"}).transient is False  # older records


def test_fault_choice_depends_on_the_request_and_its_occurrence_only() -> None:
    proxy = FaultProxy("http://127.0.0.1:9", {"503": 0.5})
    other = FaultProxy("http://127.0.0.1:9", {"503": 0.5})
    requests = [("GET", f"/f{i}.tif", "bytes=0-99", b"") for i in range(40)] * 2
    first = [proxy.choose(*r) for r in requests]
    assert first == [other.choose(*r) for r in requests]  # same seed, same requests: same faults
    assert 5 < first.count("503") < 75  # about half
    assert first[:40] != first[40:]  # a repeated request draws again
    assert proxy.counts() == {"requests": 80, "faults": {"503": first.count("503")}}
    assert draw(0, "x", 0) != draw(1, "x", 0)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy("http://127.0.0.1:9", {"teapot": 0.1})
