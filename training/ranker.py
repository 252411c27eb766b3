"""Train the CTR ranker (DCN-v2) on a point-in-time training frame, under torchrun or not.

    python -m training.ranker --frame train.parquet --out-dir runs
    torchrun --standalone --nproc_per_node 2 -m training.ranker --frame train.parquet
    python -m training.ranker --feast feature_repo --start 2024-01-01 --end 2024-02-01 \
        --truth data/sim/truth/impressions.parquet

Split by time: lists are ordered by their first timestamp; the earliest go to training, the
next to validation (early stopping), the latest to test (read once, for the report). Dense
feature statistics come from the training split only and are saved with the model.
With several processes each rank trains on its own shard (DistributedDataParallel averages
the gradients); every rank scores the whole validation split, so all reach the same
early-stopping decision; rank 0 alone writes the report and the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from training.common import autocast, pick_device, run_dir, seed_everything, tb_writer
from training.metrics import ctr_metrics, per_list, roc_auc
from training.ranker_model import DCNv2, FeatureSpec, RankerBundle, RankerConfig, RankerTrain
from training.report import plot_pr_curves, write_report

FEATURE_SERVICE = "ranker_v1"
MODEL_NAME = "cartwise-ranker"


@dataclass
class RankerTrainArgs:
    frame: str | None = None          # parquet with the training frame
    feast: str | None = None          # or: Feast repo path, frame built from FEATURE_SERVICE
    feature_service: str = FEATURE_SERVICE
    start: str | None = None          # label window for --feast (ISO dates)
    end: str | None = None
    truth: str | None = None          # simulator's impressions.parquet (event_id, p_click)
    out_dir: str = "runs"
    buckets: int = 2**15
    emb_dim: int = 16
    cross_layers: int = 3
    deep: str = "256,128"
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 512
    epochs: int = 10
    patience: int = 2
    max_steps: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0
    device: str = "auto"
    tensorboard: bool = True
    save_model: bool = False


# ---------------------------------------------------------------- data

def frame_from_feast(repo_path: str, feature_service: str = FEATURE_SERVICE, **kwargs):
    """The one place that touches Feast: the point-in-time frame and its feature names."""
    from feast import FeatureStore
    from features.training_set import build_training_set

    store = FeatureStore(repo_path=repo_path)
    frame = build_training_set(store, feature_service, **kwargs)
    service = store.get_feature_service(feature_service)
    names = [f.name for proj in service.feature_view_projections for f in proj.features]
    return frame, names


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
        b = {k: v[i:i + batch_size].to(device) for k, v in enc.items()}
        with autocast(device):
            loss, _ = train_mod(b)
        total += float(loss) * len(b["label"])
    return total / max(n, 1)


def train(args: RankerTrainArgs, frame: pd.DataFrame | None = None,
          feature_names: list[str] | None = None, truth: pd.DataFrame | None = None) -> dict:
    t0 = time.time()
    device = pick_device(args.device)
    distributed = _init_dist(device)
    rank, world = _dist_info()
    try:
        return _train(args, frame, feature_names, truth, device, distributed, rank, world, t0)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(args, frame, feature_names, truth, device, distributed, rank, world, t0):
    seed_everything(args.seed)
    if frame is None:
        if args.feast:
            frame, feature_names = frame_from_feast(args.feast, args.feature_service,
                                                    start=args.start, end=args.end)
        else:
            frame = pd.read_parquet(args.frame)
    frame = frame.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    splits, ranges = time_split(frame, args.val_frac, args.test_frac)
    spec = FeatureSpec.discover(splits["train"], args.buckets, feature_names)
    enc = {k: spec.encode(v) for k, v in splits.items()}
    cfg = RankerConfig(n_sparse=len(spec.sparse), n_dense=len(spec.dense),
                       vector_dim=sum(spec.vectors.values()), buckets=args.buckets,
                       emb_dim=args.emb_dim, cross_layers=args.cross_layers,
                       deep=tuple(int(x) for x in args.deep.split(",") if x),
                       dropout=args.dropout)
    model = DCNv2(cfg).to(device)  # same seed on every rank, so the replicas start equal
    train_mod = RankerTrain(model)
    ddp = (torch.nn.parallel.DistributedDataParallel(
        train_mod, device_ids=[device.index] if device.type == "cuda" else None)
        if distributed else train_mod)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    folder = run_dir(args.out_dir, "ranker") if rank == 0 else None
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
        bar = tqdm(range(steps_per_epoch), desc=f"ranker epoch {epoch}", leave=False,
                   disable=rank != 0 or bool(os.environ.get("TQDM_DISABLE")))
        for i in bar:
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
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
        stop = torch.tensor([int(bad >= args.patience or
                                 bool(args.max_steps and step >= args.max_steps))])
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
        results[name] = {**ctr_metrics(y, test[f"score_{name}"]),
                         **per_list(test, f"score_{name}")}
    if truth is None and args.truth:
        truth = pd.read_parquet(args.truth)
    if truth is not None:
        p = test[["event_id"]].merge(truth[["event_id", "p_click"]], on="event_id", how="left")
        have = p["p_click"].notna().to_numpy()
        results["oracle"] = {"auc": roc_auc(y[have], p["p_click"].to_numpy()[have]),
                             "events_matched": int(have.sum())}
    plot_pr_curves(folder / "pr_curve.png", y,
                   {k: test[f"score_{k}"].to_numpy() for k in ("model", "popularity", "logreg")},
                   "ranker, test split")
    bundle.save(folder / "model")
    batch_ids = sorted(int(b) for b in frame["batch_id"].dropna().unique()) \
        if "batch_id" in frame else []
    lineage = {"time_range": ranges, "batch_ids": batch_ids,
               "rows": {k: len(v) for k, v in splits.items()},
               "feature_service": args.feature_service}
    body = {"args": args, "feature_service": args.feature_service, "world_size": world,
            "device": str(device), "features": dataclasses.asdict(spec) | {"mean": None,
                                                                           "std": None},
            "history": history, "best_val_logloss": best, "test": results,
            "train_samples_per_s": throughput, "lineage": lineage,
            "wall_seconds": time.time() - t0}
    report = write_report(folder, "ranker", body)
    if writer:
        writer.close()
    out = {"rank": 0, "world_size": world, "bundle": bundle, "folder": folder,
           "report": report, "test": results, "lineage": lineage,
           "train_samples_per_s": throughput, "history": history}
    if args.save_model:
        from training.store import save_ranker

        out["tag"] = save_ranker(bundle, metrics=results, lineage=lineage)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ranker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(RankerTrainArgs):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            typ = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=f.default)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = RankerTrainArgs(**vars(_parser().parse_args(argv)))
    if not (args.frame or args.feast):
        raise SystemExit("give --frame PARQUET or --feast REPO_PATH")
    res = train(args)
    if res["rank"] == 0:
        print(f"report: {res['report']}")
        for name, m in res["test"].items():
            print(f"  {name:10s} " + " ".join(f"{k}={v:.4f}" for k, v in m.items()
                                               if isinstance(v, float)))
    return res


if __name__ == "__main__":
    main()
