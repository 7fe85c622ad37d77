"""Field scales (``compile.scaling``): the estimates on problems with known sizes, a given scale, the
report, and that a scale changes no loss value at equal (parameters x scale), on every path."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seppinn.api import check_report, prepare
from seppinn.cli import main
from seppinn.compile.plan import make_plan
from seppinn.problem.problem_file import load_problem_text
from seppinn.compile.scaling import estimate_scales
from seppinn.errors import ProblemError
from seppinn.train.loop import Trainer

from .conftest import PLAIN, ROOT, write

SMALL = {**PLAIN, "train.dtype": "float64", "train.points": 8, "train.test_points": 6, "model.rank": 4,
         "model.width": 12, "model.depth": 3, "model.activation": "tanh", "train.compile": False}


def plate(extra: str = "") -> str:
    text = (ROOT / "problems" / "biharmonic2d.toml").read_text()
    return text.replace("v = {}", "v = {" + extra + "}")


def test_estimates_find_the_fields_sizes():
    est = estimate_scales(load_problem_text(plate(), "plate.toml"))
    # v = lap(u) = -2 pi^2 sin(pi x) sin(pi y): from the plate equation's source, exactly
    assert est["v"].scale == pytest.approx(2 * math.pi ** 2, rel=1e-6)
    assert est["v"].source == "equation 'plate'"
    # then u from the split v - lap(u) = 0, with v known: size 1, left unscaled
    assert est["u"].estimate == pytest.approx(1.0, rel=1e-6) and est["u"].scale == 1.0
    for name, size in [("helmholtz3d", 1.0), ("poisson_robin2d", 1.0), ("wave1d", 1.0)]:
        est = estimate_scales(load_problem_text((ROOT / "problems" / f"{name}.toml").read_text(), name))
        assert est["u"].estimate == pytest.approx(size, rel=1e-2), name
        assert est["u"].scale == 1.0


BAR = """
[problem]
name = "bar"
[axes]
x = [0.0, 1.0]
[fields]
u = {}
[[equations]]
name = "pde"
residual = "diff(u, x, 2) + 500*pi**2*sin(pi*x)"
[[conditions]]
name = "ends"
on = ["x = 0", "x = 1"]
value = "sin(pi*x)"
"""


def test_rounding_zeros_give_no_size_and_values_or_data_do():
    # u = 500 sin(pi x): sin(pi x) on x = 1 is 1.2e-16, a zero up to rounding, so the source decides
    est = estimate_scales(load_problem_text(BAR, "bar.toml"))["u"]
    assert est.scale == pytest.approx(500.0, rel=1e-6) and est.source == "equation 'pde'"
    est = estimate_scales(load_problem_text(BAR.replace('"sin(pi*x)"', '"30 + x"'), "bar.toml"))["u"]
    assert est.scale == pytest.approx(31.0) and est.source == "the values of 'ends'"
    data = BAR.replace("[[conditions]]", '[data]\nu = "0.01*cos(x)"\n[[conditions]]').replace('"sin(pi*x)"', "0")
    est = estimate_scales(load_problem_text(data, "bar.toml"))["u"]
    assert est.scale == pytest.approx(0.01) and est.source == "the data 'data'"


def test_a_given_scale_wins_and_is_reported(tmp_path):
    path = write(tmp_path / "plate.toml", plate("scale = 20"))
    prep = prepare(path, overrides=SMALL)
    assert prep.compiled.scales["v"].scale == 20.0 and prep.compiled.scales["v"].source == "given"
    assert "v 20 (given)" in check_report(prep)
    assert "v 19.7 (estimate 19.7 from equation 'plate')" in check_report(
        prepare(write(tmp_path / "auto.toml", plate()), overrides=SMALL))
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    assert tr.model["v"].output_scale == 20.0 and tr.model["u"].output_scale == 1.0
    with pytest.raises(ProblemError, match=r"fields\.v\.scale.*positive number"):
        load_problem_text(plate("scale = -1"), "bad.toml")
    out = tmp_path / "run"
    assert main(["solve", str(path), "--out", str(out), "--set", "train.iterations=2", "--set", "model.width=8",
                 "--set", "train.points=8", "--set", "train.lbfgs_iterations=0"]) == 0
    assert json.loads((out / "summary.json").read_text())["field_scales"] == {"u": 1.0, "v": 20.0}


@pytest.mark.parametrize("mode", ["grid", "fused", "grid_free"])
def test_a_scale_changes_no_loss_at_equal_parameters_times_scale(tmp_path, mode):
    """v scaled by 20 against v unscaled with its first axis' output layer multiplied by 20: the same
    model, so every term's loss is equal, on each evaluation path."""
    scaled = prepare(write(tmp_path / "s.toml", plate("scale = 20")), overrides=SMALL)
    plain = prepare(write(tmp_path / "p.toml", plate("scale = 1")), overrides=SMALL)
    trainers = [Trainer(p.compiled, p.config, plan=make_plan(p.compiled, p.config, mode=mode),
                        device=torch.device("cpu"), progress=False) for p in (scaled, plain)]
    assert {pp.mode for parts in trainers[0].plan.parts for pp in parts} >= {mode}
    with torch.no_grad():
        out = trainers[1].model["v"].bank.out
        out.weight[0] *= 20.0
        out.bias[0] *= 20.0
    a, b = (tr.losses() for tr in trainers)
    assert list(a) == ["plate", "split", "u_walls", "v_walls"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-300)
    assert float(a["plate"].detach()) > 0 and float(a["split"].detach()) > 0
    grid = [torch.linspace(0, 1, 5, dtype=torch.float64)] * 2
    preds = [tr.evaluator.predict(grid) for tr in trainers]
    torch.testing.assert_close(preds[0]["v"], preds[1]["v"], rtol=1e-12, atol=1e-12)
