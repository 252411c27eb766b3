"""Train the CTR ranker (DCN-v2) on a point-in-time training frame, under torchrun or not.

    python -m training.ranker --feast --truth data/sim/truth/impressions.parquet --save-model
    python -m training.ranker --feast --start 2026-09-01 --end 2026-09-15 --list-sample 0.3
    python -m training.ranker --frame train.parquet --out-dir runs
    torchrun --standalone --nproc_per_node 2 -m training.ranker --frame train.parquet

`--feast` builds the frame from the feature service (default: ranker_v2, named in
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
With several processes each rank trains on its own shard (DistributedDataParallel averages
the gradients); every rank scores the whole validation split, so all reach the same
early-stopping decision; rank 0 alone writes the report and the model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from features.feast_store import get_store, set_env
from features.frames import build_frame, read_frame, read_frame_info
from features.labels import labels_sql
from governance.db import connect
from training.bundles import RANKER_FEATURE_SERVICE, save_ranker
from training.cli import arg, parse_dataclass
from training.common import autocast, pick_device, run_dir, seed_everything, tb_writer
from training.metrics import ctr_metrics, per_list, roc_auc
from training.ranker_model import DCNv2, FeatureSpec, RankerBundle, RankerConfig, RankerTrain
from training.report import plot_pr_curves, write_report

log = logging.getLogger(__name__)


@dataclass
class RankerTrainArgs:
    frame: str | None = arg(None, "Parquet training frame to train on (from features.frames)")
    feast: str | None = arg(
        None,
        "build the frame from Feast; optional repo path (default: feature_repo/)",
        nargs="?",
        const="",
        metavar="REPO_PATH",
    )
    feature_service: str = arg(
        RANKER_FEATURE_SERVICE, "Feast feature service: the model's train/serve contract"
    )
    start: str | None = arg(None, "label window start, ISO (default: first impression)")
    end: str | None = arg(None, "label window end, ISO (default: last impression)")
    list_sample: float = arg(1.0, "share of request lists kept, chosen by a hash of list_id")
    # Absolute epoch seconds: under a time split every test value lies beyond the training
    # range, so the net would extrapolate on them; their useful part (recency, item age) is
    # already in seconds_since_last_activity and item_age_days.
    exclude: str = arg(
        "last_event_ts_s,item_listed_at_s", "comma list of frame columns not used as features"
    )
    position_bias: bool = arg(False, "learn a per-position logit offset, dropped at inference")
    truth: str | None = arg(
        None, "simulator truth impressions.parquet: adds the oracle AUCs to the report"
    )
    out_dir: str = arg("runs", "folder for the run's report, frame and TensorBoard logs")
    buckets: int = arg(2**15, "hash buckets per sparse feature")
    emb_dim: int = arg(16, "embedding width of each sparse feature")
    cross_layers: int = arg(3, "DCN-v2 cross layers")
    deep: str = arg("256,128", "comma list of the deep tower's layer widths")
    dropout: float = arg(0.1, "dropout in the deep tower")
    lr: float = arg(1e-3, "AdamW learning rate")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    batch_size: int = arg(512, "training batch size per process")
    epochs: int = arg(10, "passes over the training split (early stopping may end sooner)")
    patience: int = arg(2, "epochs without validation AUC gain before stopping")
    max_steps: int = arg(0, "stop after this many optimiser steps; 0 = no cap")
    val_frac: float = arg(0.15, "share of lists (by time) for validation")
    test_frac: float = arg(0.15, "share of lists (latest) for the test report")
    seed: int = arg(0, "random seed")
    device: str = arg("auto", "auto, cpu, cuda or cuda:N")
    tensorboard: bool = arg(True, "write TensorBoard logs under the run folder")
    save_model: bool = arg(False, "put the ranker in the BentoML model store")


# ---------------------------------------------------------------- data


def impression_window(settings=None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, last] clean impression time, end made exclusive by one microsecond."""

    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT min(event_ts), max(event_ts) FROM events "
                "WHERE event_type = 'impression' AND NOT is_bot"
            )
            lo, hi = cur.fetchone()
    finally:
        conn.close()
    if lo is None:
        raise SystemExit("no clean impressions in the database: ingest a simulation first")
    return pd.Timestamp(lo), pd.Timestamp(hi) + pd.Timedelta(microseconds=1)


def frame_from_feast(
    settings=None,
    feature_service: str = RANKER_FEATURE_SERVICE,
    *,
    start=None,
    end=None,
    list_sample: float = 1.0,
    repo_path: str | None = None,
    path: str | Path | None = None,
):
    """The one place that touches Feast: the point-in-time frame of the service, written once
    as Parquet at `path` (a temporary file when None) by the set-based path, with the lineage
    of its labels (window, ingest batch ids) in the file's metadata. Returns (frame, feature
    names, lineage)."""

    if repo_path:
        # Feast is heavy to import (seconds): only code that opens a store pays for it.
        from feast import FeatureStore

        set_env(settings)
        store = FeatureStore(repo_path=repo_path)
    else:
        store = get_store(settings)
    if start is None or end is None:
        lo, hi = impression_window(settings)
        start, end = start or lo, end or hi
    entity_sql = labels_sql(feature_service, start, end)
    if list_sample < 1.0:
        # hashtext is stable for a given server, so a rerun samples the same lists.
        entity_sql = (
            f"SELECT * FROM ({entity_sql}) l WHERE "
            f"(hashtext(l.list_id) & 1023) < {int(round(list_sample * 1024))}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path else Path(tmp) / "frame.parquet"
        info = build_frame(
            store,
            feature_service,
            target,
            entity=entity_sql,
            progress=not os.environ.get("TQDM_DISABLE"),
            extra={"label_window": [str(start), str(end)], "list_sample": list_sample},
        )
        frame = read_frame(target)
    lineage = frame_lineage(info)
    if path is None:
        lineage["frame"] = None  # a temporary file, gone now
    return frame, info.features, lineage


def frame_lineage(info) -> dict:
    """A frame file's lineage as the training report records it."""
    window = info.label_window or info.extra.get("label_window")
    return {
        # The frame's own service, not a default: the model's train/serve contract.
        "feature_service": info.feature_service,
        "label_window": [pd.Timestamp(t) for t in window] if window else None,
        "list_sample": info.extra.get("list_sample", 1.0),
        "batch_ids": info.batch_ids,
        "frame": info.path,
        "frame_rows": info.rows,
    }


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
    frame = read_frame(path)
    log.info("frame %s: read by rank %d of %d (%d rows)", path, rank, world, len(frame))
    info = read_frame_info(path)
    if info is None:
        return frame, None, None
    return frame, info.features, frame_lineage(info)


def time_split(frame: pd.DataFrame, val_frac: float, test_frac: float):
    """Whole lists by their first timestamp: train earliest, then validation, then test."""
    start = frame.groupby("list_id")["event_timestamp"].min().sort_values(kind="mergesort")
    n = len(start)
    n_test, n_val = max(1, int(round(n * test_frac))), max(1, int(round(n * val_frac)))
    parts = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    which = frame["list_id"].map(dict(zip(start.index, parts)))
    out = {k: frame[which == k].reset_index(drop=True) for k in ("train", "val", "test")}
    ranges = {k: [v["event_timestamp"].min(), v["event_timestamp"].max()] for k, v in out.items()}
    return out, ranges


def _dist_info():
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _init_dist(device: torch.device) -> bool:
    _, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world > 1


# ---------------------------------------------------------------- baselines


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame, strength: float = 20.0):
    """Smoothed item CTR from training: (clicks + s*p) / (impressions + s)."""
    prior = float(train["label"].mean())
    g = train.groupby("item_id")["label"].agg(["sum", "count"])
    ctr = (g["sum"] + strength * prior) / (g["count"] + strength)
    return test["item_id"].map(ctr).fillna(prior).to_numpy()


def logreg_scores(spec: FeatureSpec, train: pd.DataFrame, test: pd.DataFrame, seed: int):
    """Logistic regression on the same dense and vector features (ids left out: one-hot of
    hashed ids is what the embeddings are for)."""
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.linear_model import LogisticRegression

    def x(frame):
        enc = spec.encode(frame)
        return torch.cat([enc["dense"], enc["vectors"]], 1).numpy()

    xt = x(train)
    if xt.shape[1] == 0 or train["label"].nunique() < 2:
        return np.full(len(test), float(train["label"].mean()))
    lr = LogisticRegression(max_iter=1000, random_state=seed).fit(xt, train["label"])
    return lr.predict_proba(x(test))[:, 1]


# ---------------------------------------------------------------- training


@torch.no_grad()
def _val_loss(train_mod: RankerTrain, enc, device, batch_size: int = 8192) -> float:
    train_mod.eval()
    total, n = 0.0, len(enc["label"])
    for i in range(0, n, batch_size):
        b = {k: v[i : i + batch_size].to(device) for k, v in enc.items()}
        with autocast(device):
            loss, _ = train_mod(b)
        total += float(loss) * len(b["label"])
    return total / max(n, 1)


def train(
    args: RankerTrainArgs,
    frame: pd.DataFrame | None = None,
    feature_names: list[str] | None = None,
    truth: pd.DataFrame | None = None,
    lineage: dict | None = None,
) -> dict:
    """`lineage` (label window, batch ids) comes with a frame from frame_from_feast."""
    t0 = time.time()
    device = pick_device(args.device)
    distributed = _init_dist(device)
    rank, world = _dist_info()
    try:
        return _train(
            args, frame, feature_names, truth, device, distributed, rank, world, t0, lineage
        )
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def numeric_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Feast hands back nullable integer features as object columns of ints and None; made
    float (NaN) here so they are standardised as numbers rather than hashed as strings."""
    out = frame.copy()
    for c in out.columns:
        if out[c].dtype == object:
            sample = out[c].dropna().head(200)
            if len(sample) and all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                for v in sample
            ):
                out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out


def _train(
    args, frame, feature_names, truth, device, distributed, rank, world, t0, extra_lineage=None
):
    seed_everything(args.seed)
    t_data = time.time()
    folder = run_dir(args.out_dir, "ranker") if rank == 0 else None
    if frame is None:
        frame, names_, lineage_ = load_frame(args, rank, world, distributed, folder)
        feature_names = feature_names or names_
        extra_lineage = extra_lineage or lineage_
    frame = numeric_objects(frame)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    data_seconds = time.time() - t_data
    splits, ranges = time_split(frame, args.val_frac, args.test_frac)
    excluded = {c for c in args.exclude.split(",") if c}
    names = None if feature_names is None else [n for n in feature_names if n not in excluded]
    spec = FeatureSpec.discover(
        splits["train"].drop(columns=list(excluded & set(frame.columns))), args.buckets, names
    )
    enc = {k: spec.encode(v) for k, v in splits.items()}
    cfg = RankerConfig(
        n_sparse=len(spec.sparse),
        n_dense=len(spec.dense),
        vector_dim=sum(spec.vectors.values()),
        buckets=args.buckets,
        emb_dim=args.emb_dim,
        cross_layers=args.cross_layers,
        deep=tuple(int(x) for x in args.deep.split(",") if x),
        dropout=args.dropout,
    )
    model = DCNv2(cfg).to(device)  # same seed on every rank, so the replicas start equal
    train_mod = RankerTrain(model, position_bias=args.position_bias and "position" in frame)
    ddp = (
        torch.nn.parallel.DistributedDataParallel(
            train_mod, device_ids=[device.index] if device.type == "cuda" else None
        )
        if distributed
        else train_mod
    )
    opt = torch.optim.AdamW(train_mod.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    writer = tb_writer(folder, args.tensorboard) if rank == 0 else None

    n = len(splits["train"])
    per_rank = int(np.ceil(n / world))
    steps_per_epoch = max(1, int(np.ceil(per_rank / args.batch_size)))
    best, best_state, bad, step, history, seen = float("inf"), None, 0, 0, [], 0
    train_seconds = 0.0
    for epoch in range(args.epochs):
        # Same permutation on every rank, padded by wrapping so all ranks take equal steps
        # (an uneven last step would leave one rank waiting in all-reduce forever).
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        perm = torch.cat([perm, perm[: per_rank * world - n]])[rank::world]
        ddp.train()
        s = time.time()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"ranker epoch {epoch}",
            leave=False,
            disable=rank != 0 or bool(os.environ.get("TQDM_DISABLE")),
        )
        for i in bar:
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            batch = {k: v[idx].to(device) for k, v in enc["train"].items()}
            with autocast(device):
                loss, _ = ddp(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx) * world
            if writer:
                writer.add_scalar("train/loss", loss.item(), step)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if args.max_steps and step >= args.max_steps:
                break
        train_seconds += time.time() - s
        val = _val_loss(train_mod, enc["val"], device)
        history.append({"epoch": epoch, "val_logloss": val, "train_loss": loss.item()})
        if writer:
            writer.add_scalar("val/logloss", val, epoch)
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        stop = torch.tensor(
            [int(bad >= args.patience or bool(args.max_steps and step >= args.max_steps))]
        )
        if distributed:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item():
            break
    model.load_state_dict(best_state)
    bundle = RankerBundle(model.cpu().eval(), spec)
    throughput = seen / max(train_seconds, 1e-9)
    if rank != 0:
        return {"rank": rank, "world_size": world, "train_samples_per_s": throughput}

    test = splits["test"].copy()
    test["score_model"] = bundle.predict(test)
    test["score_popularity"] = popularity_scores(splits["train"], test)
    test["score_logreg"] = logreg_scores(spec, splits["train"], test, args.seed)
    y = test["label"].to_numpy()
    results = {}
    for name in ("model", "popularity", "logreg"):
        results[name] = {**ctr_metrics(y, test[f"score_{name}"]), **per_list(test, f"score_{name}")}
    if truth is None and args.truth:
        truth = pd.read_parquet(args.truth)
    if truth is not None:
        p = test[["event_id"]].merge(truth[["event_id", "p_click"]], on="event_id", how="left")
        have = p["p_click"].notna().to_numpy()
        results["oracle"] = {
            "auc": roc_auc(y[have], p["p_click"].to_numpy()[have]),
            "events_matched": int(have.sum()),
        }
    plot_pr_curves(
        folder / "pr_curve.png",
        y,
        {k: test[f"score_{k}"].to_numpy() for k in ("model", "popularity", "logreg")},
        "ranker, test split",
    )
    bundle.save(folder / "model")
    batch_ids = (
        sorted(int(b) for b in frame["batch_id"].dropna().unique()) if "batch_id" in frame else []
    )
    lineage = {
        "time_range": ranges,
        "batch_ids": batch_ids,
        "rows": {k: len(v) for k, v in splits.items()},
        "feature_service": args.feature_service,
        **(extra_lineage or {}),
    }
    pos_bias = (
        train_mod.position_bias.weight.detach().squeeze(-1)[1:11].tolist()
        if train_mod.position_bias is not None
        else None
    )
    body = {
        "args": args,
        "feature_service": args.feature_service,
        "world_size": world,
        "device": str(device),
        "features": dataclasses.asdict(spec) | {"mean": None, "std": None},
        "history": history,
        "best_val_logloss": best,
        "test": results,
        "train_samples_per_s": throughput,
        "lineage": lineage,
        "position_bias_logit_pos0_9": pos_bias,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - t0,
    }
    report = write_report(folder, "ranker", body)
    if writer:
        writer.close()
    out = {
        "rank": 0,
        "world_size": world,
        "bundle": bundle,
        "folder": folder,
        "report": report,
        "test": results,
        "lineage": lineage,
        "train_samples_per_s": throughput,
        "history": history,
        "spec": spec,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - t0,
    }
    if args.save_model:
        out["tag"] = save_ranker(bundle, metrics=results, lineage=lineage)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_dataclass(RankerTrainArgs, argv, "python -m training.ranker", __doc__)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not args.frame and args.feast is None:
        raise SystemExit("give --frame PARQUET or --feast [REPO_PATH]")
    res = train(args)
    if res["rank"] == 0:
        print(f"report: {res['report']}")
        if res.get("tag"):
            print(f"model: {res['tag']}  batch_ids: {len(res['lineage']['batch_ids'])}")
        for name, m in res["test"].items():
            print(
                f"  {name:10s} "
                + " ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
            )
    return res


if __name__ == "__main__":
    main()
