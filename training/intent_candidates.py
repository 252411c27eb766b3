"""The intent job's candidates, each fitted on one training set and tuned on validation:
logistic regressions on TF-IDF n-grams, frozen embeddings or both (`intent_data.fit_sklearn`),
SetFit (`intent_fewshot`), the fine-tune (`intent_finetune`) and its average with TF-IDF.
`training.intent` trains them, scores them and ships the validation winner.
"""

from __future__ import annotations

import time

import pandas as pd

from training.common import minilm_path
from training.intent_data import encode_labels, fit_sklearn
from training.intent_fewshot import SetFitArgs, contrastive_finetune
from training.intent_finetune import finetune
from training.intent_model import IntentNet, IntentPredictor, embed, load_encoder


def fit_candidates(
    args,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    intents: list[str],
    categories: list[str],
    device,
    writer,
    tag: str,
) -> tuple[dict[str, IntentPredictor], dict[str, float], list[dict]]:
    """Every candidate in `args.candidates` (the job's IntentTrainArgs) fitted on `train_df`,
    tuned and early-stopped on `val_df`. Returns (predictors by candidate name, fit seconds,
    the fine-tune's learning-rate tuning and SetFit's training record)."""
    want = set(args.candidates)
    y_i, y_c = encode_labels(train_df, intents, categories)
    texts, val_texts = train_df["query"].tolist(), val_df["query"].tolist()
    y_val = encode_labels(val_df, intents, categories)[0]
    preds: dict[str, IntentPredictor] = {}
    timings, tuning = {}, []

    def predictor(kind, net=None, tokenizer=None, sklearn=None):
        return IntentPredictor(kind, intents, categories, args.max_len, net, tokenizer, sklearn)

    if want & {"tfidf_lr", "ensemble"}:
        s = time.time()
        heads = fit_sklearn(texts, y_i, y_c, "tfidf_lr", args.seed, val=(val_texts, y_val))
        preds["tfidf_lr"] = predictor("tfidf_lr", sklearn=heads)
        timings["tfidf_lr"] = time.time() - s
    if want & {"embed_lr", "hybrid"}:
        s = time.time()
        enc, tok = load_encoder(minilm_path())
        # One frozen encoder serves both: its heads are unused, it only embeds the texts.
        frozen = IntentNet(enc, len(intents), len(categories))
        x, x_val = (embed(enc, tok, t, args.max_len) for t in (texts, val_texts))
        shared = time.time() - s
        inputs = {"embed_lr": (x, x_val), "hybrid": ((texts, x), (val_texts, x_val))}
        for kind in sorted(want & set(inputs)):
            s = time.time()
            train_x, val_x = inputs[kind]
            heads = fit_sklearn(train_x, y_i, y_c, kind, args.seed, val=(val_x, y_val))
            preds[kind] = predictor(kind, frozen, tok, heads)
            timings[kind] = shared + time.time() - s
    if want & {"finetune", "ensemble"}:
        s = time.time()
        best = None
        for lr in args.lr_grid:
            net, tok, val_score, hist = finetune(
                args, lr, train_df, val_df, intents, categories, device, writer, f"{tag}lr{lr:g}"
            )
            tuning.append({"lr": lr, "best_val_selection_score": val_score, "history": hist})
            if best is None or val_score > best[2]:
                best = (net, tok, val_score, lr)
        net = best[0].to("cpu")
        preds["finetune"] = predictor("finetune", net, best[1])
        timings["finetune"] = time.time() - s
        if "ensemble" in want:
            preds["ensemble"] = predictor("ensemble", net, best[1], preds["tfidf_lr"].sklearn)
    if "setfit" in want:
        s = time.time()
        enc, tok = load_encoder(minilm_path())
        setfit = SetFitArgs(
            args.setfit_pairs, args.setfit_max_pairs, args.batch_size, args.setfit_lr,
            max_len=args.max_len, seed=args.seed,
        )  # fmt: skip
        tuning.append({"setfit": contrastive_finetune(enc, tok, texts, y_i, setfit, device)})
        x, x_val = (embed(enc, tok, t, args.max_len) for t in (texts, val_texts))
        heads = fit_sklearn(x, y_i, y_c, "embed_lr", args.seed, val=(x_val, y_val))
        preds["setfit"] = predictor(
            "setfit", IntentNet(enc, len(intents), len(categories)), tok, heads
        )
        timings["setfit"] = time.time() - s
    return {k: v for k, v in preds.items() if k in want}, timings, tuning
