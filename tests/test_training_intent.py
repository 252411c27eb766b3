"""Tiny end-to-end intent training (a few steps, max_len 16), report, model store round trip."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from governance.db import transaction
from tests.training_data import intent_queries
from training.intent import IntentTrainArgs, main, train
from training.intent_data import DEFAULT_C, TFIDF_C_GRID, fit_sklearn, load_labelled, split_queries
from training.intent_fewshot import C_GRID
from training.intent_finetune import param_groups, plan_steps
from training.intent_model import IGNORE, IntentNet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("intent")
    args = IntentTrainArgs(
        out_dir=str(out), max_len=16, batch_size=16, epochs=1, max_steps=4, eval_every=2, seed=0,
        candidates=("tfidf_lr", "embed_lr", "hybrid", "setfit", "finetune", "ensemble"),
        setfit_max_pairs=32,  # two contrastive steps: CPU fine-tuning is slow
        cv_below=0,  # the cross-validation has a test of its own
    )  # fmt: skip
    return train(args, data=intent_queries(240))


def test_every_candidate_scored_and_winner_is_best_on_validation(trained):
    val = trained.validation
    assert set(val) == {"tfidf_lr", "embed_lr", "hybrid", "setfit", "finetune", "ensemble"}
    best = max(v["selection_score"] for v in val.values())
    assert val[trained.winner]["selection_score"] == best
    assert trained.predictor.kind == trained.winner
    # The TF-IDF baseline on these template queries is far above chance (1/4).
    assert trained.test["tfidf_lr"]["intent"]["accuracy"] > 0.8


def test_report_is_self_contained(trained):
    folder = trained.folder
    report = json.loads((folder / "report.json").read_text())
    assert report["winner"] == trained.winner
    assert report["feature_service"] == "intent_v1"
    assert (folder / "confusion_intent.png").stat().st_size > 0
    assert "confusion_intent.png" in report["plots"]
    assert report["lineage"]["batch_ids"] == [1, 2]
    rob = {r["perturbation"]: r for r in report["robustness"]}
    assert set(rob) == {"clean", "typo", "drop_word", "casing", "transliterate"}
    assert rob["clean"]["macro_f1"] == pytest.approx(
        report["test"][report["winner"]]["intent"]["macro_f1"]
    )
    assert any((folder / "tensorboard").iterdir())
    assert report["tuning"][0]["history"]
    assert report["tuning"][-1]["setfit"]["pairs"] == 32


def test_logistic_regressions_take_c_from_validation(trained):
    """The C of every logistic-regression candidate comes from its grid, chosen on validation;
    the hybrid's input is the TF-IDF block beside the 384-wide embedding."""
    for kind, grid in (("tfidf_lr", TFIDF_C_GRID), ("embed_lr", C_GRID), ("hybrid", C_GRID)):
        heads = trained.candidates[kind].sklearn
        lr = heads["intent"][-1] if kind == "tfidf_lr" else heads["intent"]
        # On these queries validation picks 3, 3 and 10, none of them the no-validation
        # fallback, so a fit that skipped the tuning would fail here.
        chosen = lr.C
        assert chosen in grid and chosen != DEFAULT_C[kind], kind
    hybrid = trained.candidates["hybrid"].sklearn
    n_lexical = len(hybrid["vectorizer"].get_feature_names_out())
    assert hybrid["intent"].n_features_in_ == n_lexical + 384


def test_category_head_leaves_the_intent_vocabulary_alone():
    """Rows without a category train only the intent head; fitting the category head on the
    rest must not refit the TF-IDF both heads share (words seen only in uncategorised rows
    stay in the intent model's vocabulary)."""
    df = intent_queries(120)
    texts = df["query"].tolist()
    y_i = df["intent"].astype("category").cat.codes.to_numpy()
    y_c = np.where(np.arange(len(df)) % 2 == 0, IGNORE, df["category"].factorize()[0])
    texts[1] = texts[1] + " zzyzx"  # only in a row without a category
    y_c[1] = IGNORE
    heads = fit_sklearn(texts, y_i, y_c, "tfidf_lr", 0)
    words = heads["intent"][0].transformer_list[1][1].vocabulary_
    assert "zzyzx" in words
    assert (heads["intent"].predict(texts) == y_i).mean() > 0.9
    assert heads["category"][0] is heads["intent"][0]


def test_split_is_query_disjoint():
    df = intent_queries(200)
    tr, va, te = split_queries(df, 0.15, 0.15, 0)
    assert not (set(tr["query"]) & set(te["query"])) and not (set(tr["query"]) & set(va["query"]))
    assert len(tr) + len(va) + len(te) == len(df)


@pytest.mark.parametrize(
    "kind", ["finetune", "ensemble", "tfidf_lr", "embed_lr", "hybrid", "setfit"]
)
def test_store_round_trip_predicts_identically(trained, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bento"))
    from training.bundles import info, load_intent, save_intent

    pred = trained.candidates[kind]
    queries = ["buy acme phone", "best sofas", "where is my laptop order", "zzz"]
    before = pred.predict_proba(queries)
    tag = save_intent(pred, trained.test[kind], trained.lineage)
    assert (tmp_path / "bento" / "models" / "cartwise-intent").is_dir()
    loaded = load_intent(tag)
    after = loaded.predict_proba(queries)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    meta = info(tag)
    assert meta["metadata"]["feature_service"] == "intent_v1"
    assert meta["lineage"]["batch_ids"] == [1, 2]
    assert meta["metadata"]["kind"] == kind


def test_cli_with_csv_of_another_taxonomy(tmp_path):
    df = intent_queries(150).rename(columns={"intent": "label"})
    df["label"] = df["label"].map(
        {
            "buy_product": "purchase",
            "browse_category": "explore",
            "compare_prices": "compare",
            "product_info": "help",
        }
    )
    df[["query", "label", "category"]].to_csv(tmp_path / "shop.csv", index=False)
    res = main(
        [
            "--csv",
            str(tmp_path / "shop.csv"),
            "--out-dir",
            str(tmp_path),
            "--candidates",
            "tfidf_lr",
            "--no-tensorboard",
        ]
    )
    assert res.predictor.intents == ["compare", "explore", "help", "purchase"]


def test_labels_from_database(settings):
    df = intent_queries(60)
    with transaction(settings) as cur:
        cur.execute(
            "INSERT INTO ingest_batches (source, table_name, checksum) "
            "VALUES ('test', 'labelled_queries', 'x') RETURNING batch_id"
        )
        batch = cur.fetchone()[0]
        for r in df.itertuples():
            cur.execute(
                "INSERT INTO labelled_queries (query, intent, category, batch_id) "
                "VALUES (%s, %s, %s, %s)",
                (r.query, r.intent, r.category, batch),
            )
    got = load_labelled(settings)
    assert len(got) == len(df) and set(got["batch_id"]) == {batch}


def test_weak_labels_only_reach_training_split(tmp_path):
    data = intent_queries(150)
    held_query = data["query"].iloc[0]
    weak = pd.DataFrame(
        {
            "query": ["buy nova sofa now", held_query],
            "intent": ["buy_product"] * 2,
            "category": ["sofas"] * 2,
            "rule": ["buy_after_search"] * 2,
            "source": ["weak"] * 2,
        }
    )
    res = train(
        IntentTrainArgs(out_dir=str(tmp_path), candidates=("tfidf_lr",), tensorboard=False),
        data=data,
        weak=weak,
    )
    rows = res.lineage["rows"]
    # The weak row for a query that landed in validation/test is dropped, not trained on.
    assert rows["weak_offered"] in (1, 2) and res.weak.with_weak.weak_rows == rows["weak_offered"]
    assert res.weak.with_weak.train_rows == res.weak.without.train_rows + rows["weak_offered"]
    assert rows["train"] + rows["val"] + rows["test"] == len(data) + rows["weak_in_train"]


def test_a_small_set_still_gets_min_steps_of_fine_tuning():
    """200 queries at batch 32 are 7 batches: four epochs would be 28 updates, near chance on
    30+ classes. The plan runs --min-steps instead, validates about ten times, and
    --max-steps still caps it."""
    plan = plan_steps(200, IntentTrainArgs(batch_size=32, epochs=4, min_steps=300))
    assert (plan.steps_per_epoch, plan.total, plan.eval_every) == (7, 300, 30)
    big = plan_steps(10_000, IntentTrainArgs(batch_size=32, epochs=4, min_steps=300))
    assert big.total == 313 * 4 and big.eval_every == 313  # at most one an epoch
    capped = plan_steps(200, IntentTrainArgs(min_steps=300, max_steps=50))
    assert capped.total == 50 and capped.eval_every == 7


def test_layer_wise_decay_gives_lower_layers_smaller_rates():
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig(hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                                   intermediate_size=16, vocab_size=30))  # fmt: skip
    net = IntentNet(encoder, 4, 2)
    rate = {id(p): g["lr"] for g in param_groups(net, 1.0, 0.01, 0.5) for p in g["params"]}
    named = dict(net.named_parameters())
    assert rate[id(named["intent_head.weight"])] == 1.0
    assert rate[id(named["encoder.encoder.layer.2.output.dense.weight"])] == 0.5
    assert rate[id(named["encoder.encoder.layer.0.output.dense.weight"])] == 0.125
    assert rate[id(named["encoder.embeddings.word_embeddings.weight"])] == 0.0625
    assert len(rate) == len(named)  # every parameter in exactly one group


def test_a_small_set_report_adds_k_fold_intervals(tmp_path):
    """Under --cv-below queries the report carries a cross-validation of the job's own
    candidates (embed_lr is the tuned one there), each a mean with an interval over folds;
    at or above it, none."""
    data = intent_queries(120)
    args = IntentTrainArgs(
        out_dir=str(tmp_path), candidates=("tfidf_lr", "embed_lr"), tensorboard=False,
        cv_below=200, cv_folds=3,
    )  # fmt: skip
    res = train(args, data=data)
    cv = res.cross_validation
    assert cv["folds"] == 3 and cv["data"]["queries"] == 120
    assert set(cv["summary"].test) == {"tfidf_lr", "embed_lr_tuned"}
    for ci in cv["summary"].test.values():
        assert ci.n == 3 and ci.low <= ci.mean <= ci.high
    report = json.loads((res.folder / "report.json").read_text())
    assert report["cross_validation"]["summary"]["test"]["tfidf_lr"]["n"] == 3
    big = train(IntentTrainArgs(**{**vars(args), "cv_below": 120}), data=data)
    assert big.cross_validation is None
