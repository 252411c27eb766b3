"""Seeded text perturbations for robustness reports and augmentation.

Each perturbation is a pure function (text, numpy Generator) -> text; `perturb_all` applies
one to a list of queries from a fixed seed, so the same seed always gives the same strings and
a report's robustness numbers can be reproduced exactly. What they model:

    typo            one keyboard slip per word of 4+ letters with probability `rate`
                    (the simulator's own slip model, so train and test agree on what a typo is)
    drop_word       one word left out (queries of 2+ words)
    casing          upper, title or random-case variants of the whole query
    transliterate   accented letters to ASCII and back-spellings (ü -> ue, ß -> ss, é -> e),
                    as people type on keyboards without the letter
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from governance.simulate.vocabulary import add_typo
from training.metrics import accuracy, macro_f1

# Spellings people use when the keyboard lacks the letter; unicode decomposition covers
# the rest (é -> e).
_TRANSLIT = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa"}
_NO_DECOMPOSITION = {"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d"}


def typo(text: str, rng: np.random.Generator, rate: float = 0.5) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        out.append(add_typo(w, rng) if len(w) >= 4 and rng.random() < rate else w)
    return " ".join(out)


def drop_word(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    i = int(rng.integers(len(words)))
    return " ".join(words[:i] + words[i + 1 :])


def casing(text: str, rng: np.random.Generator) -> str:
    kind = int(rng.integers(3))
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.title()
    flips = rng.random(len(text)) < 0.5
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips))


def transliterate(text: str, rng: np.random.Generator) -> str:
    """Umlauts as digraphs half the time, else stripped of their accent; other accents
    stripped. `rng` decides per query which spelling, as different people choose differently."""
    digraphs = rng.random() < 0.5
    out = []
    for ch in text:
        low = ch.lower()
        if digraphs and low in _TRANSLIT:
            rep = _TRANSLIT[low]
            out.append(rep.upper() if ch.isupper() else rep)
            continue
        if low in _NO_DECOMPOSITION:  # letters unicode does not split into base + accent
            rep = _NO_DECOMPOSITION[low]
            out.append(rep.upper() if ch.isupper() else rep)
            continue
        base = unicodedata.normalize("NFKD", ch)
        out.append("".join(c for c in base if not unicodedata.combining(c)))
    return "".join(out)


PERTURBATIONS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "typo": typo,
    "drop_word": drop_word,
    "casing": casing,
    "transliterate": transliterate,
}


def perturb_all(texts: Sequence[str], kind: str, seed: int = 0) -> list[str]:
    """The same perturbation applied to every text, deterministic given `seed`."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {sorted(PERTURBATIONS)}")
    rng = np.random.default_rng([seed, sorted(PERTURBATIONS).index(kind)])
    fn = PERTURBATIONS[kind]
    return [fn(str(t), rng) for t in texts]


def augment(texts: Sequence[str], labels: Sequence, copies: int = 1, seed: int = 0):
    """Training augmentation: `copies` perturbed variants per text, each from a random
    perturbation; returns (texts, labels) with the originals first."""
    rng = np.random.default_rng(seed)
    kinds = sorted(PERTURBATIONS)
    out_t, out_y = list(texts), list(labels)
    for _ in range(copies):
        for t, y in zip(texts, labels):
            out_t.append(PERTURBATIONS[kinds[int(rng.integers(len(kinds)))]](str(t), rng))
            out_y.append(y)
    return out_t, out_y


@dataclass(frozen=True)
class RobustnessRow:
    perturbation: str
    macro_f1: float
    accuracy: float
    drop_macro_f1: float  # clean minus perturbed: what the perturbation costs


def robustness(
    predict: Callable[[list[str]], list],
    texts: Sequence[str],
    labels: Sequence,
    seed: int = 0,
    label_set: Sequence | None = None,
) -> list[RobustnessRow]:
    """Score `predict` (texts -> predicted labels) on the clean texts and under each
    perturbation; the first row is the clean score. `label_set`: the classes macro-F1
    averages over (default: those in `labels`)."""
    label_set = sorted(set(labels)) if label_set is None else list(label_set)
    clean = list(predict(list(texts)))
    base = macro_f1(labels, clean, label_set)
    rows = [RobustnessRow("clean", base, accuracy(labels, clean), 0.0)]
    for kind in PERTURBATIONS:
        pred = list(predict(perturb_all(texts, kind, seed)))
        f1 = macro_f1(labels, pred, label_set)
        rows.append(RobustnessRow(kind, f1, accuracy(labels, pred), base - f1))
    return rows
