"""Train the CTR ranker (DCN-v2) on a point-in-time training frame, under torchrun or not.

    python -m training.ranker --feast --truth data/sim/truth/impressions.parquet --save-model
    python -m training.ranker --feast --start 2026-09-01 --end 2026-09-15 --list-sample 0.3
    python -m training.ranker --frame train.parquet --out-dir runs
    torchrun --standalone --nproc_per_node 2 -m training.ranker --frame train.parquet

`--feast` builds the frame from the feature service (default: ranker_v3, named in
training.bundles) over the clean impressions in the database (DATABASE_URL / CARTWISE_*
settings; default window: all of them), through the Feast registry and offline store: labels in
PostgreSQL, features point in time by the set-based path (features.frames: bounded memory,
chunks streamed to Parquet). The frame is written once, to frame.parquet in the run folder, with
its feature service, label window and ingest batch ids in its metadata; `--frame` on that file
trains again without querying. Under torchrun rank 0 builds it and the other ranks read the
file. `--list-sample` keeps that share of request lists (whole lists, chosen by a hash of
list_id) to bound cost.

Split by time: lists are ordered by their first timestamp; the earliest go to training, the
next to validation (early stopping), the latest to test (read once, for the report). Dense
feature statistics come from the training split only and are saved with the model.
Position is never a feature (serving ranks candidates before they have one). With
`--position-bias` training also adds a learned per-position logit offset that absorbs the
examination effect in the logged clicks and is dropped at inference; it is off by default
because on logged test clicks (which carry that effect) it measured lower AUC.
Ship gate: logistic regression on the same dense and vector features is trained beside the
DCN-v2 (both fitted in training.ranker_fit) and the DCN ships only if its validation AUC
beats the regression's (by more than `--min-gain`) with confidence: the 90% one-sided lower
bound of the gain over 200 paired resamples of whole validation lists must clear it too, so a
win within the noise of a small validation split ships the simpler model. Otherwise the
regression ships, as a RankerBundle serving loads the same way.
With `--truth` the report also gives the simulator's oracles: p_click (with the examination
term of the slot) and p_click_position_free (without it, the ceiling of a ranker that never
sees the slot), each model's AUC as a fraction of the latter, and paired list-bootstrap
intervals (training.ranker_eval). training.ranker_ceiling measures what limits it.
With several processes each rank trains on its own shard (DistributedDataParallel averages
the gradients); every rank scores the whole validation split, so all reach the same
early-stopping decision; rank 0 alone writes the report and the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from features.drift import profile
from features.frames import read_frame, read_frame_info
from training.bundles import save_ranker
from training.cli import parse_dataclass
from training.common import pick_device, run_dir, seed_everything, tb_writer
from training.ranker_args import RankerTrainArgs
from training.ranker_data import (
    frame_from_feast,
    frame_lineage,
    numeric_objects,
    time_split,
)
from training.ranker_eval import (
    DCN,
    LOGREG,
    ShipGate,
    evaluate,
    popularity_scores,
    ship_gate,
)
from training.ranker_fit import DcnFit, RankerData, fit_dcn, fit_logreg
from training.ranker_model import (
    FeatureSpec,
    RankerBundle,
)
from training.report import plot_pr_curves, write_report

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data

# Frame columns the job never reads (never features, and neither the split, the gate nor the
# report use them): left on disk, since per-row strings are most of a frame's memory.
UNREAD_COLUMNS = ("session_id", "query")


def load_frame(args, rank: int, world: int, distributed: bool, folder: Path | None):
    """The training frame for this rank: (frame, feature names or None, lineage or None).

    `--feast`: rank 0 builds the frame once into the run folder (frame.parquet) and
    broadcasts its path; the other ranks read that file instead of querying again.
    `--frame`: every rank reads the file; a cartwise frame brings its feature names and
    lineage from its metadata."""
    if args.feast is None:
        path = args.frame
    else:
        path = str(folder / "frame.parquet") if rank == 0 else None
        if rank == 0:
            frame, names, lineage = frame_from_feast(
                settings=None,
                feature_service=args.feature_service,
                start=args.start,
                end=args.end,
                list_sample=args.list_sample,
                repo_path=args.feast or None,
                path=path,
            )
            log.info("frame %s: built by rank 0 (%d rows)", path, len(frame))
        if distributed:
            box = [path]
            dist.broadcast_object_list(box, src=0)
            path = box[0]
        if rank == 0:
            return frame, names, lineage
    # The system allocator hands a freed column back to the OS (mimalloc, Arrow's default,
    # keeps it), so dropping the whole frame after the time split lowers the job's peak.
    pa.set_memory_pool(pa.system_memory_pool())
    schema = pq.read_schema(path)
    columns = [c for c in schema.names if c not in UNREAD_COLUMNS]
    # Repeated strings (ids, categories) as categoricals: hashed the same (hash_ids reads
    # the values), a fraction of the memory. list_id and event_id stay strings: nearly one
    # value per row, and the time split orders tied lists by their id.
    categories = [
        c
        for c in columns
        if pa.types.is_string(schema.field(c).type) and c not in ("list_id", "event_id")
    ]
    frame = read_frame(path, columns=columns, categories=categories)
    log.info("frame %s: read by rank %d of %d (%d rows)", path, rank, world, len(frame))
    info = read_frame_info(path)
    if info is None:
        return frame, None, None
    return frame, info.features, frame_lineage(info)


def _dist_info():
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _init_dist(device: torch.device) -> bool:
    _, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world > 1


# ---------------------------------------------------------------- steps


@dataclass
class RankerResult:
    """What one rank of the ranker job returns. On rank 0: the shipped bundle (the DCN-v2
    or, when it lost the ship gate, logistic regression), both candidates, the gate, the test
    metrics with their intervals, the report and, with --save-model, the model's tag."""

    rank: int
    world_size: int
    train_samples_per_s: float
    bundle: RankerBundle | None = None
    candidates: dict[str, RankerBundle] = field(default_factory=dict)
    gate: ShipGate | None = None
    test: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    spec: FeatureSpec | None = None
    # The training split's features.drift profile per dense feature: the drift reference the
    # service reads next to the weights (save_ranker(..., profiles=)).
    profiles: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    folder: Path | None = None
    report: Path | None = None
    tag: str | None = None
    data_seconds: float = 0.0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def shipped(self) -> str | None:
        return self.gate.shipped if self.gate else None


def prepare_data(
    args: RankerTrainArgs,
    frame: pd.DataFrame | None,
    feature_names: list[str] | None,
    lineage: dict | None,
    dist_ctx: tuple[int, int, bool],
    folder: Path | None,
) -> RankerData:
    """Frame (given, or loaded per --frame/--feast) -> time split -> feature spec fitted on
    the training split (excluded columns dropped) -> encoded tensors."""
    rank, world, distributed = dist_ctx
    t_data = time.time()
    owned = frame is None  # a frame this job read itself is converted in place
    if owned:
        frame, names_, lineage_ = load_frame(args, rank, world, distributed, folder)
        feature_names = feature_names or names_
        lineage = lineage or lineage_
    frame = numeric_objects(frame, copy=not owned)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    data_seconds = time.time() - t_data
    columns, has_position = set(frame.columns), "position" in frame
    batch_ids = (
        sorted(int(b) for b in frame["batch_id"].dropna().unique()) if "batch_id" in frame else []
    )
    # A frame this job read is emptied into its splits column by column, and dropped before
    # the feature spec and the encoding allocate theirs: the peak is about one frame, not three.
    splits, ranges = time_split(frame, args.val_frac, args.test_frac, consume=owned)
    del frame
    release_free_memory()
    excluded = {c for c in args.exclude.split(",") if c}
    names = None if feature_names is None else [n for n in feature_names if n not in excluded]
    spec = FeatureSpec.discover(
        splits["train"].drop(columns=list(excluded & columns)), args.buckets, names
    )
    full_lineage = {
        "time_range": ranges,
        "batch_ids": batch_ids,
        "rows": {k: len(v) for k, v in splits.items()},
        "feature_service": args.feature_service,
        **(lineage or {}),
    }
    return RankerData(
        splits,
        spec,
        {k: encode_in_chunks(spec, v) for k, v in splits.items()},
        full_lineage,
        has_position,
        data_seconds,
    )


def release_free_memory() -> None:
    """glibc keeps freed small blocks for reuse; malloc_trim gives them back to the OS so the
    next steps' allocations do not stack on top of a frame already dropped."""
    with contextlib.suppress(OSError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def encode_in_chunks(
    spec: FeatureSpec, frame: pd.DataFrame, rows: int = 100_000
) -> dict[str, torch.Tensor]:
    """spec.encode over slices of `rows` rows written into tensors allocated once: encoding is
    row by row, so the result is the same, while its float64 temporaries stay the size of a
    slice rather than of the split (they were the training job's peak)."""
    first = spec.encode(frame.iloc[:rows])
    if len(frame) <= rows:
        return first
    out = {k: torch.empty((len(frame), *v.shape[1:]), dtype=v.dtype) for k, v in first.items()}
    for start in range(0, len(frame), rows):
        part = first if start == 0 else spec.encode(frame.iloc[start : start + rows])
        for k, v in part.items():
            out[k][start : start + len(v)] = v
    return out


def load_truth(args: RankerTrainArgs, truth: pd.DataFrame | None) -> pd.DataFrame | None:
    if truth is None and args.truth:
        truth = pd.read_parquet(args.truth)
    return truth


def write_outputs(
    args: RankerTrainArgs,
    res: RankerResult,
    fit: DcnFit,
    test: pd.DataFrame,
    scores: dict[str, np.ndarray],
    device: torch.device,
    t0: float,
) -> Path:
    """PR curves, the shipped model's files and report.json in the run folder."""
    plot_pr_curves(res.folder / "pr_curve.png", test["label"].to_numpy(), scores, "ranker, test")
    res.bundle.save(res.folder / "model")
    body = {
        "args": args,
        # The frame's own service (a --frame file names it), not the argument's default.
        "feature_service": res.lineage.get("feature_service", args.feature_service),
        "world_size": res.world_size,
        "device": str(device),
        "features": dataclasses.asdict(res.spec) | {"mean": None, "std": None},
        "history": res.history,
        "best_val_logloss": fit.best_val_logloss,
        "ship_gate": res.gate.asdict(),
        "shipped": res.shipped,
        "test": res.test,
        "intervals": res.intervals,
        "train_samples_per_s": res.train_samples_per_s,
        "lineage": res.lineage,
        "position_bias_logit_pos0_9": fit.position_bias,
        "data_seconds": res.data_seconds,
        "train_seconds": res.train_seconds,
        "wall_seconds": time.time() - t0,
    }
    return write_report(res.folder, "ranker", body)


def train(
    args: RankerTrainArgs,
    frame: pd.DataFrame | None = None,
    feature_names: list[str] | None = None,
    truth: pd.DataFrame | None = None,
    lineage: dict | None = None,
) -> RankerResult:
    """Train the DCN-v2 and the logistic-regression baseline, ship the DCN only if it beats
    the baseline on validation AUC, score both on test. `lineage` (label window, batch ids)
    comes with a frame from frame_from_feast."""
    t0 = time.time()
    device = pick_device(args.device)
    distributed = _init_dist(device)
    rank, world = _dist_info()
    dist_ctx = (rank, world, distributed)
    try:
        seed_everything(args.seed)
        folder = run_dir(args.out_dir, "ranker") if rank == 0 else None
        data = prepare_data(args, frame, feature_names, lineage, dist_ctx, folder)
        writer = tb_writer(folder, args.tensorboard) if rank == 0 else None
        fit = fit_dcn(args, data, device, dist_ctx, writer)
        if writer:
            writer.close()
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if rank != 0:
        return RankerResult(rank, world, fit.samples_per_s)

    candidates = {
        DCN: RankerBundle(fit.model, data.spec),
        LOGREG: fit_logreg(data.spec, data.encoded["train"], args.seed),
    }
    gate = ship_gate(data.splits["val"], candidates, args.min_gain)
    log.info("ship gate: %s", gate.reason())
    test = data.splits["test"]
    scores = {
        "model": candidates[DCN].predict(test),
        "popularity": popularity_scores(data.splits["train"], test),
        LOGREG: candidates[LOGREG].predict(test),
    }
    ev = evaluate(test, scores, load_truth(args, truth), n_boot=args.n_boot, seed=args.seed)
    res = RankerResult(
        rank=0,
        world_size=world,
        train_samples_per_s=fit.samples_per_s,
        bundle=candidates[gate.shipped],
        candidates=candidates,
        gate=gate,
        test=ev.metrics,
        intervals=ev.intervals,
        lineage=data.lineage,
        spec=data.spec,
        profiles=profile(data.splits["train"], list(data.spec.dense)),
        history=fit.history,
        folder=folder,
        data_seconds=data.data_seconds,
        train_seconds=fit.train_seconds,
    )
    res.report = write_outputs(args, res, fit, test, scores, device, t0)
    res.wall_seconds = time.time() - t0
    if args.save_model:
        metrics = {**res.test, "ship_gate": gate.asdict()}
        res.tag = save_ranker(
            res.bundle, metrics=metrics, lineage=res.lineage, profiles=res.profiles
        )
    return res


def main(argv: list[str] | None = None) -> RankerResult:
    args = parse_dataclass(RankerTrainArgs, argv, "python -m training.ranker", __doc__)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not args.frame and args.feast is None:
        raise SystemExit("give --frame PARQUET or --feast [REPO_PATH]")
    res = train(args)
    if res.rank == 0:
        print(f"report: {res.report}")
        print(res.gate.reason())
        if res.tag:
            print(f"model: {res.tag} ({res.shipped})  batch_ids: {len(res.lineage['batch_ids'])}")
        for name, m in res.test.items():
            print(
                f"  {name:20s} "
                + " ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
            )
        for name, m in res.intervals.items():
            if isinstance(m, dict):
                print(f"  {name:20s} " + "  ".join(f"{k} {_iv(v)}" for k, v in m.items()))
    return res


def _iv(d: dict) -> str:
    return f"{d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]"


if __name__ == "__main__":
    main()
