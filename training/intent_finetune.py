"""The intent job's neural candidate and its scoring: one MiniLM fine-tune with two heads
(`intent_model.IntentNet`, loss `intent_model.IntentLoss`), AdamW with linear warm-up and
decay, gradient clipping, early stopping on the validation selection score.

`score` is how every candidate is judged: intent macro-F1, averaged with category macro-F1
where the labels have categories.
"""

from __future__ import annotations

import copy

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
    steps_per_epoch = max(1, int(np.ceil(len(texts) / args.batch_size)))
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in net.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warm = max(1, int(args.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    eval_every = args.eval_every or steps_per_epoch
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
