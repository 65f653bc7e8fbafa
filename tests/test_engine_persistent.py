"""The persistent CUDA path through the trainer (aecore/engine_persistent.py): the runs of a
group, trained by one launch per chunk, each bitwise equal to the run trained alone by the eager
path, with their learning-rate schedules; Ctrl-C stops every run of the group after the same
chunk and a resume ends where an uninterrupted run ends; a run that leaves the group leaves the
others as alone; the --cuda-path option (config.json, old runs' cuda_graphs, usage errors, the refusal of
what the persistent kernel does not train).

In the simulator (a cooperative grid is one block there) a step of the 784-pixel model takes
seconds, and so does each evaluation, so the trainer-level runs are tiny and trained once per
path: 16 images of 7 x 7 pixels (49: the trainer takes the width from the data; nothing here
depends on 784, which tests/test_engine_cuda.py's trainer run keeps covered), batch 8, one epoch
in two chunks of one step; the eager reference is computed once for the module. Every schedule (onecycle needs 4 steps, warm-up 2 epochs: too long here)
and warm-up for every optimizer, stopped and resumed mid-epoch, is checked at the engine level
on a 24-pixel model (tests/test_persistent_schedules.py).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import types

import numpy as np
import pytest

from conftest import cuda_or_skip, synthetic_data

from aecore import cuda_path as CP
from aecore import runs
from aecore import side_by_side as S
from aecore.checkpoint import load_checkpoint
from aecore.config import TrainConfig, config_problems
from aecore.trainer import train

# (hidden, optimizer, schedule, epochs): two hidden sizes (tiles, slices, offsets), optimizers
# and schedules whose two steps have different rates (cosine: lr, lr / 2; step: lr, lr / 10)
RUNS = ((4, "adam", "cosine", 1), (8, "sgd", "step", 1))
OPTIONS = dict(chunk_samples=8, progress=False, checkpoint_every=0.0)


def _data():
    return synthetic_data(n_train=16, n_val=8, n_test=8, side=7)


def _plan(out, path, action="train"):
    return [S.PlannedRun(TrainConfig(hidden=h, epochs=e, batch_size=8, optimizer=o,
                                     lr_schedule=sched, device="cuda", val_size=8,
                                     recon_epochs=(), cuda_path=path),
                         out / f"h{h}-{o}", action) for h, o, sched, e in RUNS]


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """The runs trained alone, one after the other, by the eager path (the reference)."""
    cuda_or_skip()
    out = S.train_side_by_side(_plan(tmp_path_factory.mktemp("eager"), "eager"), _data(),
                               **OPTIONS)
    assert [o.status for o in out] == ["complete"] * len(RUNS)
    return [o.run.dir for o in out], [o.summary for o in out]


def _same_run(a, b):
    ca, cb = load_checkpoint(a / runs.CHECKPOINT), load_checkpoint(b / runs.CHECKPOINT)
    assert ca.state["step"] == cb.state["step"]
    for k in ca.params:
        np.testing.assert_array_equal(ca.params[k], cb.params[k], err_msg=f"{a.name} {k}")
    assert set(ca.opt_state) == set(cb.opt_state)
    for k in ca.opt_state:
        np.testing.assert_array_equal(ca.opt_state[k], cb.opt_state[k], err_msg=f"{a.name} {k}")
    ma, mb = runs.read_metrics(a / runs.METRICS), runs.read_metrics(b / runs.METRICS)
    assert [r["lr"] for r in ma] == [r["lr"] for r in mb]
    _same_losses([(r["train_loss"], r["val_loss"]) for r in ma],
                 [(r["train_loss"], r["val_loss"]) for r in mb])
    ra, rb = np.load(a / runs.RECONSTRUCTIONS), np.load(b / runs.RECONSTRUCTIONS)
    assert sorted(ra.files) == sorted(rb.files)
    for k in ra.files:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{a.name} reconstructions {k}")


def _same_losses(a, b):
    """Bitwise in the simulator; on a GPU the eager path's loss sums are float64 atomics added
    in arrival order (kernels/cuda/persistent.py), so there the last bits may differ."""
    from aecore.kernels.cuda import SIMULATOR

    if SIMULATOR:
        assert a == b
    else:
        np.testing.assert_allclose(np.array(a, float), np.array(b, float), rtol=1e-12)


@pytest.mark.slow
def test_a_group_stopped_by_ctrl_c_mid_schedule_resumes_to_each_run_trained_alone(tmp_path,
                                                                                 eager):
    """Both runs in one group (one launch per chunk). SIGINT raised after the first chunk
    (mid-epoch, between two rates of each schedule): every run saves at the same position (the
    group's launches go on together). Resumed, they train in one group again. Each run's
    checkpoint (weights, optimizer state, step), metrics (train and validation
    loss, rate), reconstructions and test loss are bitwise those of the run trained alone,
    eagerly and without a stop; config.json records the path."""
    groups = S.persistent_groups(_plan(tmp_path, "persistent"), 8)
    assert len({id(g) for g in groups.values()}) == 1 and len(groups) == 2  # one group
    first = threading.Lock()

    def ctrl_c(epoch, pos):
        if pos != 8:
            return
        if first.acquire(blocking=False):  # once, by the first run to get here
            signal.raise_signal(signal.SIGINT)
        # the handler runs in the main thread, a moment later: every run waits for it here
        stop = signal.getsignal(signal.SIGINT).__self__  # train_runs' StopSignals
        deadline = time.monotonic() + 60
        while stop.received is None and time.monotonic() < deadline:
            time.sleep(0.01)

    out = S.train_side_by_side(_plan(tmp_path, "persistent"), _data(), on_chunk=ctrl_c,
                               **OPTIONS)
    assert [o.status for o in out] == ["interrupted"] * len(RUNS), [o.error for o in out]
    for o in out:
        st = load_checkpoint(o.run.dir / runs.CHECKPOINT).state
        assert (st["epoch"], st["position"], st["step"]) == (0, 8, 1)
    resumed = _plan(tmp_path, "persistent", "resume")
    assert len({id(g) for g in S.persistent_groups(resumed, 8).values()}) == 1
    out = S.train_side_by_side(resumed, _data(), **OPTIONS)
    assert [o.status for o in out] == ["complete"] * len(RUNS)
    for o, d, s in zip(out, *eager):
        _same_run(o.run.dir, d)
        _same_losses([o.summary["test_loss"]], [s["test_loss"]])
        info = json.loads((o.run.dir / runs.CONFIG).read_text())
        assert info["config"]["cuda_path"] == "persistent" and info["image_size"] == 49


# --- the option -------------------------------------------------------------------------------

def test_cuda_path_is_recorded_and_old_runs_load(tmp_path, tiny_data):
    c = TrainConfig(hidden=4, epochs=1, batch_size=64, device="cpu", val_size=96, limit=64,
                    recon_epochs=(1,), cuda_path="persistent", lr_schedule="constant")
    train(c, tmp_path / "run", tiny_data, progress=False)
    saved = json.loads((tmp_path / "run" / runs.CONFIG).read_text())["config"]
    assert saved["cuda_path"] == "persistent" and "cuda_graphs" not in saved
    old = {k: v for k, v in c.to_dict().items() if k != "cuda_path"}
    assert TrainConfig.from_dict({**old, "cuda_graphs": False}).cuda_path == "eager"
    assert TrainConfig.from_dict({**old, "cuda_graphs": True}).cuda_path == "graphs"
    assert TrainConfig.from_dict(old).cuda_path == "auto"


def test_the_persistent_path_refuses_what_its_kernel_does_not_train():
    """Another activation or loss: --cuda-path persistent is a one-line problem, and auto never
    picks the persistent path then. Every learning-rate schedule and warm-up it trains: no
    problem, and the path stays the one asked for."""
    for field, value in (("activation", "tanh"), ("loss", "bce")):
        c = types.SimpleNamespace(cuda_path="persistent", **{field: value})
        why = CP.path_problem(c)
        assert why and field in why and value in why and "\n" not in why
        assert CP.resolve(types.SimpleNamespace(cuda_path="auto", **{field: value})) != \
            "persistent"
        bad = TrainConfig(cuda_path="persistent", **{field: value})
        assert [k for k, _ in config_problems(bad)] == ["cuda_path"], field
        assert CP.resolve(bad) == "persistent" and CP.resolve(  # auto: never persistent
            TrainConfig(**{field: value})) != "persistent"
    assert [k for k, _ in config_problems(TrainConfig(cuda_path="fast"))] == ["cuda_path"]
    for sched, warm in (("constant", 0), ("onecycle", 0), ("cosine", 1), ("step", 2),
                        ("constant", 1)):
        c = TrainConfig(cuda_path="persistent", lr_schedule=sched, warmup_epochs=warm, epochs=4)
        assert CP.path_problem(c) is None and config_problems(c, 60000) == [], (sched, warm)
        assert CP.resolve(c) == "persistent"


@pytest.mark.parametrize("command", ["train", "study", "bench"])
def test_bad_cuda_path_values_are_usage_errors(tmp_path, command):
    from click.testing import CliRunner

    from cli.main import main

    run = lambda *a: CliRunner().invoke(main, [command, *map(str, a)])  # noqa: E731
    r = run("--cuda-path", "fast", "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--cuda-path" in r.output and "Traceback" not in r.output
    r = run("--cuda-path", "persistent", "--no-cuda-graphs", "--device", "cpu", "--out",
            tmp_path / "o")
    assert r.exit_code == 2 and "contradicts --cuda-path persistent" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_runs_that_cannot_share_a_launch_go_in_separate_groups(tmp_path):
    """One group per batch size, data (--limit, validation split) and chunk grid; runs on
    another path or device are in none."""
    cuda_or_skip()
    plan = _plan(tmp_path, "persistent")
    c = plan[0].config
    other = lambda name, **kw: S.PlannedRun(TrainConfig(**{**c.to_dict(), **kw}),  # noqa: E731
                                            tmp_path / name)
    plan += [other("b16", batch_size=16), other("limit", limit=12), other("b16b", batch_size=16),
             other("graphs", cuda_path="graphs"), other("cpu", device="cpu")]
    groups = S.persistent_groups(plan, 8)
    assert set(groups) == {p.dir for p in plan[:5]}
    ids = [id(groups[p.dir]) for p in plan[:5]]
    assert ids[0] == ids[1] and ids[2] == ids[4] and len(set(ids)) == 3
    assert S.persistent_groups(plan[5:], 8) == {}


def test_a_member_that_falls_back_to_the_cpu_leaves_its_group(tmp_path):
    """The trainer's fallback after CUDA ran out of memory asks the member's engine builder for
    the CPU: the member leaves the group and gets devices.make_engine's CPU engine, with every
    option the trainer passes; a group made without a fallback refuses another device."""
    cuda_or_skip()
    from aecore.engine_cpu import CpuEngine
    from aecore.engine_persistent import RunGroup
    from aecore.model import init_params
    from aecore.optim import OptimConfig
    from aecore.schedules import LRSchedule

    plan = _plan(tmp_path, "persistent")
    group = S.persistent_groups(plan, 8)[plan[0].dir]
    args = ("cpu", init_params(4, 0), OptimConfig("adam", lr=1e-3), 8, 0.01, None, 3)
    schedule = LRSchedule("cosine", 1e-3, 2, 2)
    eng = group.engine_factory(plan[0].dir)(
        *args, cuda_path="persistent", cpu_split=False, cpu_team=False, lr_schedule=schedule,
        activation="tanh", loss="l1")
    assert isinstance(eng, CpuEngine) and eng.step == 3 and eng.lr_schedule is schedule
    assert (eng.activation, eng.loss) == ("tanh", "l1")
    assert group._expected == {plan[1].dir}  # the other member no longer waits for it
    with pytest.raises(ValueError, match="trains on cuda only, not cpu"):
        RunGroup(["a"]).make_engine(*args, key="a")


@pytest.mark.slow
def test_a_run_that_leaves_the_group_leaves_the_others_as_alone():
    """Engine level (72-pixel images, one step an epoch, so it is quick in the simulator): runs
    a and b share the first epoch's launch; a leaves, and b's second epoch runs in a group
    rebuilt without it (b's state carried device -> host -> device). Each ends bitwise as trained alone by a
    CudaEngine, the validation loss too (b's second computed inside the launch); the state is
    read before the first launch and from a snapshot too."""
    cuda_or_skip()
    from aecore.engine_cuda import CudaEngine
    from aecore.engine_persistent import RunGroup
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    n_pix, batch = 72, 48
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (batch, n_pix), dtype=np.uint8)
    perms = [rng.permutation(batch).astype(np.int64) for _ in range(2)]
    runs_ = {"a": (24, OptimConfig("adam", lr=1e-2), 1), "b": (40, OptimConfig("sgd", lr=2.0), 2)}
    epochs = {"a": 1, "b": 2}

    def drive(eng, key, out):  # validation after each epoch: b's second in the launch
        data = eng.put(images)
        losses, vals = [], []
        for e in range(epochs[key]):
            eng.train_steps(data, perms[e], 0, batch)
            losses.append(eng.take_loss_sum())  # per epoch, as the trainer takes them
            vals.append(eng.evaluate(data))
        out[key] = (eng.get_params(), eng.get_opt_state(), losses, eng.step, vals)

    alone = {}
    for key, (h, optim, seed) in runs_.items():
        drive(CudaEngine(init_params(h, seed, image_size=n_pix), optim, batch, graphs=False),
              key, alone)
    group, together, snaps = RunGroup(["a", "b"]), {}, {}
    views = {k: group.make_engine("cuda", init_params(h, s, image_size=n_pix), o, batch, key=k)
             for k, (h, o, s) in runs_.items()}
    before = views["a"].get_params()
    np.testing.assert_array_equal(before["0.weight"], init_params(24, 1, image_size=n_pix)
                                  ["0.weight"])

    def member(key):
        try:
            drive(views[key], key, together)
            snaps[key] = views[key].snapshot()
        finally:
            group.leave(key)

    threads = [threading.Thread(target=member, args=(k,)) for k in runs_]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert views["b"]._val_sum[0] > 0  # b's second validation: computed by a launch
    for key in runs_:
        (pa, sa, la, ta, va), (pb, sb, lb, tb, vb) = alone[key], together[key]
        assert ta == tb == epochs[key], key
        _same_losses([*la, *va], [*lb, *vb])
        for name in pa:
            np.testing.assert_array_equal(pb[name], pa[name], err_msg=f"{key} {name}")
            np.testing.assert_array_equal(snaps[key]()[0][name], pa[name])
        for name in sa:
            np.testing.assert_array_equal(sb[name], sa[name], err_msg=f"{key} {name}")


def test_cli_records_the_cuda_path_and_resume_may_change_it(tmp_path, real_data_dir):
    """On the CPU (the option only matters on CUDA, but it is the run's setting either way)."""
    from click.testing import CliRunner

    from cli.main import main

    run = lambda *a: CliRunner().invoke(main, [*map(str, a)])  # noqa: E731
    common = ("--device", "cpu", "--data-dir", real_data_dir)
    r = run("train", "--hidden", "8", "--epochs", "1", "--limit", "64", "--batch-size", "32",
            "--no-cuda-graphs", "--lr-schedule", "constant", "--out", tmp_path, *common)
    assert r.exit_code == 0, r.output  # constant: it is resumed with more epochs, persistent
    config_file = tmp_path / "h8-sched-constant" / runs.CONFIG
    config = lambda: json.loads(config_file.read_text())["config"]  # noqa: E731
    assert config()["cuda_path"] == "eager"
    r = run("train", "--resume", tmp_path / "h8-sched-constant", "--epochs", "2", "--cuda-path",
            "persistent", *common)
    assert r.exit_code == 0, r.output
    assert config()["cuda_path"] == "persistent"
