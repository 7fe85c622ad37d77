"""Solver settings: resolution order, presets, overrides, TOML round trip."""

from __future__ import annotations

import tomllib

import pytest

from seppinn import SolverConfigError
from seppinn.problem.resources import shipped_dir
from seppinn.problem.solver_config import SolverConfig, resolve

from .conftest import write


def test_resolution_order(tmp_path):
    solver = write(tmp_path / "s.toml", "[train]\nlr = 0.1\niterations = 7\n[model]\nrank = 3\n")
    cfg = resolve({"train": {"lr": 0.5, "seed": 4, "weights": {"a": 2.0}}, "model": {"width": 9}}, "p.toml",
                  solver, ["train.iterations=11", "train.weights.b=3"])
    assert cfg.train.lr == 0.1  # solver file over [solver]
    assert cfg.train.iterations == 11  # --set over solver file
    assert cfg.train.seed == 4 and cfg.model.width == 9  # [solver] over defaults
    assert cfg.model.rank == 3 and cfg.model.depth == 4  # defaults where nobody says
    assert cfg.train.weights == {"a": 2.0, "b": 3.0}  # tables merge per key


def test_set_values_parse_as_toml_else_string():
    cfg = resolve(overrides=["model.activation=tanh", "train.points={ x = 8, y = 4 }", "precondition.method=\"none\""])
    assert cfg.model.activation == "tanh" and cfg.train.points == {"x": 8, "y": 4}


def test_toml_round_trip():
    cfg = resolve(overrides={"train.weights": {"walls": 100.0}, "train.points": 12})
    again = tomllib.loads(cfg.to_toml())
    assert again == cfg.as_dict()
    assert SolverConfig().precondition.method == "none"


@pytest.mark.parametrize("name", sorted(p.stem for p in shipped_dir("solvers").glob("*.toml")))
def test_shipped_presets_resolve(name):
    cfg = resolve(solver=name)
    assert cfg.precondition.method == ("seppgd" if name == "seppgd" or name.startswith("inr-") else "none")


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr: expected a positive finite number, got -1"),
    ("train.sampling=sobol", "'sobol' is not one of grid, random"),
    ("model.rank=0", "model.rank: expected an integer >= 1"),
    ("train.device=gpu", "'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("precondition.method=sepgd", r"'sepgd' is not one of none, seppgd \(did you mean 'seppgd'\?\)"),
    ("solver.train.lr=1", "unknown table 'solver'"),
    ("train.lr.x=1", r"train.lr: expected a positive finite number, got \{'x': 1\}"),
    ("lr=1", "expected TABLE.KEY=VALUE"),
    ("model.weight_factorization={ mean = 1, sd = 0.1 }", r"unknown key 'sd' \(did you mean 'std'\?\) \(valid: mean, std\)"),
    ("model.weight_factorization={ std = 0 }", "expected a positive finite number, got 0"),
    ("model.weight_factorization=1", "expected true, false or a table"),
])
def test_bad_overrides(override, message):
    with pytest.raises(SolverConfigError, match=message):
        resolve(overrides=[override])


def test_problem_names_its_solver_below_its_tables_and_the_command_line(tmp_path, capsys):
    """[problem] solver: defaults < that preset or file < [solver] tables < --solver < --set."""
    import seppinn
    from seppinn.cli import main

    from .conftest import HELMHOLTZ_SMALL

    text = HELMHOLTZ_SMALL.replace('name = "poisson2d"', 'name = "poisson2d"\nsolver = "quick"')
    p = seppinn.load_problem(write(tmp_path / "p.toml", text))
    quick = tomllib.loads((shipped_dir("solvers") / "quick.toml").read_text())
    cfg = seppinn.prepare(p).config
    assert (cfg.train.lr, cfg.model.body, cfg.train.iterations) == (quick["train"]["lr"], "modified_mlp", 1500)
    tables = text + '\n[solver.train]\niterations = 7\n'
    cfg = seppinn.prepare(write(tmp_path / "q.toml", tables)).config
    assert (cfg.train.iterations, cfg.model.body) == (7, "modified_mlp")
    cfg = seppinn.prepare(write(tmp_path / "q.toml", tables), "spinn", {"train.lr": 0.25}).config
    assert (cfg.train.lr, cfg.train.iterations) == (0.25, 50000)  # --solver over the tables, --set over all
    write(tmp_path / "mine.toml", "[train]\nlr = 0.125\n")  # a file beside the problem file
    own = seppinn.load_problem(write(tmp_path / "sub.toml", text.replace('"quick"', '"mine.toml"')))
    assert own.solver == str((tmp_path / "mine.toml").resolve()) and seppinn.prepare(own).config.train.lr == 0.125
    bad = write(tmp_path / "bad.toml", text.replace('"quick"', '"quik"'))
    assert main(["check", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{bad}: problem.solver: no such preset or file 'quik' (did you mean 'quick'?) (presets: "
        f"{', '.join(sorted(f.stem for f in shipped_dir('solvers').glob('*.toml')))}; a file is looked up beside "
        "the problem file)")


def test_weight_factorization_and_causal_tables_are_replaced_whole_by_a_later_layer(tmp_path):
    solver = write(tmp_path / "s.toml", "[model]\nweight_factorization = true\n[train]\ncausal = { chunks = 4, tol = 1.0 }\n")
    cfg = resolve(None, "p.toml", solver)
    assert cfg.model.weight_factorization == {"mean": 1.0, "std": 0.1} and cfg.train.causal == {"chunks": 4, "tol": 1.0}
    off = resolve(None, "p.toml", solver, ["model.weight_factorization=false", "train.causal={}"])
    assert off.model.weight_factorization == {} and off.train.causal == {}
    assert resolve(overrides=["model.weight_factorization={ std = 0.2 }"]).model.weight_factorization == {"mean": 1.0, "std": 0.2}
