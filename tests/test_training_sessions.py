"""training.sessions on a hand-made log whose answers are known, and on a tiny simulator run."""

import numpy as np
import pandas as pd
import pytest

from training import sessions

# Training sessions (early): A->B three times, D->E once, X->Y four times, so popularity
# ranks X and Y first while the co-occurrence of A is B. Test sessions (latest): A->B, D->E.
LOG = [
    ("t1", ["A", "B"]),
    ("t2", ["A", "A", "B"]),  # a reload of A is not a new choice
    ("t3", ["A", "B"]),
    ("t4", ["D", "E"]),
    ("t5", ["X", "Y"]),
    ("t6", ["X", "Y"]),
    ("t7", ["X", "Y"]),
    ("t8", ["X", "Y"]),
    ("z1", ["A", "B"]),
    ("z2", ["D", "E"]),
]
CATEGORY = {"A": "a", "B": "a", "D": "d", "E": "d", "X": "x", "Y": "x"}


def _frame():
    rows, t = [], pd.Timestamp("2026-01-01", tz="UTC")
    for sid, items in LOG:
        for item in items:
            t += pd.Timedelta(minutes=1)
            rows.append((sid, item, t.isoformat(), CATEGORY[item]))
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp", "category"])


def test_prepare_collapses_repeats_and_splits_by_time():
    s = sessions.prepare(_frame())
    assert [len(q) for q in s.seqs] == [2] * 10
    train, val, test = sessions.split_by_time(s, val_frac=0.0, test_frac=0.2)
    assert sorted(s.items[s.seqs[i][-1]] for i in test) == ["B", "E"]
    assert len(train) == 8 and len(val) == 0


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # method: (Recall@k, MRR@k) on the two test sessions, worked out by hand.
        (1, {"popularity": (0, 0), "cooccurrence": (1, 1), "covisitation": (1, 1)}),
        # Category affinity: A/B and D/E tie on popularity inside their category, and a tie
        # ranks the target last, so rank 2 each time.
        (2, {"popularity": (0, 0), "category_affinity": (1, 0.5), "similar_items": (1, 1)}),
    ],
)
def test_known_answers(tmp_path, k, expected):
    path = tmp_path / "log.csv"
    _frame().to_csv(path, index=False)
    res = sessions.main(
        [
            "--csv",
            str(path),
            "--val-frac",
            "0",
            "--test-frac",
            "0.2",
            "--k",
            str(k),
            "--out-dir",
            str(tmp_path),
            "--n-boot",
            "50",
        ]
    )
    assert res["sessions"]["test"] == 2
    for name, (recall, mrr) in expected.items():
        assert res["test"][name].recall.mean == pytest.approx(recall), name
        assert res["test"][name].mrr.mean == pytest.approx(mrr), name
    assert (res["folder"] / "report.json").exists()


def test_missing_columns_say_what_is_needed(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"session": [1], "item_id": ["A"]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="session_id,item_id,timestamp"):
        sessions.main(["--csv", str(path), "--out-dir", str(tmp_path)])


def test_simulator_sessions(tmp_path):
    from governance.simulate import SimConfig, simulate

    simulate(SimConfig(seed=3, events=20_000, days=4), tmp_path / "sim", progress=False)
    df = sessions.load_sim(tmp_path / "sim")
    assert {"session_id", "item_id", "timestamp", "category"} <= set(df.columns)
    res = sessions.run(df, sessions.SessionArgs(out_dir=str(tmp_path), n_boot=50))
    rec = {n: r.recall.mean for n, r in res["test"].items()}
    assert res["sessions"]["test"] > 50
    assert set(rec) >= {"popularity", "cooccurrence", "covisitation", "blend"}
    assert all(0.0 <= v <= 1.0 for v in rec.values())
    assert np.isfinite(res["test"]["blend"].recall_ratio_to_popularity.mean)
