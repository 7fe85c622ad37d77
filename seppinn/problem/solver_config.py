"""Solver settings: built-in defaults < the problem file's ``[problem] solver`` < its ``[solver]``
tables < ``--solver FILE`` (or a shipped preset name) < ``--set KEY=VALUE`` overrides. Every key
is checked."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SolverConfigError, did_you_mean
from ..registry import ACTIVATIONS, BODIES, MODEL_KINDS, SCALES
from .problem_file import read_toml
from .resources import shipped_dir, shipped_names

SCHEDULES = {
    "constant": "the learning rate stays train.lr",
    "exponential": "lr * decay_rate ** (iteration / decay_every) (SPINN's schedule)",
    "cosine": "cosine decay from lr to 0 over the Adam iterations",
}
SAMPLINGS = {
    "grid": "fixed uniform points per axis, ends included",
    "random": "uniform random points per axis, redrawn every resample_every iterations",
    "gauss": "fixed Gauss-Legendre points per axis; every loss on the training grid is weighted by the product "
             "quadrature weights (a spectrally accurate integral of r^2 over the domain)",
}
DTYPES = ("float32", "float64")
FACE_REDUCTIONS = ("mean", "sum")
PRECONDITIONERS = {
    "none": "plain gradients (Adam baseline)",
    "seppgd": "separable NTK preconditioning of data and value conditions (Luo & Meng, eqs. 7-8)",
}
MODULATIONS = {
    "clamp": "the top k factor-NTK eigenvalues set to the k-th (the paper's g_1, 1-indexed)",
    "sqrt": "the top k eigenvalues set to sqrt(lambda_i lambda_k) (a scale-free form of the paper's g_2)",
}
OPTIMIZERS = ("adam",)
LBFGS_AUTO_FRACTION = 0.1  # train.lbfgs_iterations = "auto": an L-BFGS finish of 10 % of the Adam iterations
BALANCES = {
    "none": "the terms' losses as weighted by train.weights",
    "grad_norm": "per-term weights sum_j |grad L_j| / |grad L_i| (jaxpi), a moving average updated every "
                 "balance_every iterations, times train.weights",
    "ntk": "per-term weights sum_j tr K_j / tr K_i from each term's NTK trace (jaxpi's NTK weighting, from "
           "per-axis quantities), updated and averaged like grad_norm",
}


@dataclass
class ModelConfig:
    # the defaults are the winner of the tournament bench/defaults.py (README, "Defaults")
    kind: str = "cp"
    rank: Any = 32
    scale: str = "none"
    width: int = 64
    depth: int = 4
    body: str = "modified_mlp"
    activation: str = "tanh"
    omega0: float = 30.0
    fourier_features: int = 0
    fourier_scale: float = 1.0  # std of the random Fourier frequencies (cycles per unit of xi)
    periodic_modes: int = 8  # harmonics k = 1..K of the input embedding of periodic axes
    # random weight factorisation W = diag(exp(s)) V, s ~ N(mean, std^2) (jaxpi); {} or false: off, true: mean 1, std 0.1
    weight_factorization: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "exponential"
    decay_rate: float = 0.9
    decay_every: int = 1000
    iterations: int = 5000
    lbfgs_iterations: Any = "auto"  # an integer, or "auto": LBFGS_AUTO_FRACTION of ``iterations``
    points: Any = "auto"
    sampling: str = "grid"
    resample_every: int = 100
    eval_every: int = 100
    test_points: Any = 30
    face_reduction: str = "mean"
    checkpoint_every: int = 1000
    on_nan: str = "rollback"  # a diverged run (non-finite, or see diverge_factor): "rollback" or "stop"
    compile: Any = "auto"  # torch.compile the loss and its backward: true, false, or "auto" (long runs)
    grid_free: Any = "auto"  # CP residuals' losses from Gram products: true, false, or "auto" (by a flop estimate)
    memory_limit: Any = "auto"  # GiB, or "auto": 80 % of the device's (GPU) or the machine's available memory
    dtype: str = "float32"
    # the L-BFGS phase's dtype: "float32", "float64", or "auto": ``dtype``, then float64 from the
    # first step whose line search finds no lower loss (float32 rounding stops it long before float64's)
    lbfgs_dtype: str = "auto"
    seed: int = 0
    device: str = "auto"
    weights: dict[str, float] = field(default_factory=dict)
    balance: str = "grad_norm"
    balance_every: int = 100
    balance_momentum: float = 0.9
    causal: dict[str, Any] = field(default_factory=dict)  # { chunks = M, tol = eps }: causal weights in time
    diverge_factor: float = 1e4  # a total loss above this times its running minimum counts as diverged; 0: off
    threads: Any = "auto"  # CPU threads torch uses: an integer, or "auto" (half the CPUs, at least 1)
    outputs_from: str = "final"  # the weights solution.h5, Result.evaluate and the plots use: "final" or "best"
    windows: int = 1  # time marching: the time axis cut into this many windows, solved in turn (``marching``)
    shard_axis: str = "auto"  # torchrun: the axis whose training points the ranks split ("auto": the largest)


    def lbfgs_steps(self) -> int:
        """The L-BFGS iterations after Adam (``lbfgs_iterations``, "auto" resolved)."""
        if self.lbfgs_iterations == "auto":
            return round(LBFGS_AUTO_FRACTION * self.iterations)
        return int(self.lbfgs_iterations)

    def lbfgs_precision(self) -> str:
        """The L-BFGS phase's dtype at its start (``lbfgs_dtype``; "auto": ``dtype``)."""
        return self.dtype if self.lbfgs_dtype == "auto" else self.lbfgs_dtype


@dataclass
class PreconditionConfig:
    method: str = "none"
    k: Any = "auto"
    scale: str = "normalized"
    modulation: str = "clamp"
    update_every: int = 10
    terms: Any = "auto"


@dataclass
class SolverConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    precondition: PreconditionConfig = field(default_factory=PreconditionConfig)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return to_toml(self.as_dict())


TABLES: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "precondition": PreconditionConfig}


# ------------------------------------------------------------------------------- checks
def _choice(*options: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}{did_you_mean(str(v), options)}")
        return v
    return check


def _int(lo: int, hi: int | None = None) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"expected an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
                             + f", got {v!r}")
        return v
    return check


def _float(positive: bool = True) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise ValueError(f"expected a {'positive ' if positive else ''}finite number, got {v!r}")
        return float(v)
    return check


def _auto_or_bool(v: Any) -> Any:
    if v == "auto" or isinstance(v, bool):
        return v
    raise ValueError(f"expected true, false or \"auto\", got {v!r}")


def _auto_or_float(v: Any) -> Any:
    return v if v == "auto" else _float()(v)


def _int_or_table(lo: int, auto: bool = False) -> Callable[[Any], Any]:
    one = _int(lo)

    def check(v: Any) -> Any:
        if auto and v == "auto":
            return v
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        return one(v)
    return check


def _rank(v: Any) -> Any:
    if isinstance(v, list):
        return [_int(1)(x) for x in v]
    return _int(1)(v)


def _device(v: Any) -> Any:
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        raise ValueError(f"{v!r} is not one of auto, cpu, cuda, cuda:N")
    return v


def _name(v: Any) -> Any:
    if not isinstance(v, str) or not v or len(v) > 64:
        raise ValueError(f"expected \"auto\" or an axis name, got {v!r}")
    return v


def _weights(v: Any) -> Any:
    if not isinstance(v, dict):
        raise ValueError("expected a table of term name = weight")
    return {k: _float(positive=False)(x) for k, x in v.items()}


def _momentum(v: Any) -> Any:
    v = _float(positive=False)(v)
    if not 0 <= v < 1:
        raise ValueError(f"expected a number in [0, 1), got {v!r}")
    return v


RWF_DEFAULT = {"mean": 1.0, "std": 0.1}  # jaxpi's random weight factorisation


def _weight_factorization(v: Any) -> Any:
    if isinstance(v, bool):
        return dict(RWF_DEFAULT) if v else {}
    if not isinstance(v, dict):
        raise ValueError("expected true, false or a table { mean = 1.0, std = 0.1 }")
    unknown = [k for k in v if k not in RWF_DEFAULT]
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}'{did_you_mean(unknown[0], list(RWF_DEFAULT))} (valid: mean, std)")
    if not v:
        return {}
    return {"mean": _float(positive=False)(v.get("mean", RWF_DEFAULT["mean"])),
            "std": _float()(v.get("std", RWF_DEFAULT["std"]))}


def _causal(v: Any) -> Any:
    if not isinstance(v, dict):
        raise ValueError("expected a table { chunks = M, tol = eps } (an empty table: off)")
    unknown = [k for k in v if k not in ("chunks", "tol")]
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}'{did_you_mean(unknown[0], ['chunks', 'tol'])} (valid: chunks, tol)")
    if v and set(v) != {"chunks", "tol"}:
        raise ValueError("give both chunks (time slices, an integer >= 2) and tol (epsilon, a number >= 0)")
    if not v:
        return {}
    tol = _float(positive=False)(v["tol"])
    if tol < 0:
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    return {"chunks": _int(2)(v["chunks"]), "tol": tol}


def _diverge_factor(v: Any) -> Any:
    v = _float(positive=False)(v)
    if v != 0 and v <= 1:
        raise ValueError(f"expected 0 (off) or a factor > 1, got {v!r}")
    return v


def _k(v: Any) -> Any:
    if v == "auto":
        return v
    if isinstance(v, dict):
        return {name: _k(x) for name, x in v.items()}
    return _int(0)(v)


def _terms(v: Any) -> Any:
    if v == "auto" or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        return v
    raise ValueError(f"expected \"auto\" or a list of term names, got {v!r}")


CHECKS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "model": {
        "kind": _choice(*MODEL_KINDS), "rank": _rank, "scale": _choice(*SCALES),
        "width": _int(1), "depth": _int(2), "body": _choice(*BODIES),
        "activation": _choice(*ACTIVATIONS), "omega0": _float(), "fourier_features": _int(0),
        "fourier_scale": _float(), "periodic_modes": _int(1), "weight_factorization": _weight_factorization,
    },
    "train": {
        "optimizer": _choice(*OPTIMIZERS), "lr": _float(), "schedule": _choice(*SCHEDULES),
        "decay_rate": _float(), "decay_every": _int(1), "iterations": _int(0),
        "lbfgs_iterations": lambda v: v if v == "auto" else _int(0)(v), "points": _int_or_table(2, auto=True), "sampling": _choice(*SAMPLINGS),
        "resample_every": _int(1), "eval_every": _int(1), "test_points": _int_or_table(2),
        "face_reduction": _choice(*FACE_REDUCTIONS), "checkpoint_every": _int(0),
        "on_nan": _choice("stop", "rollback"), "memory_limit": _auto_or_float,
        "compile": _auto_or_bool, "grid_free": _auto_or_bool,
        "dtype": _choice(*DTYPES), "lbfgs_dtype": _choice("auto", *DTYPES), "seed": _int(0, 2**63 - 2),
        "device": _device, "weights": _weights,
        "balance": _choice(*BALANCES), "balance_every": _int(1), "balance_momentum": _momentum,
        "causal": _causal, "diverge_factor": _diverge_factor, "outputs_from": _choice("final", "best"),
        "threads": lambda v: v if v == "auto" else _int(1, 1024)(v), "shard_axis": _name,
        "windows": _int(1, 1000),
    },
    "precondition": {
        "method": _choice(*PRECONDITIONERS), "k": _k, "scale": _choice("normalized", "paper"),
        "modulation": _choice(*MODULATIONS), "update_every": _int(0), "terms": _terms,
    },
}


WHOLE_TABLES = ("causal", "weight_factorization")  # a later layer replaces these tables (an empty one: off)


def _merge_layer(target: dict[str, dict[str, Any]], layer: Mapping[str, Any], file: str, prefix: str = "") -> None:
    """Check one layer's tables and keys, and merge its values over ``target``."""
    for table, values in layer.items():
        tkey = f"{prefix}{table}"
        if table not in CHECKS:
            raise SolverConfigError(f"unknown table '{table}'{did_you_mean(table, CHECKS)} (valid: {', '.join(CHECKS)})", file=file, key=tkey)
        if not isinstance(values, dict):
            raise SolverConfigError(f"expected a table [{table}]", file=file, key=tkey)
        for key, value in values.items():
            checks = CHECKS[table]
            if key not in checks:
                raise SolverConfigError(f"unknown key '{key}'{did_you_mean(key, checks)} (valid: {', '.join(checks)})", file=file, key=f"{tkey}.{key}")
            try:
                value = checks[key](value)
            except ValueError as exc:
                raise SolverConfigError(str(exc), file=file, key=f"{tkey}.{key}") from None
            if isinstance(value, dict) and isinstance(target[table].get(key), dict) and key not in WHOLE_TABLES:
                target[table][key] = {**target[table][key], **value}
            else:
                target[table][key] = value


def parse_override(text: str) -> dict[str, Any]:
    """``train.iterations=200`` -> {"train": {"iterations": 200}}; a value that is not TOML is a string."""
    if any(ch in text for ch in "\n\r\x00") or not text.isprintable():
        raise SolverConfigError(f"'{text}' holds a line break or a control character; give one KEY=VALUE "
                                "per --set", file="--set")
    if "=" not in text:
        raise SolverConfigError(f"expected KEY=VALUE, got '{text}'", file="--set")
    key, raw = (s.strip() for s in text.split("=", 1))
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise SolverConfigError(f"expected TABLE.KEY=VALUE (e.g. train.iterations=200), got '{text}'", file="--set")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _deep_update(a: dict[str, Any], b: Mapping[str, Any]) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _deep_update(a[k], v)
        else:
            a[k] = v


def load_solver_file(solver: str | Path) -> tuple[dict[str, Any], str]:
    """A solver file path or a shipped preset name -> (tables, label for messages)."""
    path = Path(solver)
    if not path.exists() and isinstance(solver, str) and re.fullmatch(r"[\w-]+", solver):
        preset = shipped_dir("solvers") / f"{solver}.toml"
        if not preset.exists():
            names = shipped_names("solvers")
            raise SolverConfigError(
                f"no such file or preset '{solver}'{did_you_mean(solver, names)} (presets: {', '.join(names)})",
                file="--solver")
        path = preset
    doc, _ = read_toml(path, SolverConfigError)  # type: ignore[arg-type]
    return doc, str(path)


def resolve(
    problem_table: Mapping[str, Any] | None = None,
    problem_file: str = "<problem>",
    solver: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
    problem_solver: str = "",
) -> SolverConfig:
    """Resolve settings in the contract's order: defaults < the problem's ``[problem] solver``
    preset or file < its ``[solver]`` tables < ``solver`` (``--solver``) < ``overrides`` (``--set``);
    each layer's mistakes name that layer."""
    merged: dict[str, dict[str, Any]] = {t: dataclasses.asdict(cls()) for t, cls in TABLES.items()}
    if problem_solver:
        doc, label = load_solver_file(problem_solver)
        _merge_layer(merged, doc, label)
    if problem_table:
        _merge_layer(merged, problem_table, problem_file, prefix="solver.")
    if isinstance(solver, Mapping):
        _merge_layer(merged, solver, "<solver>")
    elif solver is not None:
        doc, label = load_solver_file(solver)
        _merge_layer(merged, doc, label)
    if overrides:
        layer: dict[str, Any] = {}
        items = overrides if isinstance(overrides, list) else [f"{k}={_toml_value(v)}" for k, v in overrides.items()]
        for item in items:
            _deep_update(layer, parse_override(item))
        _merge_layer(merged, layer, "--set")
    return SolverConfig(**{t: TABLES[t](**merged[t]) for t in TABLES})


# --------------------------------------------------------------------------- TOML text
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Nested tables of scalars, lists and inline tables as TOML text (round-trips tomllib)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)
