"""The intent ceiling: P(intent | text) from the simulator's generator, and what it bounds."""

import numpy as np
import pandas as pd

from governance.simulate import queries
from governance.simulate.config import preset
from governance.simulate.shop import Shop
from governance.simulate.writing import labelled_query_rows
from training import intent_ceiling as ic


def test_the_styled_generator_draws_the_same_queries():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for leaf in range(20):
        text, pool = queries.styled_hard_query(leaf, "compare_prices", a)
        assert text == queries.hard_query(leaf, "compare_prices", b)
        assert pool in queries.QUERY_POOLS


def test_bayes_label_is_the_most_frequent_intent_and_unseen_texts_fall_back():
    odds = ic.TextOdds({"voltix headphones": np.array([1.0, 5.0, 2.0, 0.0])}, {})
    assert odds.bayes_label("voltix headphones", "product_info") == ic.INTENTS[1]
    assert odds.bayes_label("never drawn", "product_info") == "product_info"
    assert odds.pool("never drawn") == "unseen"


def test_ambiguous_queries_are_where_tfidf_fails_and_the_bound_sits_above_it():
    cfg = preset("tiny", query_style="hard", n_labelled_queries=1500)
    rows = labelled_query_rows(Shop(cfg, np.random.default_rng(cfg.seed)), np.random.default_rng(1))
    args = ic.IntentCeilingArgs(draws=40_000)
    report = ic.ceiling(pd.DataFrame(rows), args, progress=False)
    assert report.test_queries == round(0.15 * 1500)
    assert abs(sum(report.pool_share.values()) - 1.0) < 1e-9
    assert 0.05 < report.pool_share["ambiguous"] < 0.3
    by_pool = report.tfidf_macro_f1_by_pool
    # The text of an ambiguous query does not say its intent; a phrased one does.
    assert by_pool["ambiguous"] < 0.6 < by_pool["phrase"]
    assert report.tfidf_macro_f1 < report.bayes_macro_f1
    assert report.bayes_tfidf_unseen_macro_f1 <= report.bayes_macro_f1 + 1e-9
    assert report.target == report.tfidf_macro_f1 + args.margin
    far = ic.CeilingReport(**{**vars(report), "target": report.bayes_macro_f1 + 0.01})
    assert ic.where_target(far).startswith("above the text-only bound")
