"""Train the query-intent model and ship whichever candidate wins on validation.

    python -m training.intent --out runs                         # labelled_queries via settings
    python -m training.intent --csv shop.csv --out runs          # query,label[,category]
    python -m training.intent --weak-labels --lr-grid 3e-5,1e-4  # add weak labels, tune lr

Candidates (--candidates), all on the same query-disjoint split:

    tfidf_lr   logistic regression on TF-IDF word and character n-grams
    embed_lr   logistic regression on frozen MiniLM sentence embeddings
    hybrid     one logistic regression on both side by side
    setfit     SetFit: the encoder tuned contrastively on query pairs, then logistic
               regression on its embeddings (`training.intent_fewshot`; not in the default
               list: it costs minutes on CPU, and pays on sets of a few hundred queries)
    finetune   the MiniLM fine-tune (two heads, early stopping on validation;
               `training.intent_finetune`)
    ensemble   the fine-tune's and tfidf_lr's probabilities averaged

The logistic regressions take their C from a grid, by validation macro-F1 (a fixed C leaves
30+ classes from a few examples each under-regularised). The one with the best validation
score ships; the test split is read once, for the report. A set of fewer than --cv-below
queries also gets a --cv-folds cross-validation of the candidates in the report
(`training.intent_cv`): one test split of a few hundred queries is noise.

Weak labels only ever go into the training split, so validation and test stay
human-labelled, and they are admitted only when they raise the winner's labelled validation
macro-F1: with --weak-labels every candidate is trained with and without them and the report
gives both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from governance.settings import get_settings
from training.bundles import INTENT_FEATURE_SERVICE, save_intent
from training.cli import parse_dataclass
from training.common import pick_device, run_dir, seed_everything, tb_writer
from training.intent_args import IntentTrainArgs
from training.intent_candidates import fit_candidates
from training.intent_cv import for_intent_job
from training.intent_data import load_csv, load_labelled, split_queries
from training.intent_finetune import score
from training.intent_model import IntentPredictor
from training.perturb import robustness
from training.report import plot_confusion, write_report
from training.weak_labels import rule_counts, weak_labels


@dataclass
class IntentSplit:
    """The labelled queries split by query text; validation and test stay human-labelled."""

    data: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    intents: list[str]


@dataclass
class Trial:
    """Every candidate trained on one training set (labelled only, or with weak labels),
    scored on the labelled validation and test splits; `winner` is the validation winner."""

    name: str
    train_rows: int
    weak_rows: int
    categories: list[str]
    candidates: dict[str, IntentPredictor]
    validation: dict[str, dict]
    test: dict[str, dict]
    winner: str
    fit_seconds: dict[str, float]
    tuning: list[dict]

    @property
    def val_macro_f1(self) -> float:
        """Labelled validation intent macro-F1 of this trial's winner."""
        return float(self.validation[self.winner]["intent"]["macro_f1"])

    def summary(self) -> dict:
        return {
            "winner": self.winner,
            "train_rows": self.train_rows,
            "weak_rows": self.weak_rows,
            "val_intent_macro_f1": self.val_macro_f1,
            "test_intent_macro_f1": self.test[self.winner]["intent"]["macro_f1"],
            "val_intent_macro_f1_by_candidate": {
                k: v["intent"]["macro_f1"] for k, v in self.validation.items()
            },
        }


@dataclass
class WeakLabelDecision:
    """Weak labels are admitted only when they raise the labelled validation macro-F1 of the
    winner; both trials are kept for the report."""

    admitted: bool
    without: Trial
    with_weak: Trial
    rules: dict[str, int]

    def asdict(self) -> dict:
        return {
            "admitted": self.admitted,
            "rule": "admitted only if the winner's labelled validation intent macro-F1 rises",
            "without": self.without.summary(),
            "with": self.with_weak.summary(),
            "val_macro_f1_gain": self.with_weak.val_macro_f1 - self.without.val_macro_f1,
            "rules": self.rules,
        }


@dataclass
class IntentResult:
    """The shipped predictor (the validation winner of the admitted trial), every candidate
    of that trial, their validation and test scores, robustness, report and tag."""

    predictor: IntentPredictor
    winner: str
    candidates: dict[str, IntentPredictor]
    validation: dict[str, dict]
    test: dict[str, dict]
    robustness: list
    lineage: dict
    folder: Path
    report: Path
    weak: WeakLabelDecision | None = None
    tag: str | None = None
    cross_validation: dict | None = None  # k-fold summary, for sets under --cv-below


def load_data(args: IntentTrainArgs, data: pd.DataFrame | None, settings) -> pd.DataFrame:
    if data is None:
        data = load_csv(args.csv) if args.csv else load_labelled(settings)
    return data.assign(category=data["category"].where(data["category"].notna(), None))


def make_split(args: IntentTrainArgs, data: pd.DataFrame) -> IntentSplit:
    train_df, val_df, test_df = split_queries(data, args.val_frac, args.test_frac, args.seed)
    return IntentSplit(data, train_df, val_df, test_df, sorted(data["intent"].unique().tolist()))


def usable_weak(weak: pd.DataFrame, split: IntentSplit) -> pd.DataFrame:
    """Weak rows that may join training: never a query held out for evaluation (its answer
    would leak), never an intent the labelled data does not have."""
    held = set(split.val["query"]) | set(split.test["query"])
    keep = ~weak["query"].isin(held) & weak["intent"].isin(split.intents)
    return weak[keep].reset_index(drop=True)


def run_trial(
    args: IntentTrainArgs,
    name: str,
    split: IntentSplit,
    weak: pd.DataFrame | None,
    device,
    writer,
) -> Trial:
    """Train every candidate on the labelled training split (plus `weak` rows), score them
    on the labelled validation and test splits, pick the validation winner."""
    train_df = split.train
    if weak is not None and len(weak):
        train_df = pd.concat([train_df, weak], ignore_index=True)
    train_df = train_df[train_df["intent"].isin(split.intents)].reset_index(drop=True)
    categories = sorted(set(split.data["category"].dropna()) | set(train_df["category"].dropna()))
    tag = "" if name == "labelled" else f"{name}_"
    preds, timings, tuning = fit_candidates(
        args, train_df, split.val, split.intents, categories, device, writer, tag
    )
    val_scores = {k: score(p, split.val) for k, p in preds.items()}
    winner = max(val_scores, key=lambda k: val_scores[k]["selection_score"])
    return Trial(
        name,
        len(train_df),
        int((train_df.get("source") == "weak").sum()) if "source" in train_df else 0,
        categories,
        preds,
        val_scores,
        {k: score(p, split.test) for k, p in preds.items()},
        winner,
        timings,
        tuning,
    )


def plot_confusions(folder: Path, trial: Trial, intents: list[str]) -> None:
    best = trial.test[trial.winner]
    plot_confusion(
        folder / "confusion_intent.png",
        best["intent"]["confusion"],
        intents,
        f"intent ({trial.winner}), test",
    )
    if "category" in best and len(trial.categories) <= 40:
        plot_confusion(
            folder / "confusion_category.png",
            best["category"]["confusion"],
            trial.categories,
            f"category ({trial.winner}), test",
        )


def intent_lineage(split: IntentSplit, shipped: Trial, weak_offered: int) -> dict:
    data = split.data
    return {
        "sources": sorted(data["source"].dropna().astype(str).unique().tolist())
        if "source" in data
        else [],
        "batch_ids": sorted(int(b) for b in data["batch_id"].dropna().unique())
        if "batch_id" in data
        else [],
        "rows": {
            "train": shipped.train_rows,
            "val": len(split.val),
            "test": len(split.test),
            "weak_offered": weak_offered,
            "weak_in_train": shipped.weak_rows,
        },
    }


def train(
    args: IntentTrainArgs,
    data: pd.DataFrame | None = None,
    settings=None,
    weak: pd.DataFrame | None = None,
) -> IntentResult:
    """Train every candidate, ship the validation winner, write the run report.

    With weak labels (--weak-labels, or `weak` given) the candidates are trained twice, on
    the labelled training split alone and with the weak rows added; the weak labels are
    admitted only if they raise the winner's labelled validation macro-F1."""
    t0 = time.time()
    data = load_data(args, data, settings)
    device = pick_device(args.device)
    seed_everything(args.seed)
    folder = run_dir(args.out_dir, "intent")
    writer = tb_writer(folder, args.tensorboard)
    split = make_split(args, data)
    shipped = run_trial(args, "labelled", split, None, device, writer)
    decision, weak_offered = None, 0
    if args.weak_labels or weak is not None:
        if weak is None:
            weak = weak_labels(settings)
        weak = usable_weak(weak, split)
        weak_offered = len(weak)
        seed_everything(args.seed)
        with_weak = run_trial(args, "weak", split, weak, device, writer)
        decision = WeakLabelDecision(
            admitted=with_weak.val_macro_f1 > shipped.val_macro_f1,
            without=shipped,
            with_weak=with_weak,
            rules=rule_counts(weak) if "rule" in weak and len(weak) else {},
        )
        shipped = with_weak if decision.admitted else shipped
    winner = shipped.winner
    # What typos, dropped words, casing and transliteration cost the shipped model (seeded).
    robust = robustness(
        lambda texts: [r["intent"] for r in shipped.candidates[winner].predict(texts)],
        split.test["query"].tolist(),
        split.test["intent"].tolist(),
        seed=args.seed,
        label_set=split.intents,
    )
    # A small set's one test split is noise: its report also gives k-fold means and intervals.
    cross_validation = for_intent_job(split.data, args)
    plot_confusions(folder, shipped, split.intents)
    lineage = intent_lineage(split, shipped, weak_offered)
    body = {
        "args": args,
        "winner": winner,
        "feature_service": INTENT_FEATURE_SERVICE,
        "intents": split.intents,
        "categories": shipped.categories,
        "validation": shipped.validation,
        "test": shipped.test,
        "robustness": robust,
        "cross_validation": cross_validation,
        "weak_labels": decision.asdict() if decision else None,
        "tuning": shipped.tuning,
        "fit_seconds": shipped.fit_seconds,
        "lineage": lineage,
        "device": str(device),
        "wall_seconds": time.time() - t0,
    }
    report = write_report(folder, "intent", body)
    if writer:
        writer.close()
    result = IntentResult(
        predictor=shipped.candidates[winner],
        winner=winner,
        candidates=shipped.candidates,
        validation=shipped.validation,
        test=shipped.test,
        robustness=robust,
        lineage=lineage,
        folder=folder,
        report=report,
        weak=decision,
        cross_validation=cross_validation,
    )
    if args.save_model:
        result.tag = save_intent(
            result.predictor,
            metrics={"validation": shipped.validation[winner], "test": shipped.test[winner]},
            lineage=lineage,
        )
    return result


def main(argv: list[str] | None = None) -> IntentResult:
    args = parse_dataclass(IntentTrainArgs, argv, "python -m training.intent", __doc__)
    res = train(args, settings=None if args.csv else get_settings())
    print(f"winner: {res.winner}  report: {res.report}")
    if res.weak:
        w = res.weak.asdict()
        print(
            f"weak labels {'admitted' if res.weak.admitted else 'refused'}: labelled validation "
            f"macro-F1 {w['without']['val_intent_macro_f1']:.4f} without, "
            f"{w['with']['val_intent_macro_f1']:.4f} with ({w['with']['weak_rows']} weak rows)"
        )
    for k, v in res.validation.items():
        print(
            f"  {k:9s} val score {v['selection_score']:.4f}  "
            f"test intent acc {res.test[k]['intent']['accuracy']:.4f} "
            f"macro-F1 {res.test[k]['intent']['macro_f1']:.4f}"
        )
    for row in res.robustness:
        print(f"  winner, test {row.perturbation:13s} intent macro-F1 {row.macro_f1:.4f}")
    if res.cross_validation:
        cv = res.cross_validation
        print(f"  {cv['folds']}-fold cross-validation, test intent macro-F1 (mean, t interval):")
        for name, ci in cv["summary"].test.items():
            print(f"    {name:15s} {ci}")
        print(f"    validation winner {cv['summary'].shipped}")
    return res


if __name__ == "__main__":
    main()
