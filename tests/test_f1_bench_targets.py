"""bench_book prints the targets of the issue that owns the engine measured: issue 2's for the market
engine, issue 5's (depth median < 30 µs, p99 < 200 µs, all frames p99 < 100 µs) for the full engine."""

from __future__ import annotations

import pytest

from loadtests.bench_book import TARGETS, report_line


def _result(engine: str) -> dict:
    figures = dict.fromkeys(("p50_ns", "p99_ns", "p999_ns", "max_ns", "depth_p50_ns", "depth_p99_ns"), 1000)
    return {
        **figures,
        "file": "x.ws.jsonl.gz",
        "engine": engine,
        "messages": 10,
        "depth_messages": 5,
        "outputs": 3,
        "depth_max_ns": 1000,
        "msgs_per_s": 1.0,
        "wall_msgs_per_s": 1.0,
        "peak_rss_mb": 1.0,
        "blocks_per_msg": 0.0,
        "blocks_per_msg_caches_full": 0.0,
        "cache_entries_end": 0,
        "plain_book_depth_p50_ns": 1,
        "plain_book_depth_p99_ns": 1,
    }


@pytest.mark.parametrize(
    ("engine", "issue", "depth"),
    [("full", 5, "(targets p50 < 30, p99 < 200)"), ("market", 2, "(targets p50 < 20, p99 < 150)")],
)
def test_each_engine_prints_its_own_issue_targets(engine: str, issue: int, depth: str) -> None:
    text = report_line(_result(engine))
    assert f"targets of issue {issue}" in text
    assert depth in text
    assert "(target p99 < 100)" in text and "(target < 50)" in text
    assert TARGETS[engine]["issue"] == issue
