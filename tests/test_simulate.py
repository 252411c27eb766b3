"""The shop simulator: determinism, the data contract, the click model and the injected dirt."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from governance.simulate import EVENT_COLUMNS, EVENT_TYPES, SimConfig, main, simulate
from governance.simulate import vocabulary as catalog

TINY = dict(events=20_000, n_users=300, n_items=200, days=2)
START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 9, 3, tzinfo=UTC)
OPENED = datetime(2010, 1, 1, tzinfo=UTC)
CONTRACT = {
    "users.csv.gz": ["user_id", "email", "full_name", "address", "country", "signup_at"],
    "items.csv.gz": ["item_id", "title", "category_path", "brand", "price", "listed_at"],
    "labelled_queries.csv.gz": ["query", "intent", "category"],
}
LEAVES = {catalog.leaf_name(leaf[0]) for leaf in catalog.LEAVES}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(SimConfig(seed=11, **TINY), out, progress=False)
    return out


@pytest.fixture(scope="module")
def dirty(sim) -> pd.DataFrame:
    return pd.read_parquet(sim / "truth" / "dirty.parquet")


def lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def parse_ts(text) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def clean(sim: Path, dirty: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of one or more files without the lines truth/dirty.parquet lists, except late events:
    those are valid rows that merely arrive in the next day's file."""
    files = sorted((sim / "events").glob("*.csv.gz")) if name == "events" else [sim / name]
    frames = []
    for f in files:
        rel = str(f.relative_to(sim))
        bad = set(dirty.loc[(dirty.file == rel) & (dirty.kind != "late_event"), "line"])
        text = lines(f)
        kept = [text[0]] + [t for n, t in enumerate(text[1:], start=2) if n not in bad]
        frames.append(
            pd.read_csv(
                io.StringIO("\n".join(kept)), dtype=str, keep_default_na=False, na_values=[""]
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def events(sim, dirty) -> pd.DataFrame:
    ev = clean(sim, dirty, "events")
    ev["ts"] = pd.to_datetime(ev.event_ts, format="ISO8601", utc=True)
    return ev


@pytest.fixture(scope="module")
def bots(sim) -> set[str]:
    users = pd.read_parquet(sim / "truth" / "users.parquet")
    return set(users.loc[users.is_bot, "user_id"])


def test_same_seed_gives_identical_bytes_and_another_seed_differs(sim, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    simulate(SimConfig(seed=11, **TINY), again, progress=False)
    simulate(SimConfig(seed=12, **TINY), other, progress=False)
    files = sorted(p.relative_to(sim) for p in sim.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) >= 11
    for f in files:
        assert (sim / f).read_bytes() == (again / f).read_bytes(), f
    day = Path("events/2026-09-01.csv.gz")
    assert (sim / day).read_bytes() != (other / day).read_bytes()


def test_every_contract_column_is_present(sim):
    for name, columns in CONTRACT.items():
        assert lines(sim / name)[0].replace('"', "").split(",") == columns
    days = sorted((sim / "events").glob("*.csv.gz"))
    assert [d.name for d in days] == ["2026-09-01.csv.gz", "2026-09-02.csv.gz"]
    for d in days:
        assert lines(d)[0].replace('"', "").split(",") == EVENT_COLUMNS
    model = json.loads((sim / "truth" / "model.json").read_text())
    assert model["intents"] == ["buy_product", "browse_category", "compare_prices", "product_info"]
    assert set(model["click_model"]["params"]) >= {
        "b0",
        "b_aff",
        "b_price",
        "b_qual",
        "b_rel",
        "b_pos",
    }


def test_clean_rows_obey_the_contract(sim, dirty, events):
    items = clean(sim, dirty, "items.csv.gz")
    assert items.item_id.is_unique and items.title.str.len().min() > 0
    assert (items.price.astype(float) > 0).all()
    leaf = items.category_path.str.split(" > ").str[-1]
    assert leaf.isin(LEAVES).all() and leaf.nunique() >= 30
    assert items.category_path.str.split(" > ").str[0].nunique() >= 5
    median = items.price.astype(float).groupby(leaf).transform("median")
    assert (items.price.astype(float) / median).max() < 30
    listed = items.listed_at.map(parse_ts)
    assert listed.between(OPENED, END).all() and (listed >= START).any()  # some new items

    users = clean(sim, dirty, "users.csv.gz")
    assert users.user_id.notna().all() and users.user_id.str.fullmatch(r"C\d{7}").all()
    assert users.signup_at.map(parse_ts).between(OPENED, END).all()

    queries = clean(sim, dirty, "labelled_queries.csv.gz")
    assert len(queries) >= 2000 and queries["query"].str.len().min() > 0
    assert set(queries.intent) == set(catalog.INTENTS)
    assert queries.category.isin(LEAVES).all()

    ev = events
    assert ev.event_id.is_unique
    assert ev[["event_id", "user_id", "session_id", "event_ts"]].notna().all().all()
    assert set(ev.event_type) <= set(EVENT_TYPES)
    assert ev.ts.between(OPENED, END).all()
    not_search = ev[ev.event_type != "search"]
    assert not_search.item_id.isin(set(items.item_id)).all()
    assert ev.loc[ev.event_type == "search", "query"].notna().all()
    imp = ev[ev.event_type == "impression"]
    assert imp.list_id.notna().all() and (imp.position.astype(int) >= 0).all()
    assert imp.list_id.str.match(r"(srp|rec)-").all()
    money = ev[ev.event_type.isin(["purchase", "return"])]
    assert (
        len(money)
        and (money.quantity.astype(int) > 0).all()
        and (money.price.astype(float) > 0).all()
    )


def test_empirical_ctr_matches_the_click_model(sim, events, bots):
    truth = pd.read_parquet(sim / "truth" / "impressions.parquet")
    imp = events[events.event_type == "impression"]
    assert set(truth.event_id) == set(imp.event_id)
    assert not imp.user_id.isin(bots).any()
    p = truth.p_click.to_numpy()
    tolerance = 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(truth.clicked.mean() - p.mean()) < tolerance
    assert 0.03 < p.mean() < 0.3


def test_truth_clicks_are_the_ranker_labels_in_the_events(sim, events):
    """An impression is positive when the same user clicks the same item from the same list."""
    truth = pd.read_parquet(sim / "truth" / "impressions.parquet")
    imp = events[events.event_type == "impression"].merge(truth, on="event_id")
    clicks = events[(events.event_type == "click") & events.list_id.notna()]
    keys = ["user_id", "list_id", "item_id"]
    m = imp.merge(clicks[keys + ["ts"]], on=keys, how="left", suffixes=("", "_click"))
    m["positive"] = m.ts_click >= m.ts
    label = m.groupby("event_id").positive.any()
    assert (label.reindex(truth.event_id).to_numpy() == truth.clicked.to_numpy()).all()


def test_every_list_click_has_a_preceding_impression(events, bots):
    keys = ["user_id", "list_id", "item_id"]
    clicks = events[(events.event_type == "click") & ~events.user_id.isin(bots)]
    assert clicks.list_id.notna().all()
    imp = events[events.event_type == "impression"][keys + ["ts"]]
    m = clicks[keys + ["event_id", "ts"]].merge(imp, on=keys, how="left", suffixes=("", "_imp"))
    ok = (m.ts_imp <= m.ts).groupby(m.event_id).any()
    assert len(ok) == len(clicks) and ok.all()


def test_bots_click_far_faster_than_humans(events, bots):
    assert bots
    clicks = events[events.event_type == "click"]
    span = clicks.groupby("session_id").ts.agg(lambda t: (t.max() - t.min()).total_seconds() / 60)
    per_minute = clicks.groupby("session_id").size() / (span + 1)
    is_bot = clicks.groupby("session_id").user_id.first().isin(bots)
    assert is_bot.any()
    assert per_minute[is_bot].min() > 10 * per_minute[~is_bot].quantile(0.99)
    assert clicks.loc[clicks.user_id.isin(bots), "list_id"].isna().all()  # no impression behind


def _check_event_line(fields: list[str], kind: str, column, items: set[str], file_date: str):
    row = dict(zip(EVENT_COLUMNS, fields))
    if kind == "broken_line":
        return len(fields) != len(EVENT_COLUMNS)
    if len(fields) != len(EVENT_COLUMNS):
        return False
    ts = parse_ts(row["event_ts"])
    return {
        "malformed_price": lambda: not row["price"].replace(".", "", 1).lstrip("-").isdigit(),
        "malformed_timestamp": lambda: ts is None,
        "unknown_event_type": lambda: row["event_type"] not in EVENT_TYPES,
        "missing_required": lambda: row[column] == "",
        "exact_duplicate": lambda: True,  # checked by the caller
        "near_duplicate": lambda: ts is not None,
        "late_event": lambda: ts is not None and ts.date().isoformat() < file_date,
        "nonpositive_price": lambda: float(row["price"]) <= 0,
        "zero_quantity": lambda: row["quantity"] == "0" and row["event_type"] == "purchase",
        "timestamp_out_of_range": lambda: ts is not None and not (OPENED <= ts <= END),
        "unknown_item": lambda: row["item_id"] not in items,
    }[kind]()


def test_dirty_rows_match_truth_and_the_configured_share(sim, dirty, events):
    items = set(clean(sim, dirty, "items.csv.gz").item_id)
    assert dirty.groupby(["file", "line"]).size().max() == 1
    ev_dirty = dirty[dirty.file.str.startswith("events/")]
    assert set(ev_dirty.kind) == {
        "malformed_price",
        "malformed_timestamp",
        "unknown_event_type",
        "missing_required",
        "broken_line",
        "exact_duplicate",
        "near_duplicate",
        "late_event",
        "nonpositive_price",
        "zero_quantity",
        "timestamp_out_of_range",
        "unknown_item",
    }
    total = 0
    for f in sorted((sim / "events").glob("*.csv.gz")):
        text = lines(f)
        total += len(text) - 1
        rel = str(f.relative_to(sim))
        for d in ev_dirty[ev_dirty.file == rel].itertuples():
            line = text[d.line - 1]
            fields = next(csv.reader([line]))
            if d.key is not None:
                assert fields[0] == d.key, d
            else:
                assert fields[0] == "" and d.column == "event_id", d
            assert _check_event_line(fields, d.kind, d.column, items, f.name[:10]), d
            if d.kind == "exact_duplicate":
                assert text.count(line) >= 2
            if d.kind == "near_duplicate":
                twin = events[
                    (events.user_id == fields[1])
                    & (events.item_id == fields[4])
                    & (events.event_type == fields[3])
                ]
                gap = (twin.ts - pd.Timestamp(parse_ts(fields[10]))).abs()
                assert (gap <= pd.Timedelta(seconds=1)).any(), d
    share = len(ev_dirty) / total
    assert abs(share - 0.02) < 0.002

    def rows(name):
        return list(csv.reader(lines(sim / name)))

    users = rows("users.csv.gz")
    for d in dirty[dirty.file == "users.csv.gz"].itertuples():
        r = dict(zip(CONTRACT["users.csv.gz"], users[d.line - 1]))
        assert r["user_id"] == "" if d.kind == "missing_user_id" else parse_ts(r["signup_at"]) > END
    item_rows = rows("items.csv.gz")
    for d in dirty[dirty.file == "items.csv.gz"].itertuples():
        r = dict(zip(CONTRACT["items.csv.gz"], item_rows[d.line - 1]))
        assert r["item_id"] == d.key
        if d.kind == "nonpositive_price":
            assert float(r["price"]) <= 0
        elif d.kind == "price_outlier":
            median = next(m for p, _, _, m, _ in catalog.LEAVES if p == r["category_path"])
            assert float(r["price"]) >= 50 * median
        else:
            assert d.kind == "empty_title" and r["title"] == ""
    queries = rows("labelled_queries.csv.gz")
    for d in dirty[dirty.file == "labelled_queries.csv.gz"].itertuples():
        r = dict(zip(CONTRACT["labelled_queries.csv.gz"], queries[d.line - 1]))
        assert {
            "empty_query": r["query"] == "",
            "missing_intent": r["intent"] == "",
            "unknown_category": r["category"] not in LEAVES,
        }[d.kind]
    assert set(dirty.kind) >= {
        "missing_user_id",
        "future_signup",
        "price_outlier",
        "empty_title",
        "empty_query",
        "missing_intent",
        "unknown_category",
    }


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--dirty-share" in capsys.readouterr().out
    main(
        [
            "--out",
            str(tmp_path),
            "--events",
            "3000",
            "--users",
            "100",
            "--items",
            "100",
            "--days",
            "1",
            "--seed",
            "3",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == 100 and (tmp_path / "events" / "2026-09-01.csv.gz").exists()
