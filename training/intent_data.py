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
from training.intent_fewshot import lexical_tfidf, tune_c
from training.intent_model import IGNORE


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


def fit_sklearn(x_train, y_i, y_c, kind: str, seed: int, val=None) -> dict:
    """Logistic-regression heads for intent and category. tfidf_lr reads the shared lexical
    features (`intent_fewshot.lexical_tfidf`) with C tuned on `val` = (texts, intent ids)
    when given; embed_lr reads embeddings at C=1 (the job's untuned frozen baseline)."""
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    c = 1.0
    if kind == "tfidf_lr":
        vec = lexical_tfidf(x_train)
        c = 10.0
        if val is not None and len(val[0]):
            head = tune_c(
                vec.transform(x_train), y_i, vec.transform(val[0]), val[1], TFIDF_C_GRID, seed
            )
            c = head.c

    def model():
        lr = LogisticRegression(max_iter=3000, C=c, random_state=seed)
        return make_pipeline(vec, lr) if kind == "tfidf_lr" else lr

    out = {"intent": model().fit(x_train, y_i)}
    has_cat = y_c != IGNORE
    if len(np.unique(y_c[has_cat])) >= 2:
        sub = (
            [x for x, keep in zip(x_train, has_cat) if keep]
            if kind == "tfidf_lr"
            else x_train[has_cat]
        )
        out["category"] = model().fit(sub, y_c[has_cat])
    return out
