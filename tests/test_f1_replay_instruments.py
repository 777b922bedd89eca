"""Replay knows every recorded symbol: `record` keeps the exchangeInfo filters it used beside the file.

Before, replay only knew `DEFAULT_INSTRUMENTS`: a SOLUSDT recording replayed as `unknown_symbol` frames
and its book never synced.
"""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.fakes.binance import FakeBinance
from worker import replay as replay_cli
from worker.binance.record import record
from worker.binance.recording import read_exchange_info
from worker.book import SyncState
from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument
from worker.replay import replay

pytestmark = pytest.mark.timeout(30)


def _sol(market: Market) -> Instrument:
    tick = Decimal("0.01") if market is Market.SPOT else Decimal("0.001")
    return Instrument("SOLUSDT", market, tick, Decimal("0.001"), Decimal("5"), "SOL")


def _record_args(fake: FakeBinance, out: Path, market: Market) -> argparse.Namespace:
    ep = fake.endpoints()
    return argparse.Namespace(
        symbols=["solusdt"],
        market=market.value,
        out=out,
        duration=0.6,
        flush_interval=0.2,
        usdm_depth_speed="0ms",
        spot_ws=ep.spot_ws,
        spot_rest=ep.spot_rest,
        usdm_ws=ep.usdm_ws,
        usdm_rest=ep.usdm_rest,
    )


@pytest.mark.parametrize("market", [Market.SPOT, Market.USDM])
async def test_a_recorded_non_default_symbol_replays_to_a_live_book(tmp_path: Path, market: Market) -> None:
    sol = _sol(market)
    async with FakeBinance([(market, "SOLUSDT")], instruments={(market, "SOLUSDT"): sol}) as fake:
        summary = await record(_record_args(fake, tmp_path, market))
    frames = Path(str(summary["frames_file"]))
    info = Path(str(summary["exchange_info_file"]))
    assert info.exists() and info.name.endswith(".exchangeinfo.json")
    assert read_exchange_info(info) == {(market, "SOLUSDT"): sol}
    assert [e["symbol"] for e in orjson.loads(info.read_bytes())["symbols"]] == ["SOLUSDT"]

    snapshots = Path(str(summary["snapshots_file"]))
    engine, stats = replay(frames, snapshots)  # exchangeInfo found beside the recording
    assert stats.bad_frames == 0, stats.bad_by_reason
    book = engine.symbol_book(market, "SOLUSDT")
    assert book is not None and book.state is SyncState.LIVE
    assert (book.syncs, book.gaps) == (1, 0) and book.applied > 10
    assert engine.unknown_symbol_events == 0

    # the fallback alone (what replay did before) cannot read the file: every frame is unknown_symbol
    _, old = replay(frames, snapshots, instruments=dict(DEFAULT_INSTRUMENTS))
    assert old.bad_by_reason.get("unknown_symbol", 0) == old.frames


async def test_exchange_info_option_overrides_and_the_cli_replays(tmp_path: Path, capsys) -> None:
    sol = _sol(Market.SPOT)
    async with FakeBinance([(Market.SPOT, "SOLUSDT")], instruments={(Market.SPOT, "SOLUSDT"): sol}) as fake:
        summary = await record(_record_args(fake, tmp_path, Market.SPOT))
    frames = Path(str(summary["frames_file"]))
    beside = Path(str(summary["exchange_info_file"]))
    moved = tmp_path / "elsewhere.json"
    beside.rename(moved)

    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    out = tmp_path / "s.json"
    base = [str(frames), "--no-db", "--no-progress", "--summary-json", str(out)]
    assert await asyncio.to_thread(replay_cli.main, parser.parse_args(base)) == 0
    assert orjson.loads(out.read_bytes())["bad_by_reason"].get("unknown_symbol", 0) > 0

    assert (
        await asyncio.to_thread(replay_cli.main, parser.parse_args([*base, "--exchange-info", str(moved)]))
        == 0
    )
    result = orjson.loads(out.read_bytes())
    assert result["bad_frames"] == 0 and result["symbols"] == ["spot:SOLUSDT"]
    assert result["engine"]["per_symbol"]["spot:SOLUSDT"]["state"] == "live"

    assert (
        await asyncio.to_thread(
            replay_cli.main, parser.parse_args([*base, "--exchange-info", str(tmp_path / "nope.json")])
        )
        == 2
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        read_exchange_info(bad)
    assert (
        await asyncio.to_thread(replay_cli.main, parser.parse_args([*base, "--exchange-info", str(bad)])) == 2
    )
    capsys.readouterr()


def test_a_raw_usdm_exchange_info_body_is_recognised(tmp_path: Path) -> None:
    body = {
        "symbols": [
            {
                "symbol": "SOLUSDT",
                "contractType": "PERPETUAL",
                "baseAsset": "SOL",
                "quoteAsset": "USDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.0010"},
                    {"filterType": "LOT_SIZE", "stepSize": "1"},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                ],
            }
        ]
    }
    path = tmp_path / "raw.json"
    path.write_bytes(orjson.dumps(body))
    (key,) = read_exchange_info(path)
    assert key == (Market.USDM, "SOLUSDT")
