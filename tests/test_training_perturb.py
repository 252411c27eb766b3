"""Perturbations are deterministic given a seed, change what they claim to, and the
robustness table scores each of them."""

import pytest

from training import perturb

QUERIES = ["wireless headphones", "günstige Kopfhörer für Kinder", "café crème maker", "ab"]


@pytest.mark.parametrize("kind", sorted(perturb.PERTURBATIONS))
def test_same_seed_same_strings_other_seed_differs(kind):
    texts = QUERIES * 25
    a = perturb.perturb_all(texts, kind, seed=3)
    b = perturb.perturb_all(texts, kind, seed=3)
    c = perturb.perturb_all(texts, kind, seed=4)
    assert a == b
    assert len(a) == len(texts)
    if kind != "transliterate":  # transliteration of ASCII text is the identity
        assert a != c


def test_each_perturbation_does_what_it_says():
    assert perturb.perturb_all(["ab"], "drop_word") == ["ab"]  # one word: nothing to drop
    dropped = perturb.perturb_all(["red running shoes"], "drop_word", seed=1)[0]
    assert len(dropped.split()) == 2 and set(dropped.split()) < {"red", "running", "shoes"}
    cased = perturb.perturb_all(["red running shoes"] * 20, "casing")
    assert all(c.lower() == "red running shoes" for c in cased)
    assert any(c != "red running shoes" for c in cased)
    translit = perturb.perturb_all(["Kopfhörer für Straße café"] * 20, "transliterate")
    assert all(t.isascii() for t in translit)
    assert {"Kopfhoerer fuer Strasse cafe", "Kopfhorer fur Strasse cafe"} >= set(translit)
    typos = perturb.perturb_all(["wireless headphones"] * 50, "typo")
    assert sum(t != "wireless headphones" for t in typos) > 10


def test_augment_keeps_labels_aligned():
    texts, labels = perturb.augment(["aaaa bbbb", "cccc dddd"], ["x", "y"], copies=2, seed=0)
    assert len(texts) == len(labels) == 6
    assert labels == ["x", "y", "x", "y", "x", "y"]
    assert perturb.augment(["aaaa bbbb"], ["x"], 2, seed=0) == perturb.augment(
        ["aaaa bbbb"], ["x"], 2, seed=0
    )


def test_robustness_table_measures_the_cost():
    # A "model" that only knows exact lower-case strings loses everything under casing.
    lookup = {"red shoes": "buy", "shoe reviews": "info"}
    texts, labels = ["red shoes", "shoe reviews"] * 10, ["buy", "info"] * 10
    rows = perturb.robustness(lambda ts: [lookup.get(t, "?") for t in ts], texts, labels)
    by = {r.perturbation: r for r in rows}
    assert by["clean"].macro_f1 == 1.0 and by["clean"].drop_macro_f1 == 0.0
    assert by["casing"].macro_f1 < 0.5 and by["casing"].drop_macro_f1 > 0.5
    assert by["transliterate"].drop_macro_f1 == 0.0
