"""Served lists through the governed path, and the logger's outage handling against a real
PostgreSQL reached through a proxy that the test cuts and restores."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg2
from conftest import TEST_PSEUDONYM_KEY
from sqlalchemy.engine import make_url
from tcp_proxy import Proxy

from governance.privacy import pseudonymise
from governance.served_lists import store_served_lists
from governance.settings import Settings
from serving.list_log import ListLogger


def served(n_items: int = 3, **kw) -> dict:
    return {
        "list_id": uuid.uuid4().hex,
        "served_at": datetime.now(UTC).isoformat(),
        "endpoint": "recommend",
        "user_id": pseudonymise(f"user-{uuid.uuid4().hex[:4]}", TEST_PSEUDONYM_KEY),
        "query": None,
        "model_tag": "cartwise-ranker:abc",
        "feature_service": "ranker_v1",
        "variant": "control",
        "experiment": "exp",
        "shadow_model": None,
        "fallback": False,
        "items": [
            {
                "item_id": f"i{p:05d}",
                "position": p,
                "score": 1.0 - p / 10,
                "p_click": 0.1,
                "shadow_score": None,
                "features": {"ctr_7d": 0.05 * p, "hour_of_day": float("nan")},
            }
            for p in range(n_items)
        ],
        **kw,
    }


def rows(settings, sql, *args):
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_batch_validates_quarantines_and_reconciles(settings):
    good = [served(), served(n_items=5)]
    bad_user = served(user_id="raw-shop-id-42")  # a raw id must never be stored
    bad_score = served()
    bad_score["items"][1]["score"] = float("nan")
    empty = served(n_items=0)
    lists = good + [bad_user, bad_score, empty]
    result = store_served_lists(lists, settings)
    assert result.status == "loaded" and result.reconciles
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 2, 3)
    assert any("user_id" in r for r in result.reasons[bad_user["list_id"]])
    assert any("score" in r for r in result.reasons[bad_score["list_id"]])
    assert result.reasons[empty["list_id"]] == ["no_items"]
    assert rows(settings, "SELECT count(*) FROM served_items")[0][0] == 8
    (n_q,) = rows(settings, "SELECT count(*) FROM quarantine WHERE table_name = 'served_lists'")[0]
    assert n_q == 3
    # NaN feature values are stored as JSON null, the others as numbers.
    feats = rows(
        settings,
        "SELECT features FROM served_items WHERE list_id = %s AND position = 2",
        good[0]["list_id"],
    )[0][0]
    assert feats == {"ctr_7d": 0.1, "hour_of_day": None}
    # The same batch again changes nothing; a new batch repeating one list counts a duplicate.
    again = store_served_lists(lists, settings)
    assert again.status == "already_loaded" and again.rows_duplicate == 5
    mixed = store_served_lists([good[0], served()], settings)
    assert (mixed.rows_loaded, mixed.rows_duplicate) == (1, 1)
    assert rows(settings, "SELECT count(*) FROM served_lists")[0][0] == 3


def test_logger_survives_a_database_outage(settings, tmp_path):
    url = make_url(settings.database_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432).start()
    via_proxy = Settings(
        database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
        data_dir=settings.data_dir,
        pseudonym_key=TEST_PSEUDONYM_KEY,
    )
    logger = ListLogger(
        lambda lists: store_served_lists(lists, via_proxy, timeout_s=1),
        tmp_path / "spill",
        batch_size=20,
        flush_s=0.05,
        retry_s=0.3,
        max_queue=50,
    ).start()
    sent: list[str] = []

    def produce(n: int) -> None:
        for _ in range(n):
            lst = served()
            sent.append(lst["list_id"])
            logger.log(lst)
            time.sleep(0.002)

    try:
        produce(40)
        assert logger.flush(20)
        proxy.stop()  # PostgreSQL unreachable: writes fail, batches spill
        t0 = time.monotonic()
        produce(120)  # more than the queue holds: the overflow spills too
        assert time.monotonic() - t0 < 5  # log() never waited on the database
        time.sleep(0.5)
        down = logger.stats()
        assert down.write_failures > 0 and down.on_disk > 0
        proxy.start()  # back on the same port
        assert logger.flush(30), logger.stats()
    finally:
        logger.stop()
        proxy.stop()
    stats = logger.stats()
    assert stats.reconciles and stats.accepted == len(sent) == 160
    assert stats.replayed >= down.on_disk
    stored = [r[0] for r in rows(settings, "SELECT list_id FROM served_lists")]
    assert sorted(stored) == sorted(sent)  # nothing lost, nothing doubled (list_id is the key)
    assert rows(settings, "SELECT count(*) FROM served_items")[0][0] == 3 * len(sent)
    (read, loaded, dup) = rows(
        settings,
        "SELECT sum(rows_read), sum(rows_loaded), sum(rows_duplicate) FROM ingest_batches "
        "WHERE table_name = 'served_lists' AND status = 'loaded'",
    )[0]
    assert loaded == len(sent) and read == loaded + dup
    assert not list((tmp_path / "spill").rglob("*.jsonl"))


def test_full_queue_spills_instead_of_blocking(settings, tmp_path):
    gate = threading.Event()

    def slow_write(lists):
        gate.wait(10)
        return store_served_lists(lists, settings)

    logger = ListLogger(slow_write, tmp_path / "spill", max_queue=5, batch_size=5, flush_s=0.01)
    logger.start()
    try:
        lists = [served() for _ in range(30)]
        t0 = time.monotonic()
        for lst in lists:
            logger.log(lst)
        assert time.monotonic() - t0 < 2
        assert logger.stats().spilled > 0
        gate.set()
        assert logger.flush(30)
    finally:
        gate.set()
        logger.stop()
    assert logger.stats().reconciles
    assert rows(settings, "SELECT count(*) FROM served_lists")[0][0] == 30


def test_spill_of_a_dead_process_is_adopted_once(settings, tmp_path):
    import json
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is no longer running
    folder = tmp_path / "spill" / f"{socket.gethostname()}-{dead.pid}"
    folder.mkdir(parents=True)
    lists = [served(), served()]
    (folder / "0001.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lists))
    logger = ListLogger(
        lambda ls: store_served_lists(ls, settings), tmp_path / "spill", flush_s=0.05
    ).start()
    try:
        assert logger.stats().adopted == 2
        assert logger.flush(30)
    finally:
        logger.stop()
    stats = logger.stats()
    assert stats.reconciles and stats.loaded == 2 and stats.accepted == 0
    assert not folder.exists()
    stored = {r[0] for r in rows(settings, "SELECT list_id FROM served_lists")}
    assert stored == {x["list_id"] for x in lists}
