"""One prepared run of issue 11's models at full size on a GPU (bf16 autocast on CUDA), with
samples per second and metrics; at --size tiny it runs on CPU in a minute or two.

    python -m benchmarks.gpu_models --out OUT                      # full size, CUDA if present
    python -m benchmarks.gpu_models --out OUT --size tiny          # smoke run, any machine
    python -m benchmarks.gpu_models --out OUT --retail FILE.csv.gz # add Online Retail

Steps, each timed on its own and written to OUT/gpu_models.json as it finishes (a run cut
short by a time limit keeps what it measured):
    simulate    the simulator at the demo preset (tiny: the tiny preset, hard queries)
    intent_cv   5-fold intent CV on the simulator's labelled queries: TF-IDF, tuned
                embedding LR, hybrid, SetFit (contrastive pairs per second on the device)
                and the classifier fine-tune
    sessions    next-item Recall/MRR@20 on the simulator's sessions
    retail      LightGBM LambdaRank vs own-most-bought + popularity at both cut-offs
                (only with --retail; LightGBM runs on the CPU cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from governance.online_retail import load_online_retail
from governance.simulate import simulate
from governance.simulate.config import preset
from training import intent_cv, retail_ranker, sessions
from training.common import to_jsonable

SIZES = {
    "full": dict(
        sim="demo",
        folds=5,
        setfit_max_pairs=20000,
        setfit_pairs=20,
        finetune_steps=600,
        queries=None,
    ),
    "tiny": dict(
        sim="tiny", folds=2, setfit_max_pairs=16, setfit_pairs=2, finetune_steps=4, queries=200
    ),
}


def _step(results: dict, out: Path, name: str, fn):
    t = time.perf_counter()
    value = fn()
    value["wall_seconds"] = round(time.perf_counter() - t, 2)
    results[name] = value
    (out / "gpu_models.json").write_text(json.dumps(to_jsonable(results), indent=2))
    print(f"{name}: {value['wall_seconds']} s", flush=True)
    return value


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for results and runs")
    ap.add_argument("--size", choices=sorted(SIZES), default="full", help="(default: full)")
    ap.add_argument("--retail", default=None, help="Online Retail CSV (default: skip retail)")
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    results: dict = {
        "size": args.size,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "precision": "bf16 autocast" if cuda else "fp32",
    }
    sim = out / "sim"
    cfg = preset(size["sim"], query_style="hard")
    _step(results, out, "simulate", lambda: {"summary": simulate(cfg, sim, progress=False)})

    def intent():
        q = pd.read_csv(sim / "labelled_queries.csv.gz").dropna(subset=["query", "intent"])
        if size["queries"]:  # the simulator labels at least 2,000; tiny keeps a sample
            q = q.sample(n=min(len(q), size["queries"]), random_state=0)
        path = out / "intent.csv"
        q.rename(columns={"intent": "label"})[["query", "label"]].to_csv(path, index=False)
        res = intent_cv.main(
            [
                "--csv", str(path), "--folds", str(size["folds"]),
                "--setfit-max-pairs", str(size["setfit_max_pairs"]),
                "--setfit-pairs", str(size["setfit_pairs"]),
                "--finetune-steps", str(size["finetune_steps"]), "--out-dir", str(out / "runs"),
            ]
        )  # fmt: skip
        fits = [f.setfit for f in res["folds"] if f.setfit]
        return {
            "summary": res["summary"],
            "setfit_pairs_per_s": sum(f["pairs"] for f in fits)
            / max(sum(f["seconds"] for f in fits), 1e-9),
        }

    _step(results, out, "intent_cv", intent)
    _step(
        results,
        out,
        "sessions",
        lambda: {
            "test": sessions.run(
                sessions.load_sim(sim), sessions.SessionArgs(out_dir=str(out / "runs"))
            )["test"]
        },
    )
    if args.retail:
        batch = load_online_retail(args.retail)
        ev = batch.events[batch.events["event_type"] == "purchase"]
        purchases = ev[["user_id", "item_id", "event_ts", "quantity"]]
        for cut in ("2011-11-01", "2011-11-09"):

            def retail(cut=cut):
                a = retail_ranker.RetailRankerArgs(cutoff=cut, out_dir=str(out / "runs"))
                res = retail_ranker.run(purchases, a, progress=False)
                return {k: res[k] for k in ("ships", "validation", "test", "candidate_recall")}

            _step(results, out, f"retail_{cut}", retail)
    return results


if __name__ == "__main__":
    main()
