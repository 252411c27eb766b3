"""Train the query-intent model and ship whichever candidate wins on validation.

    python -m training.intent --out runs                         # labelled_queries via settings
    python -m training.intent --csv shop.csv --out runs          # query,label[,category]
    python -m training.intent --weak-labels --lr-grid 3e-5,1e-4  # add weak labels, tune lr

Candidates, all on the same query-disjoint split: TF-IDF + logistic regression, logistic
regression on frozen MiniLM embeddings, the MiniLM fine-tune (two heads, early stopping on
validation), and the fine-tune/TF-IDF probability average. The one with the best validation
score ships; the test split is read once, for the report. Weak labels only ever go into the
training split, so validation and test stay human-labelled, and they are admitted only when
they raise the winner's labelled validation macro-F1: with --weak-labels every candidate is
trained with and without them and the report gives both.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from governance.settings import get_settings
from training.bundles import INTENT_FEATURE_SERVICE, save_intent
from training.cli import arg, parse_dataclass
from training.common import autocast, minilm_path, pick_device, run_dir, seed_everything, tb_writer
from training.intent_data import (
    SPLIT_SEED,
    TEST_FRAC,
    VAL_FRAC,
    encode_labels,
    fit_sklearn,
    load_csv,
    load_labelled,
    split_queries,
)
from training.intent_model import (
    IGNORE,
    IntentLoss,
    IntentNet,
    IntentPredictor,
    embed,
    load_encoder,
    tokenize,
)
from training.metrics import classification_metrics
from training.perturb import robustness
from training.report import plot_confusion, write_report
from training.weak_labels import rule_counts, weak_labels


@dataclass
class IntentTrainArgs:
    out_dir: str = arg("runs", "folder for the run's report and TensorBoard logs")
    csv: str | None = arg(None, "labelled queries CSV (query,intent,category) instead of the DB")
    weak_labels: bool = arg(False, "try weak labels from search sessions (kept only if they help)")
    max_len: int = arg(32, "tokens per query")
    batch_size: int = arg(32, "fine-tune batch size")
    epochs: int = arg(4, "fine-tune epochs")
    lr_grid: tuple[float, ...] = arg((5e-5,), "comma list of fine-tune learning rates to try")
    weight_decay: float = arg(0.01, "AdamW weight decay")
    warmup_frac: float = arg(0.1, "share of steps with linear learning-rate warm-up")
    label_smoothing: float = arg(0.1, "label smoothing of the intent loss")
    category_weight: float = arg(1.0, "weight of the category head's loss")
    patience: int = arg(2, "evaluations without improvement before stopping")
    eval_every: int = arg(0, "steps between validations; 0 = once per epoch")
    max_steps: int = arg(0, "stop after this many optimiser steps; 0 = no cap")
    grad_clip: float = arg(1.0, "gradient norm clip")
    val_frac: float = arg(VAL_FRAC, "share of queries for validation (model selection)")
    test_frac: float = arg(TEST_FRAC, "share of queries for the test report")
    seed: int = arg(SPLIT_SEED, "random seed")
    device: str = arg("auto", "auto, cpu, cuda or cuda:N")
    tensorboard: bool = arg(True, "write TensorBoard logs under the run folder")
    save_model: bool = arg(False, "put the validation winner in the BentoML model store")
    candidates: tuple[str, ...] = arg(
        ("tfidf_lr", "embed_lr", "finetune", "ensemble"),
        "comma list of models to train and compare",
    )


# ---------------------------------------------------------------- candidates


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
    args: IntentTrainArgs,
    lr: float,
    train: pd.DataFrame,
    val: pd.DataFrame,
    intents,
    categories,
    device,
    writer,
    tag: str,
):
    """One fine-tune at one learning rate; returns (net, tokenizer, best val score, history)."""
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


@dataclass
class IntentSplit:
    """The labelled queries split by query text; validation and test stay human-labelled."""

    data: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    intents: list[str]


@dataclass
class Trial:
    """Every candidate trained on one training set (labelled only, or with weak labels),
    scored on the labelled validation and test splits; `winner` is the validation winner."""

    name: str
    train_rows: int
    weak_rows: int
    categories: list[str]
    candidates: dict[str, IntentPredictor]
    validation: dict[str, dict]
    test: dict[str, dict]
    winner: str
    fit_seconds: dict[str, float]
    tuning: list[dict]

    @property
    def val_macro_f1(self) -> float:
        """Labelled validation intent macro-F1 of this trial's winner."""
        return float(self.validation[self.winner]["intent"]["macro_f1"])

    def summary(self) -> dict:
        return {
            "winner": self.winner,
            "train_rows": self.train_rows,
            "weak_rows": self.weak_rows,
            "val_intent_macro_f1": self.val_macro_f1,
            "test_intent_macro_f1": self.test[self.winner]["intent"]["macro_f1"],
            "val_intent_macro_f1_by_candidate": {
                k: v["intent"]["macro_f1"] for k, v in self.validation.items()
            },
        }


@dataclass
class WeakLabelDecision:
    """Weak labels are admitted only when they raise the labelled validation macro-F1 of the
    winner; both trials are kept for the report."""

    admitted: bool
    without: Trial
    with_weak: Trial
    rules: dict[str, int]

    def asdict(self) -> dict:
        return {
            "admitted": self.admitted,
            "rule": "admitted only if the winner's labelled validation intent macro-F1 rises",
            "without": self.without.summary(),
            "with": self.with_weak.summary(),
            "val_macro_f1_gain": self.with_weak.val_macro_f1 - self.without.val_macro_f1,
            "rules": self.rules,
        }


@dataclass
class IntentResult:
    """The shipped predictor (the validation winner of the admitted trial), every candidate
    of that trial, their validation and test scores, robustness, report and tag."""

    predictor: IntentPredictor
    winner: str
    candidates: dict[str, IntentPredictor]
    validation: dict[str, dict]
    test: dict[str, dict]
    robustness: list
    lineage: dict
    folder: Path
    report: Path
    weak: WeakLabelDecision | None = None
    tag: str | None = None


def load_data(args: IntentTrainArgs, data: pd.DataFrame | None, settings) -> pd.DataFrame:
    if data is None:
        data = load_csv(args.csv) if args.csv else load_labelled(settings)
    return data.assign(category=data["category"].where(data["category"].notna(), None))


def make_split(args: IntentTrainArgs, data: pd.DataFrame) -> IntentSplit:
    train_df, val_df, test_df = split_queries(data, args.val_frac, args.test_frac, args.seed)
    return IntentSplit(data, train_df, val_df, test_df, sorted(data["intent"].unique().tolist()))


def usable_weak(weak: pd.DataFrame, split: IntentSplit) -> pd.DataFrame:
    """Weak rows that may join training: never a query held out for evaluation (its answer
    would leak), never an intent the labelled data does not have."""
    held = set(split.val["query"]) | set(split.test["query"])
    keep = ~weak["query"].isin(held) & weak["intent"].isin(split.intents)
    return weak[keep].reset_index(drop=True)


def fit_candidates(
    args: IntentTrainArgs,
    train_df: pd.DataFrame,
    split: IntentSplit,
    categories: list[str],
    device,
    writer,
    tag: str,
) -> tuple[dict[str, IntentPredictor], dict[str, float], list[dict]]:
    """(predictors by candidate name, fit seconds, fine-tune learning-rate tuning)."""
    intents = split.intents
    y_i, y_c = encode_labels(train_df, intents, categories)
    texts = train_df["query"].tolist()
    val = (split.val["query"].tolist(), encode_labels(split.val, intents, categories)[0])
    preds: dict[str, IntentPredictor] = {}
    timings, tuning = {}, []
    if "tfidf_lr" in args.candidates or "ensemble" in args.candidates:
        s = time.time()
        preds["tfidf_lr"] = IntentPredictor(
            "tfidf_lr",
            intents,
            categories,
            args.max_len,
            sklearn=fit_sklearn(texts, y_i, y_c, "tfidf_lr", args.seed, val=val),
        )
        timings["tfidf_lr"] = time.time() - s
    if "embed_lr" in args.candidates:
        s = time.time()
        enc, tok = load_encoder(minilm_path())
        x = embed(enc, tok, texts, args.max_len)
        preds["embed_lr"] = IntentPredictor(
            "embed_lr",
            intents,
            categories,
            args.max_len,
            net=IntentNet(enc, len(intents), len(categories)),
            tokenizer=tok,
            sklearn=fit_sklearn(x, y_i, y_c, "embed_lr", args.seed),
        )
        timings["embed_lr"] = time.time() - s
    if "finetune" in args.candidates or "ensemble" in args.candidates:
        s = time.time()
        best = None
        for lr in args.lr_grid:
            net, tok, val_score, hist = finetune(
                args, lr, train_df, split.val, intents, categories, device, writer, f"{tag}lr{lr:g}"
            )
            tuning.append({"lr": lr, "best_val_selection_score": val_score, "history": hist})
            if best is None or val_score > best[2]:
                best = (net, tok, val_score, lr)
        net = best[0].to("cpu")
        preds["finetune"] = IntentPredictor(
            "finetune", intents, categories, args.max_len, net, best[1]
        )
        timings["finetune"] = time.time() - s
        if "ensemble" in args.candidates:
            preds["ensemble"] = IntentPredictor(
                "ensemble",
                intents,
                categories,
                args.max_len,
                net,
                best[1],
                preds["tfidf_lr"].sklearn,
                0.5,
            )
    return {k: v for k, v in preds.items() if k in args.candidates}, timings, tuning


def run_trial(
    args: IntentTrainArgs,
    name: str,
    split: IntentSplit,
    weak: pd.DataFrame | None,
    device,
    writer,
) -> Trial:
    """Train every candidate on the labelled training split (plus `weak` rows), score them
    on the labelled validation and test splits, pick the validation winner."""
    train_df = split.train
    if weak is not None and len(weak):
        train_df = pd.concat([train_df, weak], ignore_index=True)
    train_df = train_df[train_df["intent"].isin(split.intents)].reset_index(drop=True)
    categories = sorted(set(split.data["category"].dropna()) | set(train_df["category"].dropna()))
    tag = "" if name == "labelled" else f"{name}_"
    preds, timings, tuning = fit_candidates(args, train_df, split, categories, device, writer, tag)
    val_scores = {k: score(p, split.val) for k, p in preds.items()}
    winner = max(val_scores, key=lambda k: val_scores[k]["selection_score"])
    return Trial(
        name,
        len(train_df),
        int((train_df.get("source") == "weak").sum()) if "source" in train_df else 0,
        categories,
        preds,
        val_scores,
        {k: score(p, split.test) for k, p in preds.items()},
        winner,
        timings,
        tuning,
    )


def plot_confusions(folder: Path, trial: Trial, intents: list[str]) -> None:
    best = trial.test[trial.winner]
    plot_confusion(
        folder / "confusion_intent.png",
        best["intent"]["confusion"],
        intents,
        f"intent ({trial.winner}), test",
    )
    if "category" in best and len(trial.categories) <= 40:
        plot_confusion(
            folder / "confusion_category.png",
            best["category"]["confusion"],
            trial.categories,
            f"category ({trial.winner}), test",
        )


def intent_lineage(split: IntentSplit, shipped: Trial, weak_offered: int) -> dict:
    data = split.data
    return {
        "sources": sorted(data["source"].dropna().astype(str).unique().tolist())
        if "source" in data
        else [],
        "batch_ids": sorted(int(b) for b in data["batch_id"].dropna().unique())
        if "batch_id" in data
        else [],
        "rows": {
            "train": shipped.train_rows,
            "val": len(split.val),
            "test": len(split.test),
            "weak_offered": weak_offered,
            "weak_in_train": shipped.weak_rows,
        },
    }


def train(
    args: IntentTrainArgs,
    data: pd.DataFrame | None = None,
    settings=None,
    weak: pd.DataFrame | None = None,
) -> IntentResult:
    """Train every candidate, ship the validation winner, write the run report.

    With weak labels (--weak-labels, or `weak` given) the candidates are trained twice, on
    the labelled training split alone and with the weak rows added; the weak labels are
    admitted only if they raise the winner's labelled validation macro-F1."""
    t0 = time.time()
    data = load_data(args, data, settings)
    device = pick_device(args.device)
    seed_everything(args.seed)
    folder = run_dir(args.out_dir, "intent")
    writer = tb_writer(folder, args.tensorboard)
    split = make_split(args, data)
    shipped = run_trial(args, "labelled", split, None, device, writer)
    decision, weak_offered = None, 0
    if args.weak_labels or weak is not None:
        if weak is None:
            weak = weak_labels(settings)
        weak = usable_weak(weak, split)
        weak_offered = len(weak)
        seed_everything(args.seed)
        with_weak = run_trial(args, "weak", split, weak, device, writer)
        decision = WeakLabelDecision(
            admitted=with_weak.val_macro_f1 > shipped.val_macro_f1,
            without=shipped,
            with_weak=with_weak,
            rules=rule_counts(weak) if "rule" in weak and len(weak) else {},
        )
        shipped = with_weak if decision.admitted else shipped
    winner = shipped.winner
    # What typos, dropped words, casing and transliteration cost the shipped model (seeded).
    robust = robustness(
        lambda texts: [r["intent"] for r in shipped.candidates[winner].predict(texts)],
        split.test["query"].tolist(),
        split.test["intent"].tolist(),
        seed=args.seed,
        label_set=split.intents,
    )
    plot_confusions(folder, shipped, split.intents)
    lineage = intent_lineage(split, shipped, weak_offered)
    body = {
        "args": args,
        "winner": winner,
        "feature_service": INTENT_FEATURE_SERVICE,
        "intents": split.intents,
        "categories": shipped.categories,
        "validation": shipped.validation,
        "test": shipped.test,
        "robustness": robust,
        "weak_labels": decision.asdict() if decision else None,
        "tuning": shipped.tuning,
        "fit_seconds": shipped.fit_seconds,
        "lineage": lineage,
        "device": str(device),
        "wall_seconds": time.time() - t0,
    }
    report = write_report(folder, "intent", body)
    if writer:
        writer.close()
    result = IntentResult(
        predictor=shipped.candidates[winner],
        winner=winner,
        candidates=shipped.candidates,
        validation=shipped.validation,
        test=shipped.test,
        robustness=robust,
        lineage=lineage,
        folder=folder,
        report=report,
        weak=decision,
    )
    if args.save_model:
        result.tag = save_intent(
            result.predictor,
            metrics={"validation": shipped.validation[winner], "test": shipped.test[winner]},
            lineage=lineage,
        )
    return result


def main(argv: list[str] | None = None) -> IntentResult:
    args = parse_dataclass(IntentTrainArgs, argv, "python -m training.intent", __doc__)
    res = train(args, settings=None if args.csv else get_settings())
    print(f"winner: {res.winner}  report: {res.report}")
    if res.weak:
        w = res.weak.asdict()
        print(
            f"weak labels {'admitted' if res.weak.admitted else 'refused'}: labelled validation "
            f"macro-F1 {w['without']['val_intent_macro_f1']:.4f} without, "
            f"{w['with']['val_intent_macro_f1']:.4f} with ({w['with']['weak_rows']} weak rows)"
        )
    for k, v in res.validation.items():
        print(
            f"  {k:9s} val score {v['selection_score']:.4f}  "
            f"test intent acc {res.test[k]['intent']['accuracy']:.4f} "
            f"macro-F1 {res.test[k]['intent']['macro_f1']:.4f}"
        )
    for row in res.robustness:
        print(f"  winner, test {row.perturbation:13s} intent macro-F1 {row.macro_f1:.4f}")
    return res


if __name__ == "__main__":
    main()
