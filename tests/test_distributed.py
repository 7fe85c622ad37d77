"""Distributed training (torch.distributed, gloo on CPU, 2 processes) against one process, in float64.

Each case spawns two ranks (``torch.multiprocessing``) that form a gloo process group from the
same environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and
train 20 iterations; rank 0 returns its losses, parameters and points. Equal to one process
within 1e-10: the slabs' sums and gradients add up to the one-process step.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from seppinn.api import prepare
from seppinn.compile.plan import make_plan
from seppinn.train import distributed
from seppinn.train.distributed import World
from seppinn.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train.dtype": "float64", "train.compile": False, "train.iterations": 20, "train.lbfgs_iterations": 0,
         "train.eval_every": 5, "train.threads": 1, "model.width": 16, "model.depth": 3, "model.rank": 8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launcher_env(rank: int, size: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` of ``size`` on this machine."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _join(rank: int, size: int, port: int) -> World:
    _launcher_env(rank, size, port)
    torch.set_num_threads(1)
    return distributed.start(timeout_s=120)


def _trainer(case: dict[str, Any], world: World, snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``case`` (problem, overrides, plan mode, stop_at) as ``world``; what rank 0 reports."""
    prep = prepare(ROOT / "problems" / case["problem"], None, {**SMALL, **case.get("overrides", {})})
    plan = make_plan(prep.compiled, prep.config, mode=case["mode"]) if case.get("mode") else prep.plan
    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, plan=plan, progress=False, world=world)
    stop_at = case.get("stop_at")

    def on_eval(ev: Any) -> None:  # a signal on the last rank only (the handler sets this flag)
        if stop_at is not None and ev.iteration == stop_at and world.rank == world.size - 1:
            tr.stop_requested = True

    state = tr.train(resume=snapshot, on_eval=on_eval)
    if case.get("evaluate"):
        return {"metrics": tr.evaluator.metrics(), "rows": {f: r.shape[0] for f, r in tr.evaluator.reference.items()}}
    sizes = {f"{ti}.{pi}": p.sizes for ti, parts in enumerate(tr.losses.parts) for pi, p in enumerate(parts)}
    return {"iteration": state.iteration, "interrupted": state.interrupted,
            "totals": [ev.losses["total"] for ev in state.history],
            "metrics": [m["rel_l2"] for ev in state.history for m in ev.metrics.values()],
            "params": torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()]),
            "points": {str(k): v for k, v in tr.points.points.items() if k[0] == "train"},
            "sizes": sizes, "snapshot": state.last_good}


def _rank_main(rank: int, size: int, port: int, cases: list[dict[str, Any]], out: str,
               snapshot_file: str | None) -> None:
    world = _join(rank, size, port)
    try:
        snapshot = torch.load(snapshot_file, weights_only=False) if snapshot_file else None  # our own test file
        torch.save([_trainer(case, world, snapshot) for case in cases], f"{out}.{rank}")
    finally:
        distributed.stop()


def _spawn_all(cases: list[dict[str, Any]], tmp_path: Path, size: int = 2,
               snapshot: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
    """Per case, every rank's report: all cases in one launch of ``size`` ranks."""
    out = str(tmp_path / f"report{size}")
    snap_file = None
    if snapshot is not None:
        snap_file = str(tmp_path / "snapshot.pt")
        torch.save(snapshot, snap_file)
    mp.start_processes(_rank_main, args=(size, _free_port(), cases, out, snap_file), nprocs=size,
                       start_method="spawn", join=True)
    per_rank = [torch.load(f"{out}.{r}", weights_only=False) for r in range(size)]
    return [list(reports) for reports in zip(*per_rank)]


def _spawn(case: dict[str, Any], tmp_path: Path, size: int = 2, snapshot: dict[str, Any] | None = None
           ) -> list[dict[str, Any]]:
    return _spawn_all([case], tmp_path, size, snapshot)[0]


def _close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["iteration"] == b["iteration"]
    np.testing.assert_allclose(a["totals"], b["totals"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(a["metrics"], b["metrics"], rtol=1e-10, atol=0)  # the split test grid
    scale = float(b["params"].abs().max())
    assert float((a["params"] - b["params"]).abs().max()) <= 1e-10 * scale


CASES = {
    # every path of a part: the grid, the fused CP contraction, the Gram products without a grid
    "grid": {"problem": "helmholtz3d_data.toml", "mode": "grid", "overrides": {"train.points": 10}},
    "fused": {"problem": "helmholtz3d_data.toml", "mode": "fused", "overrides": {"train.points": 10}},
    "grid_free": {"problem": "helmholtz3d_data.toml", "mode": "grid_free", "overrides": {"train.points": 10}},
    # SepPGD on data and walls (the all-gather along the sharded axis); 11 points: uneven slabs
    "seppgd": {"problem": "helmholtz3d_data.toml", "mode": "grid",
               "overrides": {"train.points": 11, "precondition.method": "seppgd", "precondition.update_every": 5}},
    "seppgd_grid_free": {"problem": "helmholtz3d_data.toml", "mode": "grid_free",
                         "overrides": {"train.points": 11, "precondition.method": "seppgd"}},
    # scattered readings (split by point), a learned parameter, Gauss weights, grad-norm balancing
    "points": {"problem": "inverse_heat1d.toml", "overrides": {"train.points": 12, "train.sampling": "gauss",
                                                                "train.balance_every": 5}},
    # SepPGD at scattered points (every S_d acts on the point index: the all-gather of all of it).
    # One step only: this problem has gradient entries near 0, where Adam's update g / (|g| + eps)
    # turns a rounding difference of 5e-17 into 5e-12 (lr / eps = 1e5), and the next steps grow it
    # (measured: 5e-12 after 1 step, 1e-8 after 20)
    "points_seppgd": {"problem": "inverse_heat1d.toml", "overrides": {
        "train.points": 12, "precondition.method": "seppgd", "train.iterations": 1, "train.eval_every": 1}},
    # causal weights along the sharded time axis
    "causal": {"problem": "klein_gordon3d.toml", "mode": "grid",
               "overrides": {"train.points": 9, "train.causal": {"chunks": 4, "tol": 1.0},
                             "train.shard_axis": "t"}},
}


def test_two_ranks_equal_one(tmp_path: Path) -> None:
    """Every case of ``CASES`` in one launch of 2 ranks (each launch costs seconds of start-up)."""
    for name, reports in zip(CASES, _spawn_all(list(CASES.values()), tmp_path)):
        one = _trainer(CASES[name], World())
        for r in reports:
            try:
                _close(r, one)
            except AssertionError as exc:
                raise AssertionError(f"case {name}: {exc}") from None


def test_each_rank_contracts_only_its_slab(tmp_path: Path) -> None:
    case = {"problem": "helmholtz3d_data.toml", "mode": "grid",
            "overrides": {"train.points": {"x": 9, "y": 6, "z": 5}}}
    reports = _spawn(case, tmp_path)
    pde = [r["sizes"]["0.0"] for r in reports]
    assert pde == [[4, 6, 5], [5, 6, 5]]  # x, the largest axis, split 4 + 5
    one = _trainer(case, World())
    assert one["sizes"]["0.0"] == [9, 6, 5]
    # a face of x (the walls' first part) is split along y instead
    walls = [r["sizes"]["1.0"] for r in reports]
    assert walls == [[2, 3, 5], [2, 3, 5]]  # the part of both x faces: 2 points on x, y split 3 + 3


def test_the_metrics_split_the_test_grid(tmp_path: Path) -> None:
    """Each rank evaluates its rows of the first test axis, and one all-reduce adds the sums: the
    metrics equal one process' (held-out pixels and psnr; the worst member of a parameter axis, cut
    along it when it comes first). Rank 0 keeps whole references for the outputs, rank 1 its rows."""
    k_first = tmp_path / "k_first.toml"
    text = (ROOT / "problems/parametric_helmholtz2d.toml").read_text()
    k_line = "k = { range = [1.0, 3.0], parameter = true }\n"
    k_first.write_text(text.replace(k_line, "").replace("[axes]\n", "[axes]\n" + k_line))
    cases = [{"problem": "inpainting.toml", "overrides": {"train.iterations": 3, "train.eval_every": 3}},
             {"problem": "parametric_helmholtz2d.toml", "overrides": {"train.test_points": 7}},
             {"problem": str(k_first), "overrides": {"train.test_points": 7}}]
    cases = [{**c, "evaluate": True} for c in cases]
    expected = [{"rgb": {"psnr", "rel_l2_heldout", "psnr_heldout"}}, {"u": {"rel_l2_worst", "worst_k"}},
                {"u": {"rel_l2_worst", "worst_k"}}]
    rows = [[256, 128], [7, 4], [7, 4]]  # rank 0 whole, rank 1 rows 3:7 (or 128:256)
    for case, reports, keys, n in zip(cases, _spawn_all(cases, tmp_path), expected, rows):
        one = _trainer(case, World())
        assert [list(r["rows"].values()) for r in reports] == [[n[0]], [n[1]]]
        for f, m in one["metrics"].items():
            assert keys[f] <= m.keys()
            for r in reports:
                assert r["metrics"][f].keys() == m.keys()
                for key, v in m.items():
                    assert r["metrics"][f][key] == pytest.approx(v, rel=1e-12, abs=0), (case["problem"], key)


def test_random_resampling_gives_identical_points(tmp_path: Path) -> None:
    case = {"problem": "helmholtz3d_data.toml", "overrides": {"train.points": 8, "train.sampling": "random",
                                                              "train.resample_every": 4}}
    one = _trainer(case, World())
    reports = _spawn(case, tmp_path)
    for r in reports:
        for k, v in one["points"].items():
            assert torch.equal(r["points"][k], v)
    _close(reports[0], one)


def test_interrupt_on_one_rank_stops_both_and_resumes(tmp_path: Path) -> None:
    case = {"problem": "helmholtz3d_data.toml", "overrides": {"train.points": 8}}
    whole = _trainer(case, World())
    stopped = _spawn({**case, "stop_at": 10}, tmp_path)
    assert [r["iteration"] for r in stopped] == [11, 11] and all(r["interrupted"] for r in stopped)
    snapshot = stopped[0]["snapshot"]
    _close(_spawn(case, tmp_path, snapshot=snapshot)[0], whole)  # resumed on 2 processes
    _close(_trainer(case, World(), snapshot), whole)  # resumed on 1


def _cli_rank(rank: int, size: int, port: int, argvs: list[list[str]], codes: str) -> None:
    _launcher_env(rank, size, port)
    from seppinn.cli import main

    code = main(argvs[rank])
    Path(f"{codes}.{rank}").write_text(str(code))


def test_a_failing_rank_stops_every_rank(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "sensors.toml"
    shutil.copy(ROOT / "problems/sensors.toml", good)
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "problems/data/sensors.csv", tmp_path / "data/sensors.csv")
    bad_dir = tmp_path / "bad"
    (bad_dir / "data").mkdir(parents=True)
    shutil.copy(good, bad_dir / "sensors.toml")
    (bad_dir / "data/sensors.csv").write_text("x,y,u\n1,2\n")  # seen by rank 1 only
    argv = ["solve", "{}", "--set", "train.iterations=3", "--quiet", "--out", str(tmp_path / "run")]
    argvs = [[a.format(good) for a in argv], [a.format(bad_dir / "sensors.toml") for a in argv]]
    codes = str(tmp_path / "code")
    mp.start_processes(_cli_rank, args=(2, _free_port(), argvs, codes), nprocs=2, start_method="spawn", join=True)
    assert [Path(f"{codes}.{r}").read_text() for r in range(2)] == ["1", "1"]
    err = capfd.readouterr().err
    assert "rank 1:" in err and "sensors.csv" in err, err
    assert not (tmp_path / "run").exists()


def test_ranks_that_disagree_stop(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["solve", str(ROOT / "problems/sensors.toml"), "--quiet", "--out", str(tmp_path / "run"), "--set"]
    argvs = [argv + ["train.iterations=3"], argv + ["train.iterations=4"]]
    codes = str(tmp_path / "code")
    mp.start_processes(_cli_rank, args=(2, _free_port(), argvs, codes), nprocs=2, start_method="spawn", join=True)
    assert [Path(f"{codes}.{r}").read_text() for r in range(2)] == ["1", "1"]
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "do not agree on the problem" in err and "rank 1" in err, err


def test_without_a_process_group(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from seppinn.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert main(["solve", str(ROOT / "problems/sensors.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torchrun" in err and "RANK" in err, err


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_cli_matches_one_process(tmp_path: Path) -> None:
    """The issue's command, shortened: one progress stream, one result, world_size 2, the same loss."""
    args = ["problems/helmholtz3d_data.toml", "--solver", "seppgd", "--set", "train.dtype=\"float64\"",
            "--set", "train.compile=false", "--set", "train.iterations=30", "--set", "train.points=12",
            "--set", "train.lbfgs_iterations=0", "--set", "train.threads=1", "--set", "train.eval_every=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "seppinn", "solve", *args, "--out", str(tmp_path / "two")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run2.returncode == 0, run2.stderr[-3000:]
    run1 = subprocess.run([sys.executable, "-m", "seppinn", "solve", *args, "--out", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run1.returncode == 0, run1.stderr[-3000:]
    assert run2.stdout.count("helmholtz3d_data:") == 1 and "2 processes" in run2.stdout
    import json
    import h5py
    s1 = json.loads((tmp_path / "one/summary.json").read_text())
    s2 = json.loads((tmp_path / "two/summary.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1 and s2["shard_axis"] == "x"
    for k, v in s1["final_loss"].items():
        assert abs(s2["final_loss"][k] - v) <= 1e-9 * abs(v)
    with h5py.File(tmp_path / "two/solution.h5") as f:
        assert int(f.attrs["world_size"]) == 2
