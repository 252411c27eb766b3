"""Train every cartwise model from the stores and print the headline numbers.

    python -m training.all                                   # everything, full sizes
    python -m training.all --intent-max-steps 150 --ranker-list-sample 0.3 --ranker-epochs 4
    python -m training.all --only ranker --truth data/sim/truth/impressions.parquet
    python -m training.all --help

Reads only the stores: labelled queries, events and ingest batches from PostgreSQL
(DATABASE_URL or the embedded database, as every cartwise program), the ranker's training set
through the Feast registry and offline store (feature service ranker_v2; run
`python -m features.pipeline` and `python -m features.feast_cli apply` first), and writes the
intent model and the ranker to the BentoML model store (BENTOML_HOME) with their feature
service and lineage. `--truth` (the simulator's impressions.parquet) only adds the oracle AUC
to the ranker's report; nothing is trained on it.

Jobs:
    intent   labelled_queries (+ weak labels from events with --weak-labels): TF-IDF LR,
             frozen-MiniLM LR, MiniLM fine-tune and the fine-tune/TF-IDF ensemble; the
             validation winner ships
    ranker   DCN-v2 on ranker_v2 (--ranker-feature-service) over the clean impressions,
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

JOBS = ("intent", "ranker", "retail")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", default=",".join(JOBS), help="comma list of jobs to run")
    p.add_argument("--out-dir", default="runs")
    p.add_argument(
        "--save-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put the intent model and the ranker in the BentoML model store",
    )
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("intent")
    # Off by default: on simulator data the behaviour rules' intents contradict the labelled
    # ones and outnumber them ~7:1, which took every model's intent macro-F1 to near chance.
    g.add_argument(
        "--weak-labels",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add weak labels from search sessions to the training split",
    )
    g.add_argument("--intent-epochs", type=int, default=3)
    g.add_argument("--intent-max-steps", type=int, default=0, help="0 = no cap")
    g.add_argument("--intent-lr-grid", default="5e-5")
    g.add_argument("--intent-batch-size", type=int, default=32)
    g.add_argument("--intent-candidates", default="tfidf_lr,embed_lr,finetune,ensemble")
    g = p.add_argument_group("ranker")
    g.add_argument(
        "--ranker-feature-service",
        default="ranker_v2",
        help="the Feast feature service: the model's train/serve contract",
    )
    g.add_argument(
        "--ranker-list-sample",
        type=float,
        default=1.0,
        help="share of request lists in the training set",
    )
    g.add_argument("--ranker-start", default=None)
    g.add_argument("--ranker-end", default=None)
    g.add_argument("--ranker-epochs", type=int, default=8)
    g.add_argument("--ranker-batch-size", type=int, default=512)
    g.add_argument("--ranker-lr", type=float, default=1e-3)
    g.add_argument("--ranker-emb-dim", type=int, default=16)
    g.add_argument("--ranker-deep", default="256,128")
    g.add_argument("--truth", default=None, help="simulator impressions.parquet: oracle AUC")
    g = p.add_argument_group("retail")
    g.add_argument("--retail-cutoff", default=None, help="YYYY-MM-DD; default: 80%% of the data")
    g.add_argument("--retail-source", default="online_retail")
    return p


def run_intent(ns) -> dict:
    from governance.settings import get_settings
    from training.intent import IntentTrainArgs, train

    args = IntentTrainArgs(
        out_dir=ns.out_dir,
        weak_labels=ns.weak_labels,
        epochs=ns.intent_epochs,
        max_steps=ns.intent_max_steps,
        batch_size=ns.intent_batch_size,
        lr_grid=tuple(float(x) for x in ns.intent_lr_grid.split(",") if x),
        candidates=tuple(x for x in ns.intent_candidates.split(",") if x),
        seed=ns.seed,
        tensorboard=False,
        save_model=ns.save_model,
    )
    res = train(args, settings=get_settings())
    out = {"shipped": res["winner"], "tag": res.get("tag"), "report": str(res["report"])}
    for k in res["validation"]:
        out[k] = {
            "val_score": res["validation"][k]["selection_score"],
            "test_intent_macro_f1": res["test"][k]["intent"]["macro_f1"],
            "test_intent_accuracy": res["test"][k]["intent"]["accuracy"],
        }
    out["rows"] = res["lineage"]["rows"]
    return out


def run_ranker(ns) -> dict:
    from training.ranker import RankerTrainArgs, train

    args = RankerTrainArgs(
        feast="",
        feature_service=ns.ranker_feature_service,
        start=ns.ranker_start,
        end=ns.ranker_end,
        list_sample=ns.ranker_list_sample,
        truth=ns.truth,
        out_dir=ns.out_dir,
        epochs=ns.ranker_epochs,
        batch_size=ns.ranker_batch_size,
        lr=ns.ranker_lr,
        emb_dim=ns.ranker_emb_dim,
        deep=ns.ranker_deep,
        seed=ns.seed,
        tensorboard=False,
        save_model=ns.save_model,
    )
    res = train(args)
    keep = ("auc", "logloss", "pr_auc", "ndcg@10", "recall@20", "events_matched")
    return {
        "tag": res.get("tag"),
        "report": str(res["report"]),
        "rows": res["lineage"]["rows"],
        "batch_ids": len(res["lineage"]["batch_ids"]),
        "train_samples_per_s": res["train_samples_per_s"],
        "data_seconds": res["data_seconds"],
        "train_seconds": res["train_seconds"],
        **{name: {k: v for k, v in m.items() if k in keep} for name, m in res["test"].items()},
    }


def run_retail(ns) -> dict | None:
    from training.retail import RetailArgs, purchases_from_db, run

    purchases = purchases_from_db(None, ns.retail_source)
    if purchases.empty:
        return None
    res = run(
        purchases,
        RetailArgs(
            cutoff=ns.retail_cutoff, out_dir=ns.out_dir, from_db=True, source=ns.retail_source
        ),
    )
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
    from training.common import run_dir, write_json

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
