"""The served-list logger: a bounded in-memory queue, a writer thread, and a disk spill.

A request only puts its list on a queue (`log`, never blocking). A background thread takes
batches off it, finishes each record (`prepare`: turning feature frames into JSON, scoring a
shadow model: work the response must not wait for) and writes the batch through the governed
path (governance.served_lists). When PostgreSQL cannot be reached the batch is spilled to a
JSON-lines file under `spill_dir`, and the spilled files are replayed, oldest first, once a write
succeeds again. A full queue also spills (from the request thread: one small file append)
instead of blocking or dropping.

Nothing is lost and nothing is doubled: a spilled file is deleted only after the transaction
that stored it committed, and a replay of lists that were in fact stored (a commit whose
acknowledgement was lost) finds them by checksum or list id and counts them as duplicates.
Each process spills into its own folder (`<spill_dir>/<host>-<pid>`), so the service's workers
never replay the same file; a process that finds the folder of a dead one (same host) adopts its
files. `stats()` reconciles: accepted + adopted = loaded + quarantined + duplicate + pending
(queued, being written, or spilled).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class LogStats:
    accepted: int = 0  # lists handed to log()
    adopted: int = 0  # lists found spilled by a process that has since died
    loaded: int = 0
    quarantined: int = 0
    duplicate: int = 0
    spilled: int = 0  # lists that went to disk (outage or full queue), counted once per spill
    replayed: int = 0  # spilled lists later stored (loaded, quarantined or duplicate)
    queued: int = 0  # now in memory
    in_flight: int = 0  # taken off the queue, being written
    on_disk: int = 0  # now in spill files
    write_failures: int = 0
    last_error: str | None = None

    @property
    def pending(self) -> int:
        return self.queued + self.in_flight + self.on_disk

    @property
    def reconciles(self) -> bool:
        return (
            self.accepted + self.adopted
            == self.loaded + self.quarantined + self.duplicate + self.pending
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "pending": self.pending, "reconciles": self.reconciles}


class ProcessWriter:
    """`fn(lists, *args)` run in a child process of its own, one batch at a time.

    Validating and writing a batch (Pandera, then COPY through psycopg2) is Python that holds
    the GIL; in the writer thread it held it away from the requests of the same worker. Here
    the thread only hands the prepared (JSON-ready) batch over and waits on a pipe, which
    releases the GIL. The hand-over is bounded by construction: the thread waits for each
    result before taking the next batch, so at most one batch is in the child. The result (or
    the exception, pickled) comes back to the thread, which counts, spills and replays
    exactly as before, so the lists still reconcile. A child that dies or does not answer
    within `timeout_s` is replaced at the next batch and the batch is spilled (a write that
    did commit is then found as a duplicate by the replay). The child is spawned, not
    forked: the worker has threads, and a fork copies their held locks."""

    def __init__(self, fn: Callable, *args, timeout_s: float = 60.0):
        self.fn, self.args, self.timeout_s = fn, args, timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def start(self) -> ProcessWriter:
        """Start the child now (it imports pandas, Pandera and psycopg2: seconds), so the
        first batch does not wait for it."""
        self._executor().submit(_ready)
        return self

    def __call__(self, lists: list[dict]):
        pool = self._executor()
        try:
            return pool.submit(self.fn, lists, *self.args).result(timeout=self.timeout_s)
        except (BrokenProcessPool, FutureTimeout):
            self.close(wait=False)  # a dead or stuck child: the next batch gets a new one
            raise

    def close(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def _ready() -> bool:
    return True


class ListLogger:
    def __init__(
        self,
        write: Callable[[list[dict]], object],
        spill_dir: Path,
        *,
        prepare: Callable[[dict], dict] | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        flush_s: float = 0.5,
        retry_s: float = 2.0,
    ):
        self.write = write  # lists -> an object with rows_loaded/rows_quarantined/rows_duplicate
        self.prepare = prepare or (lambda r: r)
        self.root = Path(spill_dir)
        self.host = socket.gethostname()
        self.spill_dir = self.root / f"{self.host}-{os.getpid()}"
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size, self.flush_s, self.retry_s = batch_size, flush_s, retry_s
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._stats = LogStats()
        self._adopt()
        self._down_until = 0.0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ request side
    def log(self, record: dict) -> None:
        """Hand a served list over; returns at once."""
        with self._lock:
            self._stats.accepted += 1
        try:
            self._q.put_nowait(record)
            self._idle.clear()
        except queue.Full:
            # Rare by construction (the queue holds minutes of traffic): spill, never block.
            self._spill([self._prepared(record)])

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ListLogger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="list-logger", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (or spill it), then stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is queued or spilled (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = self.stats()
            if s.pending == 0:
                return True
            self._down_until = 0.0  # retry now rather than after the cooldown
            time.sleep(0.05)
        return False

    def stats(self) -> LogStats:
        with self._lock:
            s = LogStats(**asdict(self._stats))
        s.queued = self._q.qsize()
        return s

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                with self._lock:
                    self._stats.in_flight = len(batch)
                self._store([self._prepared(r) for r in batch])
                with self._lock:
                    self._stats.in_flight = 0
            elif self._stop.is_set():
                return
            if self._stats.on_disk and time.monotonic() >= self._down_until:
                self._replay()

    def _take(self) -> list[dict]:
        batch: list[dict] = []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.batch_size:
            timeout = deadline - time.monotonic()
            if timeout <= 0 or (self._stop.is_set() and self._q.empty()):
                break
            try:
                record = self._q.get(timeout=min(timeout, 0.05))
            except queue.Empty:
                continue
            batch.append(record)
            # Counted in flight from the moment it leaves the queue: while a batch gathers
            # (up to flush_s) its lists are neither queued nor written, and `pending` (what
            # flush() waits on) must not miss them.
            with self._lock:
                self._stats.in_flight = len(batch)
        return batch

    def _prepared(self, record: dict) -> dict:
        try:
            return self.prepare(record)
        except Exception:  # a prepare bug must not lose the list: keep what is JSON already
            log.exception("preparing a served list failed; logged without its extras")
            return {k: v for k, v in record.items() if not k.startswith("_")}

    def _store(self, lists: list[dict]) -> bool:
        if time.monotonic() < self._down_until:
            self._spill(lists)
            return False
        try:
            result = self.write(lists)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:
                self._stats.write_failures += 1
                self._stats.last_error = reason
            self._down_until = time.monotonic() + self.retry_s
            log.warning(
                "served lists not stored (%s); spilled to disk, retry in %.1fs",
                reason,
                self.retry_s,
            )
            self._spill(lists)
            return False
        with self._lock:
            self._stats.loaded += int(result.rows_loaded)
            self._stats.quarantined += int(result.rows_quarantined)
            self._stats.duplicate += int(result.rows_duplicate)
            self._stats.last_error = None
        return True

    # ------------------------------------------------------------------ disk
    def _spill(self, lists: list[dict]) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}"
        tmp = self.spill_dir / f".{name}.tmp"
        with open(tmp, "w") as fh:
            for lst in lists:
                fh.write(json.dumps(lst, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self.spill_dir / f"{name}.jsonl")  # atomic: a reader sees all or nothing
        with self._lock:
            self._stats.spilled += len(lists)
            self._stats.on_disk += len(lists)

    def _dead(self, folder: Path) -> bool:
        host, _, pid = folder.name.rpartition("-")
        if host != self.host or not pid.isdigit() or folder == self.spill_dir:
            return False  # another machine's process cannot be checked from here
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _adopt(self) -> None:
        """Move the spill files of dead processes into this one's folder (atomic renames: of
        two live processes adopting at once, each file goes to exactly one)."""
        for folder in [f for f in self.root.iterdir() if f.is_dir() and self._dead(f)]:
            for path in folder.glob("*.jsonl"):
                target = self.spill_dir / path.name
                try:
                    path.rename(target)
                except FileNotFoundError:
                    continue  # another process took it
                with open(target) as fh:
                    n = sum(1 for line in fh if line.strip())
                with self._lock:
                    self._stats.adopted += n
                    self._stats.on_disk += n
            with contextlib.suppress(OSError):
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink()  # a spill that never completed was never counted anywhere
                folder.rmdir()

    def _replay(self) -> None:
        self._adopt()
        for path in sorted(self.spill_dir.glob("*.jsonl")):
            with open(path) as fh:
                lists = [json.loads(line) for line in fh if line.strip()]
            try:
                result = self.write(lists)
            except Exception as exc:
                self._down_until = time.monotonic() + self.retry_s
                with self._lock:
                    self._stats.write_failures += 1
                    self._stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                return
            path.unlink()
            with self._lock:
                self._stats.on_disk -= len(lists)
                self._stats.replayed += len(lists)
                self._stats.loaded += int(result.rows_loaded)
                self._stats.quarantined += int(result.rows_quarantined)
                self._stats.duplicate += int(result.rows_duplicate)
                self._stats.last_error = None
