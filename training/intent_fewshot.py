"""Intent models that work with a few hundred labelled queries.

Three candidates with their regularisation chosen on the validation split (30+ classes from
5 examples each are under-regularised at a fixed C). `training.intent_cv` compares all three;
the intent job (`training.intent`) ships the first two as embed_lr and hybrid:

    embed_lr_tuned  logistic regression on frozen MiniLM sentence embeddings, C from a grid
    hybrid          one logistic regression over the TF-IDF n-grams and the embedding
                    (lexical features catch brand and model tokens the encoder splits badly;
                    the embedding catches synonyms and the second language), built by
                    `intent_model.hybrid_matrix`
    setfit          SetFit (Tunstall et al., 2022): the encoder is first fine-tuned
                    contrastively on pairs of queries (same intent -> cosine 1, different ->
                    0), then a logistic-regression head is fitted on its embeddings. Pairs
                    give ~n x pairs_per_example updates where a classifier fine-tune gets n /
                    batch_size a pass, which is why it works at this size.

Written against plain PyTorch and transformers (no setfit package: its releases pin older
transformers than this project's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from training.common import autocast, seed_everything
from training.intent_model import mean_pool, tokenize
from training.metrics import macro_f1

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass
class TunedHead:
    model: object  # fitted scikit-learn classifier
    c: float
    val_macro_f1: float
    table: list[dict]


def tune_c(x_train, y_train, x_val, y_val, c_grid=C_GRID, seed: int = 0) -> TunedHead:
    """Logistic regression at each C of the grid; the best validation macro-F1 wins (the
    smaller C on ties: the more regularised model)."""
    from sklearn.linear_model import LogisticRegression  # heavy import, training only

    labels = sorted(set(y_train) | set(y_val))
    best, table = None, []
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        f1 = macro_f1(y_val, model.predict(x_val), labels) if len(y_val) else 0.0
        table.append({"C": c, "val_macro_f1": f1})
        if best is None or f1 > best.val_macro_f1 + 1e-12:
            best = TunedHead(model, c, f1, table)
    best.table = table
    return best


def lexical_tfidf(texts, max_features: int = 50_000):
    """The lexical features of every TF-IDF candidate: character 2-5 grams inside word
    boundaries (typos, abbreviations and model tokens still share most of them) beside word
    1-2 grams (phrasings such as "vs" or "size chart"), each block L2-normalised. On the
    simulator's hard queries this scored ~.02-.03 test macro-F1 above character 1-2 grams
    alone over three splits, so the baseline the learned models must beat is a strong one."""
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=max_features
        ),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
    ).fit(texts)


# ---------------------------------------------------------------- SetFit


@dataclass
class SetFitArgs:
    pairs_per_example: int = 10  # SetFit's num_iterations: pairs drawn per query
    max_pairs: int = 8000  # cap, so a large set still trains in minutes on CPU
    batch_size: int = 32
    lr: float = 2e-5
    epochs: int = 1
    max_len: int = 32
    seed: int = 0


def make_pairs(labels, pairs_per_example: int, max_pairs: int, seed: int = 0):
    """(a, b, target) index pairs: for every query, half its pairs with a query of the same
    label (target 1) and half with another label (target 0); SetFit's sampling."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by = {lab: np.flatnonzero(labels == lab) for lab in np.unique(labels)}
    a, b, t = [], [], []
    for _ in range(max(1, pairs_per_example // 2)):
        for i, lab in enumerate(labels):
            same = by[lab]
            if len(same) > 1:
                j = same[rng.integers(len(same))]
                while j == i:
                    j = same[rng.integers(len(same))]
                a.append(i), b.append(j), t.append(1.0)
            other = rng.integers(len(labels))
            if labels[other] != lab:
                a.append(i), b.append(other), t.append(0.0)
    order = rng.permutation(len(a))[:max_pairs]
    return np.array(a)[order], np.array(b)[order], np.array(t, np.float32)[order]


def contrastive_finetune(encoder, tokenizer, texts, labels, args: SetFitArgs, device) -> dict:
    """Fine-tune `encoder` in place with the cosine-similarity loss over query pairs."""
    gen = seed_everything(args.seed)
    a, b, t = make_pairs(labels, args.pairs_per_example, args.max_pairs, args.seed)
    encoder.to(device).train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=0.01)
    steps = int(np.ceil(len(a) / args.batch_size)) * args.epochs
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    losses, t0 = [], time.perf_counter()
    bar = tqdm(total=steps, desc="setfit pairs", leave=False)
    texts = list(texts)
    for _ in range(args.epochs):
        order = torch.randperm(len(a), generator=gen).numpy()
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            batch = tokenize(
                tokenizer, [texts[i] for i in a[idx]] + [texts[i] for i in b[idx]], args.max_len
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device):
                hidden = encoder(**batch).last_hidden_state
                emb = mean_pool(hidden, batch["attention_mask"]).float()
            ea, eb = emb[: len(idx)], emb[len(idx) :]
            loss = F.mse_loss(F.cosine_similarity(ea, eb), torch.as_tensor(t[idx], device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    # Back to CPU: embedding and the predictor that ships run there.
    encoder.to("cpu").eval()
    return {
        "pairs": len(a) * args.epochs,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
