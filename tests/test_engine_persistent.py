"""The persistent CUDA path through the trainer (aecore/engine_persistent.py): the runs of a
group, trained by one launch per chunk, each bitwise equal to the run trained alone by the eager
path; Ctrl-C stops every run of the group after the same chunk and a resume ends where an
uninterrupted run ends; the --cuda-path option (config.json, old runs' cuda_graphs, usage
errors, the refusal of what the persistent kernel does not train).

In the simulator (a cooperative grid is one block there) a step of the 784-pixel model takes
seconds, so the runs are tiny: 16 images, batch 8, chunks of 8 (two launches an epoch).
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

RUNS = ((4, "adam"), (8, "sgd"))  # two hidden sizes (tiles, slices, offsets) and optimizers
OPTIONS = dict(chunk_samples=8, progress=False, checkpoint_every=0.0)


def _data():
    return synthetic_data(n_train=16, n_val=8, n_test=8)


def _plan(out, path, action="train"):
    # constant rate: the persistent kernel trains no other schedule (yet: branch pers3)
    return [S.PlannedRun(TrainConfig(hidden=h, epochs=1, batch_size=8, optimizer=o, device="cuda",
                                     val_size=8, recon_epochs=(1,), cuda_path=path,
                                     lr_schedule="constant"),
                         out / f"h{h}-{o}", action) for h, o in RUNS]


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
    _same_losses([(r["train_loss"], r["val_loss"]) for r in ma],
                 [(r["train_loss"], r["val_loss"]) for r in mb])
    ra, rb = np.load(a / runs.RECONSTRUCTIONS), np.load(b / runs.RECONSTRUCTIONS)
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
def test_the_runs_of_a_group_equal_each_run_trained_alone_by_the_eager_path(tmp_path, eager):
    """Both runs in one launch per chunk; each run's checkpoint (weights, optimizer state,
    step), metrics (train and validation loss), reconstructions and test loss bitwise those of
    the run trained alone, eagerly; config.json records the path."""
    groups = S.persistent_groups(_plan(tmp_path, "persistent"), 8)
    assert len({id(g) for g in groups.values()}) == 1 and len(groups) == 2  # one group
    out = S.train_side_by_side(_plan(tmp_path, "persistent"), _data(), **OPTIONS)
    assert [o.status for o in out] == ["complete"] * len(RUNS)
    for o, d, s in zip(out, *eager):
        _same_run(o.run.dir, d)
        _same_losses([o.summary["test_loss"]], [s["test_loss"]])
        config = json.loads((o.run.dir / runs.CONFIG).read_text())["config"]
        assert config["cuda_path"] == "persistent"


@pytest.mark.slow
def test_ctrl_c_stops_every_run_after_the_same_chunk_and_the_resume_ends_as_alone(tmp_path,
                                                                                 eager):
    """SIGINT raised after the first chunk: every run of the group saves at the same position
    (the group's launches go on together), and resuming them ends bitwise where each run
    trained alone without a stop ends."""
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
    out = S.train_side_by_side(_plan(tmp_path, "persistent", "resume"), _data(), **OPTIONS)
    assert [o.status for o in out] == ["complete"] * len(RUNS)
    for o, d, s in zip(out, *eager):
        _same_run(o.run.dir, d)
        _same_losses([o.summary["test_loss"]], [s["test_loss"]])


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
    """Another activation, loss or learning-rate schedule (fields other branches add):
    --cuda-path persistent is a one-line problem; auto never picks the persistent path then."""
    for field, value in (("activation", "tanh"), ("loss", "bce"), ("lr_schedule", "cosine")):
        c = types.SimpleNamespace(cuda_path="persistent", **{field: value})
        why = CP.path_problem(c)
        assert why and field in why and value in why and "\n" not in why
        assert CP.resolve(types.SimpleNamespace(cuda_path="auto", **{field: value})) != \
            "persistent"
    assert CP.path_problem(TrainConfig(cuda_path="persistent", lr_schedule="constant")) is None
    assert [k for k, _ in config_problems(TrainConfig(cuda_path="fast"))] == ["cuda_path"]
    for field, value in (("activation", "tanh"), ("lr_schedule", "cosine")):
        if hasattr(TrainConfig(), field):  # the fields that exist: through config_problems
            bad = TrainConfig(**{"cuda_path": "persistent", "lr_schedule": "constant",
                                 field: value})
            assert [k for k, _ in config_problems(bad)] == ["cuda_path"], field
            assert CP.resolve(bad) == "persistent" and CP.resolve(  # auto: never persistent
                TrainConfig(**{field: value})) != "persistent"


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


@pytest.mark.slow
def test_a_run_that_leaves_the_group_leaves_the_others_as_alone():
    """Engine level (72-pixel images, so a step is quick in the simulator): runs a and b share
    the first epoch's launches; a leaves, and b's second epoch runs in a group rebuilt without
    it (b's state carried device -> host -> device). Each ends bitwise as trained alone by a
    CudaEngine, the validation loss too (b's second computed inside the launch); the state is
    read before the first launch and from a snapshot too."""
    cuda_or_skip()
    from aecore.engine_cuda import CudaEngine
    from aecore.engine_persistent import RunGroup
    from aecore.model import init_params
    from aecore.optim import OptimConfig

    n_pix, batch = 72, 50
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (80, n_pix), dtype=np.uint8)
    perms = [rng.permutation(80).astype(np.int64) for _ in range(2)]
    runs_ = {"a": (24, OptimConfig("adam", lr=1e-2), 1), "b": (40, OptimConfig("sgd", lr=2.0), 2)}
    epochs = {"a": 1, "b": 2}

    def drive(eng, key, out):  # validation after each epoch: b's second in the launch
        data = eng.put(images)
        vals = []
        for e in range(epochs[key]):
            eng.train_steps(data, perms[e], 0, batch)
            eng.train_steps(data, perms[e], batch, 80)
            vals.append(eng.evaluate(data))
        out[key] = (eng.get_params(), eng.get_opt_state(), eng.take_loss_sum(), eng.step, vals)

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
        assert ta == tb == 2 * epochs[key], key
        _same_losses([la, *va], [lb, *vb])
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
