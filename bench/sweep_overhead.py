"""Ray Tune's cost in ``aecore sweep`` (bench/RESULTS.md, "Sweeps on Ray Tune").

1. Trials per minute at h=64: ``aecore sweep --seed 0,..,N-1 --cpus-per-trial 1`` against the
   same N runs one by one with ``aecore train`` (each a fresh process, as a user would run them).
2. Ray's own overhead, with an empty trainable (no aecore): start-up + shutdown of a local
   instance, the cost per trial (actor start with and without reuse), the cost per report.

    python bench/sweep_overhead.py [--trials 4] [--epochs 2] [--limit 10000] [--num-cpus 2]
                                   [--rounds 1] [--no-overhead]

Needs the ``aecore[sweep]`` extra and the data ($AECORE_DATA). Prints a JSON line per result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AECORE = [sys.executable, "-c", "from aecore.cli.main import main; main()"]


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def trials_per_minute(args, tmp: Path, env) -> dict:
    """One round: the sweep, then the same runs with aecore train (rounds alternate, so both
    see the same share of a busy machine)."""
    tmp.mkdir(parents=True)
    common = ["--hidden", "64", "--epochs", str(args.epochs), "--limit", str(args.limit)]
    seeds = ",".join(map(str, range(args.trials)))
    sweep_s = timed([*AECORE, "sweep", *common, "--seed", seeds, "--cpus-per-trial", "1",
                     "--num-cpus", str(args.num_cpus), "--device", "cpu", "--out",
                     str(tmp / "sweep")], env)
    own = [json.loads((d / "summary.json").read_text())["wall_time_s"]
           for d in (tmp / "sweep").glob("h64-*")]
    one_by_one = [timed([*AECORE, "train", *common, "--seed", str(s), "--device", "cpu",
                         "--out", str(tmp / f"train{s}")], env) for s in range(args.trials)]
    own_train = [json.loads((tmp / f"train{s}" / "h64-adam" / "summary.json").read_text())
                 ["wall_time_s"] for s in range(args.trials)]
    return {"what": "h64 trials per minute", "trials": args.trials, "epochs": args.epochs,
            "limit": args.limit, "num_cpus": args.num_cpus,
            "sweep_wall_s": round(sweep_s, 2),
            "sweep_trials_per_min": round(60 * args.trials / sweep_s, 2),
            "sweep_trial_own_wall_s": [round(x, 2) for x in sorted(own)],
            "train_one_by_one_wall_s": [round(x, 2) for x in one_by_one],
            "train_trials_per_min": round(60 * args.trials / sum(one_by_one), 2),
            "train_own_wall_s": [round(x, 2) for x in own_train]}


def _empty_trial(config):
    from ray import tune

    for i in range(config["reports"]):
        tune.report({"i": i})


def ray_overhead(args, tmp: Path) -> list[dict]:
    import ray
    from ray import tune

    out = []
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    out.append({"what": "ray.init local", "s": round(time.perf_counter() - t0, 2)})
    try:
        n = 8
        for reuse in (False, True):
            for reports in (1, 101):
                t0 = time.perf_counter()
                tune.Tuner(tune.with_resources(_empty_trial, {"cpu": 1}),
                           param_space={"reports": reports, "k": tune.grid_search(list(range(n)))},
                           tune_config=tune.TuneConfig(reuse_actors=reuse),
                           run_config=tune.RunConfig(storage_path=str(tmp / "tune"), verbose=0,
                                                     name=f"r{reuse}{reports}")).fit()
                out.append({"what": "empty trials", "trials": n, "reports_each": reports,
                            "reuse_actors": reuse, "s": round(time.perf_counter() - t0, 2)})
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        out.append({"what": "ray.shutdown", "s": round(time.perf_counter() - t0, 2)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="sweep/train rounds, alternating")
    ap.add_argument("--no-overhead", action="store_true", help="skip the empty-trial timings")
    args = ap.parse_args()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="aecore-sweep-bench.") as tmp:
        for k in range(args.rounds):
            print(json.dumps(trials_per_minute(args, Path(tmp) / f"round{k}", env)), flush=True)
        if not args.no_overhead:
            for r in ray_overhead(args, Path(tmp)):
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
