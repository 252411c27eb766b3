"""The ranker job's two candidates fitted on encoded tensors: the DCN-v2 (AdamW, early stopping
on validation log loss, DistributedDataParallel under torchrun) and the logistic regression it
must beat. `training.ranker` prepares the data, calls these and decides what ships.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from training.common import autocast
from training.ranker_args import RankerTrainArgs
from training.ranker_model import (
    DCNv2,
    FeatureSpec,
    LinearConfig,
    LinearRanker,
    RankerBundle,
    RankerConfig,
    RankerTrain,
)


@dataclass
class RankerData:
    """The frame split by time, the feature spec fitted on the training split, the encoded
    tensors of each split and the lineage the report and the model store keep."""

    splits: dict[str, pd.DataFrame]
    spec: FeatureSpec
    encoded: dict[str, dict[str, torch.Tensor]]
    lineage: dict
    has_position: bool
    data_seconds: float


@dataclass
class DcnFit:
    """The DCN-v2 at its best validation log loss, with its training curve."""

    model: DCNv2
    history: list[dict]
    best_val_logloss: float
    samples_per_s: float
    train_seconds: float
    position_bias: list[float] | None  # learned logit offsets of positions 0..9, if any


def dcn_config(args: RankerTrainArgs, spec: FeatureSpec) -> RankerConfig:
    return RankerConfig(
        n_sparse=len(spec.sparse),
        n_dense=spec.dense_width,
        vector_dim=sum(spec.vectors.values()),
        buckets=args.buckets,
        emb_dim=args.emb_dim,
        cross_layers=args.cross_layers,
        deep=tuple(int(x) for x in args.deep.split(",") if x),
        dropout=args.dropout,
    )


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


def _epoch_order(n: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Same permutation on every rank, padded by wrapping so all ranks take equal steps (an
    uneven last step would leave one rank waiting in all-reduce forever); this rank's share."""
    per_rank = int(np.ceil(n / world))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.cat([perm, perm[: per_rank * world - n]])[rank::world]


def fit_dcn(
    args: RankerTrainArgs,
    data: RankerData,
    device: torch.device,
    dist_ctx: tuple[int, int, bool],
    writer=None,
) -> DcnFit:
    """AdamW on binary cross-entropy, early stopping on validation log loss; the weights of
    the best epoch are kept. Under DDP every rank takes the same number of steps."""
    rank, world, distributed = dist_ctx
    model = DCNv2(dcn_config(args, data.spec)).to(device)  # same seed on every rank
    train_mod = RankerTrain(model, position_bias=args.position_bias and data.has_position)
    ddp = (
        torch.nn.parallel.DistributedDataParallel(
            train_mod, device_ids=[device.index] if device.type == "cuda" else None
        )
        if distributed
        else train_mod
    )
    opt = torch.optim.AdamW(train_mod.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    enc = data.encoded["train"]
    n = len(data.splits["train"])
    steps_per_epoch = max(1, int(np.ceil(int(np.ceil(n / world)) / args.batch_size)))
    best, best_state, bad, step, history, seen, seconds = float("inf"), None, 0, 0, [], 0, 0.0
    for epoch in range(args.epochs):
        order = _epoch_order(n, args.seed + epoch, rank, world)
        ddp.train()
        s = time.time()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"ranker epoch {epoch}",
            leave=False,
            disable=rank != 0 or bool(os.environ.get("TQDM_DISABLE")),
        )
        for i in bar:
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            batch = {k: v[idx].to(device) for k, v in enc.items()}
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
        seconds += time.time() - s
        val = _val_loss(train_mod, data.encoded["val"], device)
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
    if best_state is not None:  # a NaN validation loss never improves: keep the last weights
        model.load_state_dict(best_state)
    pos_bias = (
        train_mod.position_bias.weight.detach().squeeze(-1)[1:11].tolist()
        if train_mod.position_bias is not None
        else None
    )
    return DcnFit(model.cpu().eval(), history, best, seen / max(seconds, 1e-9), seconds, pos_bias)


def fit_logreg(spec: FeatureSpec, train_enc: dict[str, torch.Tensor], seed: int) -> RankerBundle:
    """Logistic regression on the same dense and vector features as the DCN (ids left out:
    one-hot of hashed ids is what the embeddings are for), as a servable RankerBundle."""
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([train_enc["dense"], train_enc["vectors"]], 1).numpy()
    y = train_enc["label"].numpy()
    cfg = LinearConfig(spec.dense_width, sum(spec.vectors.values()))
    if x.shape[1] == 0 or len(np.unique(y)) < 2:
        p = float(np.clip(y.mean() if len(y) else 0.5, 1e-6, 1 - 1e-6))
        model = LinearRanker.from_coefficients(cfg, np.zeros(x.shape[1]), np.log(p / (1 - p)))
    else:
        lr = LogisticRegression(max_iter=1000, random_state=seed).fit(x, y)
        model = LinearRanker.from_coefficients(cfg, lr.coef_[0], lr.intercept_[0])
    return RankerBundle(model, spec)
