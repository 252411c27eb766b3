"""How well can any text-only intent model do on the simulator's labelled queries?

    python -m training.intent_ceiling                          # labelled_queries from the DB
    python -m training.intent_ceiling --csv labelled.csv --draws 2000000

The simulator labels each query with the intent it drew it for, and a share of its queries are
bare product or category words drawn for every intent alike (`simulate.queries`, "ambiguous"):
their label is a coin the text does not show. This job measures what that costs, the intent
job's counterpart of the ranker's position-free oracle:

1. Split the labelled queries exactly as `training.intent` does (same fractions and seed).
2. Draw `--draws` queries from the simulator's own generator, with the labelled set's intent
   mix, and count for each test text the intents (and phrase pools) that produced it: an
   estimate of P(intent | text).
3. The Bayes classifier predicts the most frequent intent of each test text. Texts never drawn
   are scored as right, so the figure is an upper bound for any model that reads only the text;
   a second figure labels them as TF-IDF does instead (an estimate, not a bound).
4. The intent job's TF-IDF baseline is fitted on the same training split and scored on the test
   split, overall and per phrase pool.

The report says whether "winner >= TF-IDF + margin" is reachable by a text-only model at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.labels import query_key
from governance.schemas import INTENTS
from governance.settings import get_settings
from governance.simulate.queries import QUERY_POOLS, styled_hard_query
from governance.simulate.vocabulary import LEAVES
from governance.simulate.writing import LABELLED_INTENT_P
from training.cli import arg, parse_dataclass
from training.common import run_dir, write_json
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
from training.metrics import macro_f1


@dataclass
class IntentCeilingArgs:
    csv: str | None = arg(None, "labelled queries CSV (query,intent[,category]); default: the DB")
    draws: int = arg(1_000_000, "queries drawn from the generator to estimate P(intent | text)")
    margin: float = arg(0.05, "the lead over TF-IDF the target asks of the intent job's winner")
    val_frac: float = arg(VAL_FRAC, "as training.intent: share of queries for validation")
    test_frac: float = arg(TEST_FRAC, "as training.intent: share of queries for the test report")
    seed: int = arg(SPLIT_SEED, "as training.intent: the split's seed (and the draws')")
    out_dir: str = arg("runs", "folder for the run's report")


@dataclass
class TextOdds:
    """Per test text: how often each intent and each phrase pool produced it."""

    intents: dict[str, np.ndarray]
    pools: dict[str, np.ndarray]

    def bayes_label(self, text: str, fallback: str) -> str:
        counts = self.intents.get(text)
        return fallback if counts is None else INTENTS[int(counts.argmax())]

    def pool(self, text: str) -> str:
        counts = self.pools.get(text)
        return "unseen" if counts is None else QUERY_POOLS[int(counts.argmax())]


def draw_odds(texts: set[str], draws: int, seed: int, progress: bool = True) -> TextOdds:
    """Draw queries as the simulator's labelled set does (uniform leaf, LABELLED_INTENT_P),
    keeping counts only for `texts` (the generator's own lower-case texts; give the test
    texts as `features.labels.query_key` keys them)."""
    rng = np.random.default_rng(seed)
    intents, pools = (
        defaultdict(lambda: np.zeros(len(INTENTS))),
        defaultdict(lambda: np.zeros(len(QUERY_POOLS))),
    )
    chunk = 50_000
    for start in tqdm(range(0, draws, chunk), desc="intent ceiling draws", disable=not progress):
        n = min(chunk, draws - start)
        leaves = rng.integers(len(LEAVES), size=n)
        picks = rng.choice(len(INTENTS), size=n, p=np.array(LABELLED_INTENT_P))
        for leaf, intent in zip(leaves.tolist(), picks.tolist()):
            text, pool = styled_hard_query(leaf, INTENTS[intent], rng)
            if text in texts:
                intents[text][intent] += 1
                pools[text][QUERY_POOLS.index(pool)] += 1
    return TextOdds(dict(intents), dict(pools))


@dataclass
class CeilingReport:
    test_queries: int
    seen_share: float  # test texts the draws produced at least once
    pool_share: dict[str, float]
    bayes_macro_f1: float  # an upper bound: unseen texts count as right
    bayes_tfidf_unseen_macro_f1: float  # an estimate: unseen texts as TF-IDF labels them
    tfidf_macro_f1: float
    tfidf_macro_f1_by_pool: dict[str, float]
    target: float  # TF-IDF + margin
    reachable_by_text: bool  # target <= the upper bound


def ceiling(df: pd.DataFrame, args: IntentCeilingArgs, progress: bool = True) -> CeilingReport:
    # The intent job's split, on the texts as it reads them; the draws are compared by key.
    train, val, test = split_queries(df, args.val_frac, args.test_frac, args.seed)
    labels = sorted(df["intent"].unique())
    keys = [query_key(t) for t in test["query"]]
    odds = draw_odds({k for k in keys if k}, args.draws, args.seed, progress)
    truth = test["intent"].tolist()
    bayes = [odds.bayes_label(k, y) for k, y in zip(keys, truth)]
    pools = np.array([odds.pool(k) for k in keys])

    # No categories given: every category is IGNORE, so only the intent head is fitted.
    y_i, y_c = encode_labels(train, labels, [])
    val_set = (val["query"].tolist(), encode_labels(val, labels, [])[0])
    tfidf = fit_sklearn(train["query"].tolist(), y_i, y_c, "tfidf_lr", args.seed, val_set)
    tfidf = tfidf["intent"]
    predicted = np.array([labels[i] for i in tfidf.predict(test["query"].tolist())])
    truth_arr = np.array(truth)
    by_pool = {
        pool: macro_f1(truth_arr[pools == pool], predicted[pools == pool], labels)
        for pool in (*QUERY_POOLS, "unseen")
        if (pools == pool).any()
    }
    tfidf_f1 = macro_f1(truth, predicted.tolist(), labels)
    bound = macro_f1(truth, bayes, labels)
    unseen = pools == "unseen"
    estimate = macro_f1(truth, np.where(unseen, predicted, np.array(bayes)).tolist(), labels)
    return CeilingReport(
        test_queries=len(test),
        seen_share=float(np.mean([k in odds.intents for k in keys])),
        pool_share={p: float(np.mean(pools == p)) for p in (*QUERY_POOLS, "unseen")},
        bayes_macro_f1=bound,
        bayes_tfidf_unseen_macro_f1=estimate,
        tfidf_macro_f1=tfidf_f1,
        tfidf_macro_f1_by_pool=by_pool,
        target=tfidf_f1 + args.margin,
        reachable_by_text=tfidf_f1 + args.margin <= bound,
    )


def where_target(report: CeilingReport) -> str:
    if report.target > report.bayes_macro_f1:
        return "above the text-only bound: no model of the text alone reaches it"
    if report.target > report.bayes_tfidf_unseen_macro_f1:
        return "between the estimate and the bound: only near-perfect on the texts never drawn"
    return "under the estimate: within reach of a text-only model"


def main(argv: list[str] | None = None) -> CeilingReport:
    args = parse_dataclass(IntentCeilingArgs, argv, "python -m training.intent_ceiling", __doc__)
    df = load_csv(args.csv) if args.csv else load_labelled(get_settings())
    if df.empty:
        raise SystemExit("no labelled queries: ingest a simulator run first or pass --csv FILE")
    report = ceiling(df, args)
    folder = run_dir(args.out_dir, "intent_ceiling")
    write_json(folder / "report.json", {"kind": "intent_ceiling", "args": args, **vars(report)})
    print(
        f"test queries {report.test_queries}, drawn at least once {report.seen_share:.3f}, "
        f"ambiguous {report.pool_share['ambiguous']:.3f}\n"
        f"text-only upper bound (Bayes) macro-F1 {report.bayes_macro_f1:.4f}, with TF-IDF on "
        f"the texts never drawn {report.bayes_tfidf_unseen_macro_f1:.4f}\n"
        f"TF-IDF macro-F1 {report.tfidf_macro_f1:.4f}; by pool "
        + ", ".join(f"{k} {v:.4f}" for k, v in report.tfidf_macro_f1_by_pool.items())
        + f"\nTF-IDF + {args.margin:g} = {report.target:.4f}: {where_target(report)}"
        + f"  report {folder / 'report.json'}"
    )
    return report


if __name__ == "__main__":
    main()
