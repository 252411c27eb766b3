"""The intent job's data and its scikit-learn heads: labelled queries from the governed table
or a CSV, the query-disjoint split, label encoding, and the logistic-regression candidates.

Shared by `training.intent` (the job), `training.intent_ceiling` and the benchmarks, so a split
or a baseline is defined once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from governance.db import engine
from training.intent_fewshot import C_GRID, lexical_tfidf, tune_c
from training.intent_model import IGNORE, hybrid_matrix


def load_labelled(settings) -> pd.DataFrame:
    with engine(settings).connect() as conn:
        return pd.read_sql_query(
            "SELECT query, intent, category, source, batch_id FROM labelled_queries "
            "ORDER BY query_id",
            conn,
        )


def load_csv(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    if "intent" not in df:
        df = df.rename(columns={"label": "intent"})
    if "category" not in df:
        df["category"] = None
    df["source"] = df.get("source", "csv")
    return df[["query", "intent", "category", "source"]]


# The split's defaults: the intent job and its ceiling must split the same way.
VAL_FRAC, TEST_FRAC, SPLIT_SEED = 0.15, 0.15, 0


def split_queries(df: pd.DataFrame, val_frac: float, test_frac: float, seed: int):
    """Split by distinct query text, stratified by intent where every class allows it,
    so the same query never sits on both sides."""
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.model_selection import train_test_split

    firsts = df.drop_duplicates("query")[["query", "intent"]]
    strat = firsts["intent"] if firsts["intent"].value_counts().min() >= 3 else None
    rest, test = train_test_split(firsts, test_size=test_frac, random_state=seed, stratify=strat)
    strat2 = rest["intent"] if strat is not None else None
    train, val = train_test_split(
        rest, test_size=val_frac / (1 - test_frac), random_state=seed, stratify=strat2
    )

    def pick(part):
        return df[df["query"].isin(set(part["query"]))].reset_index(drop=True)

    return pick(train), pick(val), pick(test)


def encode_labels(df: pd.DataFrame, intents: list[str], categories: list[str]):
    ii = {v: i for i, v in enumerate(intents)}
    ci = {v: i for i, v in enumerate(categories)}
    y_i = df["intent"].map(ii).fillna(-1).astype(int).to_numpy()
    y_c = df["category"].map(ci).fillna(IGNORE).astype(int).to_numpy()
    return y_i, y_c


# ---------------------------------------------------------------- candidates


TFIDF_C_GRID = (3.0, 10.0, 30.0)
DEFAULT_C = {"tfidf_lr": 10.0, "embed_lr": 1.0, "hybrid": 1.0}  # when there is no validation


def fit_sklearn(x_train, y_i, y_c, kind: str, seed: int, val=None) -> dict:
    """Logistic-regression heads for intent and category, C tuned on `val` = (inputs, intent
    ids) when given (the intent head's best C serves both heads). What `x_train` and val's
    inputs are depends on the kind:

        tfidf_lr  the texts; the shared lexical features (`intent_fewshot.lexical_tfidf`)
                  go into a pipeline with the heads, C from TFIDF_C_GRID
        embed_lr  frozen sentence embeddings, C from intent_fewshot.C_GRID
        hybrid    (texts, embeddings): `intent_model.hybrid_matrix` of both, C from C_GRID;
                  the fitted TF-IDF is returned beside the heads as "vectorizer"
    """
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    extra, grid = {}, C_GRID
    if kind == "tfidf_lr":
        vec = lexical_tfidf(x_train)
        features, grid = vec.transform, TFIDF_C_GRID
    elif kind == "hybrid":
        vec = lexical_tfidf(x_train[0])
        extra["vectorizer"] = vec

        def features(x):
            return hybrid_matrix(vec, x[0], x[1])
    elif kind == "embed_lr":

        def features(x):
            return x
    else:
        raise ValueError(f"unknown scikit-learn intent candidate {kind!r}")
    x = features(x_train)
    c = DEFAULT_C[kind]
    if val is not None and len(val[1]):
        c = tune_c(x, y_i, features(val[0]), val[1], grid, seed).c

    def fit(rows, y):
        lr = LogisticRegression(max_iter=3000, C=c, random_state=seed).fit(x[rows], y)
        # The fitted TF-IDF goes in as it is: a pipeline's fit would refit it, and the two
        # heads share it.
        return make_pipeline(vec, lr) if kind == "tfidf_lr" else lr

    out = {"intent": fit(np.arange(len(y_i)), y_i), **extra}
    has_cat = np.flatnonzero(y_c != IGNORE)
    if len(np.unique(y_c[has_cat])) >= 2:
        out["category"] = fit(has_cat, y_c[has_cat])
    return out
