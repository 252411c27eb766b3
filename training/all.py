"""Train every cartwise model from the stores and print the headline numbers.

    python -m training.all                                   # everything, full sizes
    python -m training.all --intent-max-steps 150 --ranker-list-sample 0.3 --ranker-epochs 4
    python -m training.all --only ranker --truth data/sim/truth/impressions.parquet
    python -m training.all --help

Reads only the stores: labelled queries, events and ingest batches from PostgreSQL
(DATABASE_URL or the embedded database, as every cartwise program), the ranker's training set
through the Feast registry and offline store (feature service ranker_v3; run
`python -m features.pipeline` and `python -m features.feast_cli apply` first), and writes the
intent model and the ranker to the BentoML model store (BENTOML_HOME) with their feature
service and lineage. `--truth` (the simulator's impressions.parquet) only adds the oracle AUC
to the ranker's report; nothing is trained on it.

Jobs:
    intent   labelled_queries (+ weak labels with --intent-weak-labels): TF-IDF LR,
             frozen-MiniLM LR, the two side by side (hybrid), MiniLM fine-tune and the
             fine-tune/TF-IDF ensemble; the validation winner ships
    ranker   DCN-v2 on ranker_v3 (--ranker-feature-service) over the clean impressions,
             time split, vs popularity and
             logistic regression on the same features
    retail   Online Retail next-purchase ranking on the events of source online_retail
             (skipped when that source has no purchases)

Every size is a flag, so a demo on 2 CPUs runs in minutes; each job writes its report under
--out-dir and the run's summary goes to <out-dir>/all-<time>/summary.json.
"""

from __future__ import annotations

import argparse
import time

from governance.settings import get_settings
from training import intent, ranker, retail
from training.cli import add_arguments, from_namespace
from training.common import run_dir, write_json

JOBS = ("intent", "ranker", "retail")
# Settings every job shares: one flag each, passed to every job's own argument dataclass.
SHARED = ("out_dir", "seed", "tensorboard", "save_model")


def _parser() -> argparse.ArgumentParser:
    """The jobs' own argument dataclasses under a prefix (--intent-epochs, --ranker-epochs):
    every default is the job's own, written once in its dataclass."""
    p = argparse.ArgumentParser(
        prog="python -m training.all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only", default=",".join(JOBS), help=f"comma list of jobs to run (default: all of {JOBS})"
    )
    p.add_argument("--out-dir", default="runs", help="folder for every job's run (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="random seed of every job (default: 0)")
    p.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TensorBoard logs in each job's run folder (default: on)",
    )
    p.add_argument(
        "--save-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put the intent model and the ranker in the BentoML model store (default: on)",
    )
    p.add_argument(
        "--truth",
        default=None,
        help="simulator truth impressions.parquet: adds the oracle AUCs to the ranker's report",
    )
    add_arguments(p.add_argument_group("intent"), intent.IntentTrainArgs, "intent_", SHARED)
    skip = (*SHARED, "frame", "feast", "truth")
    add_arguments(p.add_argument_group("ranker"), ranker.RankerTrainArgs, "ranker_", skip)
    skip = (*SHARED, "purchases", "from_db")
    add_arguments(p.add_argument_group("retail"), retail.RetailArgs, "retail_", skip)
    return p


def _shared(ns: argparse.Namespace, *names: str) -> dict:
    return {k: getattr(ns, k) for k in names}


def run_intent(ns) -> dict:
    args = from_namespace(intent.IntentTrainArgs, ns, "intent_", **_shared(ns, *SHARED))
    res = intent.train(args, settings=get_settings())
    out = {"shipped": res.winner, "tag": res.tag, "report": str(res.report)}
    for k in res.validation:
        out[k] = {
            "val_score": res.validation[k]["selection_score"],
            "test_intent_macro_f1": res.test[k]["intent"]["macro_f1"],
            "test_intent_accuracy": res.test[k]["intent"]["accuracy"],
        }
    out["rows"] = res.lineage["rows"]
    if res.weak:
        out["weak_labels"] = {k: v for k, v in res.weak.asdict().items() if k != "rules"}
    return out


def run_ranker(ns) -> dict:
    args = from_namespace(
        ranker.RankerTrainArgs, ns, "ranker_", feast="", truth=ns.truth, **_shared(ns, *SHARED)
    )
    res = ranker.train(args)
    keep = (
        "auc",
        "logloss",
        "pr_auc",
        "ndcg@10",
        "recall@20",
        "events_matched",
        "auc_fraction_of_position_free_oracle",
    )
    return {
        "tag": res.tag,
        "shipped": res.shipped,
        "ship_gate": res.gate.reason(),
        "report": str(res.report),
        "rows": res.lineage["rows"],
        "batch_ids": len(res.lineage["batch_ids"]),
        "train_samples_per_s": res.train_samples_per_s,
        "data_seconds": res.data_seconds,
        "train_seconds": res.train_seconds,
        **{name: {k: v for k, v in m.items() if k in keep} for name, m in res.test.items()},
    }


def run_retail(ns) -> dict | None:
    args = from_namespace(
        retail.RetailArgs, ns, "retail_", out_dir=ns.out_dir, from_db=True, purchases=None
    )
    purchases = retail.purchases_from_db(None, args.source)
    if purchases.empty:
        return None
    res = retail.run(purchases, args)
    return {
        "cutoff": str(res["cutoff"]),
        "weights": list(res["weights"]),
        "report": str(res["folder"] / "report.json"),
        "winner": res["winner_by_ndcg"],
        **{name: m["all"] for name, m in res["methods"].items()},
    }


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def headline(summary: dict) -> str:
    lines = []
    if (i := summary.get("intent")) is not None:
        lines.append(f"intent  shipped={i['shipped']}  ({i['tag'] or 'not saved'})")
        for k, v in i.items():
            if isinstance(v, dict) and "val_score" in v:
                lines.append(
                    f"  {k:18s} val {_fmt(v['val_score'])}  test macro-F1 "
                    f"{_fmt(v['test_intent_macro_f1'])}  acc "
                    f"{_fmt(v['test_intent_accuracy'])}"
                )
    if (r := summary.get("ranker")) is not None:
        lines.append(
            f"ranker  rows={r['rows']}  {r['train_samples_per_s']:.0f} samples/s  "
            f"({r['tag'] or 'not saved'})"
        )
        for k in ("model", "logreg", "popularity", "oracle"):
            if k in r:
                lines.append(f"  {k:18s} " + "  ".join(f"{m} {_fmt(v)}" for m, v in r[k].items()))
    if "retail" in summary:
        t = summary["retail"]
        if t is None:
            lines.append("retail  skipped: no online_retail purchases in the database")
        else:
            lines.append(f"retail  cutoff {t['cutoff']}  weights {t['weights']}")
            for k in ("copurchase_repeat", "own_top_popularity", "recent_popularity"):
                lines.append(
                    f"  {k:18s} recall@20 {_fmt(t[k]['recall@20'])}  ndcg@10 "
                    f"{_fmt(t[k]['ndcg@10'])}  customers {t[k]['customers']}"
                )
    lines.append(
        "wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["wall_seconds"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ns = _parser().parse_args(argv)
    jobs = [j for j in ns.only.split(",") if j]
    unknown = set(jobs) - set(JOBS)
    if unknown:
        raise SystemExit(f"unknown jobs {sorted(unknown)}; choose from {JOBS}")

    summary: dict = {"wall_seconds": {}}
    for job in JOBS:
        if job in jobs:
            t = time.time()
            summary[job] = {"intent": run_intent, "ranker": run_ranker, "retail": run_retail}[job](
                ns
            )
            summary["wall_seconds"][job] = time.time() - t
    folder = run_dir(ns.out_dir, "all")
    write_json(folder / "summary.json", summary)
    print(headline(summary))
    print(f"summary: {folder / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
