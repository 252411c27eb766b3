"""Closed-loop simulation: the simulator's users ask the running service for recommendations
and click on what it serves, following the simulator's own ground-truth click model.

    python -m training.closed_loop --url http://127.0.0.1:3000 --sim data/sim --requests 400

The truth comes from a simulator output folder (`truth/users.parquet`, `truth/items.parquet`,
`truth/model.json`): each user's leaf affinities and price preference, each item's quality,
and the click model p = sigmoid(b0 + b_aff*affinity + b_price*price_fit + b_qual*quality
+ b_rel*relevant - b_pos*log1p(position)) (relevant = 0 on recommendation lists).

Per request: a (non-bot) user is drawn, `/recommend` answers with a list, its `list_id` and
the variant the service assigned; each served position is clicked with its true probability,
and the clicks go back to `/events` with the list id, so they join the served list like a
shop's clicks would. The oracle's CTR on the same request is the expected CTR of the k items
of the whole catalogue with the highest true click probability for that user, in that order.

Per variant the result gives the realised online CTR (with a 95% interval over lists), the
expected CTR of what was served (the same quantity without the click noise) and the oracle's
CTR on the same requests.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from training.cli import from_namespace, parser_for
from training.online_report import Estimate, ratio_estimate


@dataclass
class ClosedLoopArgs:
    url: str = field(metadata={"help": "base URL of the running cartwise service"})
    sim: Path = field(metadata={"help": "simulator output folder (its truth/ is read)"})
    requests: int = field(default=400, metadata={"help": "recommendation requests to send"})
    k: int = field(default=8, metadata={"help": "list length asked for"})
    seed: int = field(default=0, metadata={"help": "seed of users and clicks"})
    token: str | None = field(
        default=None, metadata={"help": "events token (default: CARTWISE_EVENTS_TOKEN)"}
    )
    api_key: str | None = field(
        default=None, metadata={"help": "X-API-Key of the reads (default: CARTWISE_API_KEY)"}
    )
    timeout_s: float = field(default=10.0, metadata={"help": "per-request timeout, seconds"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    wait_ready: float = field(
        default=0.0, metadata={"help": "wait up to this many seconds for the service first"}
    )


@dataclass
class Truth:
    user_ids: np.ndarray
    user_pref: np.ndarray  # users x leaves
    user_price_pref: np.ndarray
    item_ids: np.ndarray
    item_leaf: np.ndarray
    item_quality: np.ndarray
    item_log_price_gap: np.ndarray  # ln(price) - ln(leaf median)
    params: dict

    @classmethod
    def load(cls, sim: Path, known_items=None) -> Truth:
        truth = Path(sim) / "truth"
        model = json.loads((truth / "model.json").read_text())
        users = pd.read_parquet(truth / "users.parquet")
        users = users[~users["is_bot"]].reset_index(drop=True)
        items = pd.read_parquet(truth / "items.parquet")
        if known_items is not None:
            items = items[items["item_id"].isin(set(known_items))].reset_index(drop=True)
        medians = np.array([c["median_price"] for c in model["category_tree"]], np.float64)
        leaf = items["leaf"].to_numpy(np.int64)
        return cls(
            user_ids=users["user_id"].to_numpy(str),
            user_pref=np.stack(users["leaf_affinity"].to_numpy()).astype(np.float64),
            user_price_pref=users["price_pref"].to_numpy(np.float64),
            item_ids=items["item_id"].to_numpy(str),
            item_leaf=leaf,
            item_quality=items["quality"].to_numpy(np.float64),
            item_log_price_gap=np.log(items["price"].to_numpy(np.float64)) - np.log(medians[leaf]),
            params=model["click_model"]["params"],
        )

    def p_click(self, user: int, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """True click probabilities of catalogue rows `items` shown at `positions`."""
        c = self.params
        affinity = self.user_pref[user, self.item_leaf[items]]
        gap = (self.item_log_price_gap[items] - self.user_price_pref[user]) / c["price_width"]
        logit = (
            c["b0"]
            + c["b_aff"] * affinity
            + c["b_price"] * np.exp(-0.5 * gap**2)
            + c["b_qual"] * self.item_quality[items]
            - c["b_pos"] * np.log1p(positions)
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def oracle_expected_clicks(self, user: int, k: int) -> float:
        """Expected clicks of the best k items for this user, best first."""
        everything = np.arange(len(self.item_ids))
        p0 = self.p_click(user, everything, np.zeros(len(everything)))
        best = everything[np.argsort(-p0, kind="stable")[:k]]
        return float(self.p_click(user, best, np.arange(len(best))).sum())


@dataclass
class VariantResult:
    variant: str
    model: str
    requests: int
    impressions: int
    clicks: int
    ctr: Estimate  # realised clicks / impressions, 95% interval over lists
    expected_ctr: float  # mean true p(click) of what was served
    oracle_ctr: float  # mean true p(click) of the oracle's lists on the same requests

    @property
    def ratio_to_oracle(self) -> float:
        return self.ctr.value / self.oracle_ctr if self.oracle_ctr else float("nan")


@dataclass
class ClosedLoopResult:
    variants: list[VariantResult]
    requests: int
    failed_requests: int
    events_sent: int
    wall_s: float

    def by_variant(self) -> dict[str, VariantResult]:
        return {v.variant: v for v in self.variants}

    def text(self) -> str:
        lines = [
            f"closed loop: {self.requests} requests ({self.failed_requests} failed), "
            f"{self.events_sent} click events, {self.wall_s:.1f} s",
            f"{'variant':<12} {'model':<34} {'lists':>5} {'CTR [95% CI]':>26} "
            f"{'expected':>9} {'oracle':>7} {'CTR/oracle':>10}",
        ]
        for v in self.variants:
            lines.append(
                f"{v.variant:<12} {v.model[:34]:<34} {v.requests:>5} {v.ctr.text():>26} "
                f"{v.expected_ctr:>9.4f} {v.oracle_ctr:>7.4f} {v.ratio_to_oracle:>10.3f}"
            )
        return "\n".join(lines)


def _click_events(user: str, list_id: str, clicked: list[tuple[int, str]]) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"cl-{uuid.uuid4().hex}",
            "user_id": user,
            "session_id": f"cl-{list_id[:16]}",
            "event_type": "click",
            "item_id": item,
            "position": pos,
            "list_id": list_id,
            "event_ts": now,
        }
        for pos, item in clicked
    ]


def wait_ready(url: str, timeout_s: float, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = httpx.post(f"{url.rstrip('/')}/status", json={}, timeout=5, headers=headers)
            if status.json().get("ready"):
                return
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the service at {url} was not ready within {timeout_s:.0f} s")
        time.sleep(1)


def run(args: ClosedLoopArgs, truth: Truth | None = None) -> ClosedLoopResult:
    api_key = args.api_key or os.environ.get("CARTWISE_API_KEY", "cartwise-dev-api-key")
    read = {"X-API-Key": api_key}
    if args.wait_ready:
        wait_ready(args.url, args.wait_ready, read)

    truth = truth or Truth.load(args.sim)
    rng = np.random.default_rng(args.seed)
    row_of = {item: n for n, item in enumerate(truth.item_ids)}
    token = args.token or os.environ.get("CARTWISE_EVENTS_TOKEN", "cartwise-dev-token")
    per_list: dict[tuple[str, str], list[tuple[int, int, float, float]]] = {}
    failed = sent = 0
    t0 = time.monotonic()
    with httpx.Client(base_url=args.url, timeout=args.timeout_s, headers=read) as client:
        for _ in tqdm(range(args.requests), desc="closed loop", disable=not args.progress):
            u = int(rng.integers(len(truth.user_ids)))
            user = str(truth.user_ids[u])
            r = client.post("/recommend", json={"user_id": user, "k": args.k})
            if r.status_code != 200:
                failed += 1
                continue
            body = r.json()
            shown = [(n, row_of.get(i["item_id"])) for n, i in enumerate(body["items"])]
            shown = [(n, row) for n, row in shown if row is not None]
            if not shown:
                failed += 1
                continue
            pos = np.array([n for n, _ in shown])
            p = truth.p_click(u, np.array([row for _, row in shown]), pos)
            clicks = rng.random(len(p)) < p
            clicked = [
                (int(n), str(truth.item_ids[row])) for (n, row), c in zip(shown, clicks) if c
            ]
            if clicked:
                e = client.post(
                    "/events",
                    json={"events": _click_events(user, body["list_id"], clicked)},
                    headers={"Authorization": f"Bearer {token}"},
                )
                sent += len(clicked) if e.status_code == 200 else 0
            key = (body.get("variant") or "default", body.get("ranker") or "")
            per_list.setdefault(key, []).append(
                (len(p), int(clicks.sum()), float(p.sum()), truth.oracle_expected_clicks(u, len(p)))
            )
    variants = []
    for (variant, model), lists in sorted(per_list.items()):
        a = np.array(lists, np.float64)
        variants.append(
            VariantResult(
                variant=variant,
                model=model,
                requests=len(a),
                impressions=int(a[:, 0].sum()),
                clicks=int(a[:, 1].sum()),
                ctr=ratio_estimate(a[:, 1], a[:, 0]),
                expected_ctr=float(a[:, 2].sum() / a[:, 0].sum()),
                oracle_ctr=float(a[:, 3].sum() / a[:, 0].sum()),
            )
        )
    return ClosedLoopResult(variants, args.requests, failed, sent, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> ClosedLoopResult:
    p = parser_for(
        ClosedLoopArgs,
        "python -m training.closed_loop",
        "Send the simulator's users to the running service; click by the truth.",
    )
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    ns = p.parse_args(argv)
    out_json = ns.json
    args = from_namespace(ClosedLoopArgs, ns)
    result = run(args)
    print(result.text())
    if out_json:
        Path(out_json).write_text(json.dumps(asdict(result), indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
