"""The event files: one gzip CSV a day, the day's clean events plus its dirt, and the truth of
every impression (the click model's probability and whether it was clicked)."""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from governance.schemas import EVENT_TYPES
from governance.simulate.config import DAY_MS, DIRTY_EVENT_KINDS, SimConfig
from governance.simulate.day import CLICK, PURCHASE, Day
from governance.simulate.dirt import EventDirt
from governance.simulate.shop import Shop
from governance.simulate.text import DayClock, ids, iso, money
from governance.simulate.writing import EVENT_SCHEMA, DirtLog, place, write_csv_gz

BOT_SESSION_EVENTS = 425  # mean events of a bot session (uniform 150..700)
IMPRESSION_TRUTH_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("p_click", pa.float64()),
        ("p_click_position_free", pa.float64()),
        ("clicked", pa.bool_()),
    ]
)


class EventWriter:
    """Simulates the days in order and hands each day's file to the writer pool. Holds what runs
    across days: id counters, late rows waiting for tomorrow's file and the summary counts."""

    def __init__(self, cfg: SimConfig, shop: Shop, rng: np.random.Generator, out: Path, log):
        self.cfg, self.shop, self.rng, self.out, self.log = cfg, shop, rng, out, log
        self.dirt = EventDirt(rng)
        self.clock = DayClock()
        self.events_per_session = 20.0  # clean events per human session, refined each day
        self.human_events = self.human_sessions = 0
        self.next_event, self.next_session, self.next_list = 1, 0, 0
        self.carried: list[dict] = []  # late rows waiting for tomorrow's file
        self.counts = dict(
            events_clean=0,
            event_rows=0,
            impressions=0,
            clicks=0,
            purchases=0,
            bot_events=0,
            sessions=0,
        )

    def run(self, pool: Executor, progress: bool) -> dict:
        truth = pq.ParquetWriter(
            self.out / "truth" / "impressions.parquet", IMPRESSION_TRUTH_SCHEMA
        )
        jobs = []
        for d in tqdm(range(self.cfg.days), desc="days", unit="day", disable=not progress):
            table, raw_at, fname = self._day(d, truth)
            jobs.append(
                pool.submit(write_csv_gz, self.out / fname, table, raw_at, self.cfg.gzip_level)
            )
            # Keep at most two days queued: each holds a day's table in memory.
            while len(jobs) > 2:
                jobs.pop(0).result()
        for j in jobs:
            j.result()
        truth.close()
        return self.counts

    def _day(self, d: int, truth: pq.ParquetWriter):
        """One day: simulate, number, write the impression truth, add the dirt."""
        cfg, shop = self.cfg, self.shop
        day = Day(shop, self.rng, d)
        per_day = cfg.events / cfg.days
        n_bot = (
            int(round(per_day * cfg.bot_event_share / BOT_SESSION_EVENTS))
            if shop.is_bot.any()
            else 0
        )
        n_human = max(
            1, int(round((per_day - n_bot * BOT_SESSION_EVENTS) / self.events_per_session))
        )
        humans, bots = day.humans(n_human), day.bots(n_bot)
        self.human_events += len(humans["events"]["ts"])
        self.human_sessions += n_human
        self.events_per_session = self.human_events / self.human_sessions
        ev = self._merge(day, humans, bots, n_human)
        table = self._table(day, ev, humans["n_lists"], n_human + n_bot)
        n = table.num_rows
        imp = self._write_impression_truth(truth, table, ev, humans)
        counts = self.counts
        counts["events_clean"] += n
        counts["impressions"] += imp
        counts["clicks"] += int((ev["type"] == CLICK).sum())
        counts["purchases"] += int((ev["type"] == PURCHASE).sum())
        counts["bot_events"] += n - len(humans["events"]["ts"])
        counts["sessions"] += n_human + n_bot
        return self._add_dirt(d, day, table, ev)

    def _merge(self, day: Day, humans: dict, bots: dict, n_human: int) -> dict:
        """Human and bot events in one set of arrays, in time order, all inside the day."""
        bots["events"]["session"] = bots["events"]["session"] + n_human
        ev = {k: np.concatenate([humans["events"][k], bots["events"][k]]) for k in humans["events"]}
        ev["ts"] = np.minimum(ev["ts"], day.t0 + DAY_MS - 1)
        order = np.argsort(ev["ts"], kind="stable")
        return {k: v[order] for k, v in ev.items()}

    def _table(self, day: Day, ev: dict, n_lists: int, n_sessions: int) -> pa.Table:
        """The day's events as contract columns, numbered on from the days before."""
        n = len(ev["ts"])
        event_no = self.next_event + np.arange(n)
        self.next_event += n
        list_no = np.where(ev["list_no"] >= 0, self.next_list + ev["list_no"], -1)
        self.next_list += n_lists
        session_no = self.next_session + ev["session"]
        self.next_session += n_sessions
        shop = self.shop
        list_prefix = pc.if_else(pa.array(ev["list_is_rec"]), "rec-", "srp-")
        return pa.table(
            {
                "event_id": ids("E", event_no, 10),
                "user_id": shop.user_ids.take(pa.array(ev["user"])),
                "session_id": ids("S", session_no, 9),
                "event_type": pa.array(EVENT_TYPES).take(pa.array(ev["type"])),
                "item_id": shop.item_ids.take(pa.array(ev["item"], mask=ev["item"] < 0)),
                "query": shop.pool.take(pa.array(ev["query"], mask=ev["query"] < 0)),
                "position": pa.array(ev["pos"], mask=ev["pos"] < 0),
                "list_id": ids(list_prefix, list_no, 9, null=list_no < 0),
                "quantity": pa.array(ev["qty"], mask=ev["qty"] < 0),
                "price": money(np.maximum(ev["cents"], 0), ev["cents"] < 0),
                "event_ts": self.clock.format(day.t0, ev["ts"]),
            },
            schema=EVENT_SCHEMA,
        )

    @staticmethod
    def _write_impression_truth(truth, table: pa.Table, ev: dict, humans: dict) -> int:
        imp = np.flatnonzero(ev["imp_truth"] >= 0)
        src = ev["imp_truth"][imp]
        truth.write_table(
            pa.table(
                {
                    "event_id": table.column("event_id").take(pa.array(imp)),
                    "p_click": humans["p_click"][src],
                    "p_click_position_free": humans["p_click_position_free"][src],
                    "clicked": humans["clicked"][src],
                }
            )
        )
        return len(imp)

    def _next_id(self) -> str:
        self.next_event += 1
        return f"E{self.next_event - 1:010d}"

    def _add_dirt(self, d: int, day: Day, table: pa.Table, ev: dict):
        """Dirty copies slotted in after their originals, today's late rows moved out and
        yesterday's moved in; sized so dirt makes up dirty_share of the rows in the file."""
        cfg, rng, n = self.cfg, self.rng, table.num_rows
        last_day = d == cfg.days - 1
        late_share = (
            0 if last_day else DIRTY_EVENT_KINDS["late_event"] / sum(DIRTY_EVENT_KINDS.values())
        )
        n_dirty = int(round(cfg.dirty_share * n / (1 - cfg.dirty_share * (1 - late_share))))
        day_date = iso(day.t0)[:10]
        dirty = self.dirt.events(table, ev["type"], n_dirty, last_day, self._next_id, day_date)
        keep = np.ones(n, bool)
        keep[dirty.late] = False
        moved = table.take(pa.array(dirty.late, pa.int64())).to_pylist()
        parts = [table.filter(pa.array(keep))]
        keys = [np.flatnonzero(keep).astype(float)]
        meta = [(r["event_id"], "late_event", None) for r in self.carried]
        if self.carried:
            parts.append(pa.Table.from_pylist(self.carried, EVENT_SCHEMA))
            keys.append(np.sort(rng.random(len(self.carried))) * n)
        if dirty.copies:
            parts.append(pa.Table.from_pylist([r for _, r, _, _ in dirty.copies], EVENT_SCHEMA))
            keys.append(np.array([i + 0.5 for i, _, _, _ in dirty.copies]))
            meta += [(r["event_id"], kind, col) for _, r, kind, col in dirty.copies]
        self.carried = moved
        raw = [(i + 0.75, t) for i, t, _ in dirty.broken_lines]
        table, raw_at, lines, raw_lines = place(pa.concat_tables(parts), np.concatenate(keys), raw)
        fname = f"events/{day_date}.csv.gz"
        n_keep = int(keep.sum())
        self.log.record(
            fname,
            lines[n_keep:],
            [m[0] for m in meta],
            [m[1] for m in meta],
            [m[2] for m in meta],
        )
        broken = sorted(dirty.broken_lines, key=lambda r: r[0] + 0.75)
        self.log.record(
            fname,
            raw_lines,
            [r[2] for r in broken],
            ["broken_line"] * len(broken),
            [None] * len(broken),
        )
        self.counts["event_rows"] += table.num_rows + len(broken)
        return table, raw_at, fname


def write_events(cfg, shop, rng, out: Path, log: DirtLog, pool: Executor, progress: bool) -> dict:
    return EventWriter(cfg, shop, rng, out, log).run(pool, progress)
