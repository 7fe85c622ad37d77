"""Several fields with a pressure and the incompressibility residual (issue 20), on every model
kind: the steady Kovasznay flow (Re = 20), whose exact (u, v, p) is known."""

from __future__ import annotations

import pytest

import seppinn

from .conftest import PLAIN, write

KOVASZNAY = """
[problem]
name = "kovasznay"
[axes]
x = [-0.5, 1.0]
y = [-0.5, 1.5]
[fields]
u = {}
v = {}
p = {}
[parameters]
Re = 20
[definitions]
lam = "Re/2 - sqrt(Re**2/4 + 4*pi**2)"
ue = "1 - exp(lam*x)*cos(2*pi*y)"
ve = "lam/(2*pi)*exp(lam*x)*sin(2*pi*y)"
pe = "(1 - exp(2*lam*x))/2"
[[equations]]
name = "momentum_x"
residual = "u*diff(u, x) + v*diff(u, y) + diff(p, x) - lap(u)/Re"
[[equations]]
name = "momentum_y"
residual = "u*diff(v, x) + v*diff(v, y) + diff(p, y) - lap(v)/Re"
[[equations]]
name = "continuity"
residual = "diff(u, x) + diff(v, y)"
[[conditions]]
name = "walls_u"
on = "boundary"
expr = "u"
value = "ue"
[[conditions]]
name = "walls_v"
on = "boundary"
expr = "v"
value = "ve"
[[conditions]]
name = "outlet_p"
on = "x = max"
expr = "p"
value = "pe"
[reference]
u = "ue"
v = "ve"
p = "pe"
"""


@pytest.mark.parametrize("kind, rank", [("cp", 12), ("tucker", [6, 6]), ("tt", [6])])
def test_velocity_pressure_and_incompressibility_on_every_model_kind(tmp_path, kind, rank):
    path = write(tmp_path / "k.toml", KOVASZNAY)
    ov = {**PLAIN, "model.kind": kind, "model.rank": rank, "model.width": 24, "model.depth": 3,
          "train.points": 24, "train.iterations": 400, "train.eval_every": 100, "train.lr": 3e-3,
          "train.test_points": 25, "train.compile": False}
    report = seppinn.check_report(seppinn.prepare(path, overrides=ov))
    assert "fields u, v, p" in report and "term continuity (equation" in report and "p_x (1, 0)" in report
    r = seppinn.solve(path, overrides=ov, progress=False)
    h = r.history
    assert set(r.metrics) == {"u", "v", "p"}
    # training moves all three fields: cp measured total loss / 12, u error 1.01 -> 0.26 in 400 steps
    assert h["loss/total"][-1] < h["loss/total"][0] / 5
    assert h["rel_l2/u"][-1] < h["rel_l2/u"][0] / 2 and h["rel_l2/p"][-1] < h["rel_l2/p"][0]
