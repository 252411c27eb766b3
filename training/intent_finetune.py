"""The intent job's neural candidate and its scoring: one MiniLM fine-tune with two heads
(`intent_model.IntentNet`, loss `intent_model.IntentLoss`), AdamW with linear warm-up and
decay, gradient clipping, early stopping on the validation selection score.

`score` is how every candidate is judged: intent macro-F1, averaged with category macro-F1
where the labels have categories.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from training.common import autocast, minilm_path, seed_everything
from training.intent_data import encode_labels
from training.intent_model import (
    IGNORE,
    IntentLoss,
    IntentNet,
    IntentPredictor,
    load_encoder,
    tokenize,
)
from training.metrics import classification_metrics


def score(pred: IntentPredictor, df: pd.DataFrame) -> dict:
    ip, cp = pred.predict_proba(df["query"].tolist())
    y_i, y_c = encode_labels(df, pred.intents, pred.categories)
    res = {
        "intent": classification_metrics(
            [pred.intents[i] if i >= 0 else "?" for i in y_i],
            [pred.intents[i] for i in ip.argmax(1)],
            pred.intents,
        )
    }
    keep = y_c != IGNORE
    if pred.categories and keep.any():
        res["category"] = classification_metrics(
            [pred.categories[i] for i in y_c[keep]],
            [pred.categories[i] for i in cp[keep].argmax(1)],
            pred.categories,
        )
    parts = [res["intent"]["macro_f1"]] + (
        [res["category"]["macro_f1"]] if "category" in res else []
    )
    res["selection_score"] = float(np.mean(parts))
    return res


@dataclass(frozen=True)
class StepPlan:
    steps_per_epoch: int
    total: int  # optimiser steps
    eval_every: int  # steps between validations


def plan_steps(n_train: int, args) -> StepPlan:
    """A schedule in steps, not epochs: a few hundred queries make a handful of batches an
    epoch, and an epoch-based schedule then stops after ~25 updates, near chance on 30+
    classes. At least --min-steps (epochs repeat until then), at most --max-steps; about ten
    validations whatever the length, and never more than one an epoch."""
    per_epoch = max(1, int(np.ceil(n_train / args.batch_size)))
    total = max(per_epoch * args.epochs, args.min_steps)
    if args.max_steps:
        total = min(total, args.max_steps)
    every = args.eval_every or max(per_epoch, total // 10)
    return StepPlan(per_epoch, total, max(1, min(every, total)))


def param_groups(net: IntentNet, lr: float, weight_decay: float, layer_decay: float) -> list:
    """AdamW groups with layer-wise learning-rate decay: the heads train at `lr`, encoder
    layer i of L at lr * layer_decay ** (L - i), the embeddings at lr * layer_decay ** (L + 1),
    so the pretrained lower layers move least (as in ULMFiT and ELECTRA's fine-tuning).
    Biases and LayerNorm weights (1-d) get no weight decay."""
    n_layers = net.encoder.config.num_hidden_layers
    groups: dict[tuple[float, float], list] = {}
    for name, p in net.named_parameters():
        depth = 0
        if name.startswith("encoder."):
            layer = re.search(r"\.layer\.(\d+)\.", name)
            if layer:
                depth = n_layers - int(layer.group(1))
            elif ".embeddings." in name:
                depth = n_layers + 1
        key = (lr * layer_decay**depth, weight_decay if p.ndim >= 2 else 0.0)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def finetune(
    args,
    lr: float,
    train: pd.DataFrame,
    val: pd.DataFrame,
    intents,
    categories,
    device,
    writer,
    tag: str,
):
    """One fine-tune at one learning rate; returns (net, tokenizer, best val score, history).
    `args` is the job's IntentTrainArgs (batch size, epochs, schedule, patience)."""
    gen = seed_everything(args.seed)
    encoder, tokenizer = load_encoder(minilm_path())
    net = IntentNet(encoder, len(intents), len(categories)).to(device)
    loss_fn = IntentLoss(net, args.label_smoothing, args.category_weight)
    y_i, y_c = encode_labels(train, intents, categories)
    texts = train["query"].tolist()
    plan = plan_steps(len(texts), args)
    total, eval_every = plan.total, plan.eval_every
    opt = torch.optim.AdamW(param_groups(net, lr, args.weight_decay, args.layer_decay), lr=lr)
    warm = max(1, int(args.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    best, best_state, bad, history, step = -1.0, None, 0, [], 0
    bar = tqdm(total=total, desc=f"intent {tag}", leave=False)
    while step < total and bad < args.patience:
        order = torch.randperm(len(texts), generator=gen).tolist()
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            batch = {
                k: v.to(device)
                for k, v in tokenize(tokenizer, [texts[i] for i in idx], args.max_len).items()
            }
            net.train()
            with autocast(device):
                loss, _, _ = loss_fn(
                    **batch,
                    intent=torch.as_tensor(y_i[idx], device=device),
                    category=torch.as_tensor(y_c[idx], device=device),
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if writer:
                writer.add_scalar(f"{tag}/train_loss", loss.item(), step)
            if step % eval_every == 0 or step == total:
                val_score = score(
                    IntentPredictor("finetune", intents, categories, args.max_len, net, tokenizer),
                    val,
                )["selection_score"]
                history.append(
                    {
                        "step": step,
                        "val_selection_score": val_score,
                        "train_loss": float(loss.item()),
                    }
                )
                if writer:
                    writer.add_scalar(f"{tag}/val_selection_score", val_score, step)
                if val_score > best:
                    best, bad = val_score, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    bad += 1
            if step >= total or bad >= args.patience:
                break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return net, tokenizer, best, history
