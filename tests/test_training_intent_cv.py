"""The small-set path: stratified folds, C tuned on validation, SetFit pairs, a report with
intervals and robustness, on a CSV of a few dozen queries."""

import numpy as np
import pandas as pd
import pytest

from training import intent_cv
from training.intent_fewshot import make_pairs, tune_c

WORDS = {
    "track_order": ["where is my order", "track parcel", "order status", "delivery tracking"],
    "return_item": ["return shoes", "send back jacket", "refund for lamp", "return policy"],
    "find_product": ["red running shoes", "oak dining table", "wireless earbuds", "cotton scarf"],
}


def _csv(tmp_path, copies=4):
    rows = [
        (f"{text} {suffix}", label)
        for label, texts in WORDS.items()
        for text in texts
        for suffix in ["please", "now", "today", "asap", "thanks"][:copies]
    ]
    path = tmp_path / "queries.csv"
    pd.DataFrame(rows, columns=["query", "label"]).to_csv(path, index=False)
    return path


def test_folds_cover_every_query_once_per_repeat():
    y = np.array(["a"] * 10 + ["b"] * 10 + ["rare"])
    splits = list(intent_cv.folds(y, 5, 2, seed=0))
    assert len(splits) == 10
    for r in (0, 1):
        tests = np.concatenate([te for rr, _, _, te in splits if rr == r])
        assert sorted(tests) == list(range(20))  # the rare class never sits in a test fold
    for _, _, tr, te in splits:
        assert not set(tr) & set(te) and 20 in tr


def test_pairs_are_labelled_by_class():
    labels = ["a", "a", "b", "b", "c"]
    a, b, t = make_pairs(labels, 4, 1000, seed=0)
    assert len(a) > 0
    same = np.array([labels[i] == labels[j] for i, j in zip(a, b)])
    assert (same == (t == 1.0)).all() and (a != b).all()
    assert (make_pairs(labels, 4, 1000, 0)[0] == a).all()


def test_tune_c_prefers_validation_winner():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] > 0).astype(int)
    head = tune_c(x[:40], y[:40], x[40:], y[40:], (0.001, 10.0))
    assert [row["C"] for row in head.table] == [0.001, 10.0]
    assert head.val_macro_f1 == max(r["val_macro_f1"] for r in head.table)


@pytest.mark.slow
def test_cv_run_on_a_small_csv(tmp_path):
    res = intent_cv.main(
        [
            "--csv", str(_csv(tmp_path)),
            "--folds", "2",
            "--candidates", "tfidf_lr,embed_lr_tuned,hybrid,setfit,finetune",
            "--setfit-max-pairs", "8",  # one step per fold: CPU fine-tuning is slow
            "--finetune-steps", "2",
            "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    s = res["summary"]
    assert res["data"] == {"queries": 48, "classes": 3}
    assert len(res["folds"]) == 2
    assert set(s.test) == {"tfidf_lr", "embed_lr_tuned", "hybrid", "setfit", "finetune"}
    for ci in s.test.values():
        assert 0.0 <= ci.mean <= 1.0 and ci.n == 2
    # The shipped score is the validation winner's, fold by fold.
    shipped = [f.test[f.winner] for f in res["folds"]]
    assert s.shipped.mean == pytest.approx(np.mean(shipped))
    assert set(s.robustness) == {"typo", "drop_word", "casing", "transliterate"}
    assert s.test["tfidf_lr"].mean > 0.6  # the words separate the classes
    assert (res["folder"] / "report.json").exists()


def test_bad_csv_says_what_is_needed(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["a"], "label": ["x"]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="query and label"):
        intent_cv.main(["--csv", str(path), "--out-dir", str(tmp_path)])
