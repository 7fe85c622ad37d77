"""``seppinn`` command line: a thin layer over the Python API.

Exit status: 0 done; 2 bad input (one line, nothing written); 1 failure during the run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Interrupted, RunError, SeppinnError, one_line
from .formats import FORMATS

if TYPE_CHECKING:
    from .train.distributed import World


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="seppinn", description="Separable PINNs with SepPGD.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("solve", help="train on a problem file and write the results")
    s.add_argument("problem", help="problem file (TOML)")
    s.add_argument("--solver", help="solver file, or a shipped preset name (e.g. spinn)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a solver key, e.g. --set train.iterations=200 (repeatable)")
    s.add_argument("--out", help="output folder (default: runs/<problem name>)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its settings; --set may extend it)")
    s.add_argument("--force", action="store_true", help="overwrite an output folder that holds another problem's run")
    s.add_argument("--threads", type=int, metavar="N", help="CPU threads (the same as --set train.threads=N)")
    s.add_argument("--init-from", metavar="DIR", help="start from the final weights of the run in DIR (a warm start)")
    _plugin_option(s)

    c = sub.add_parser("check", help="parse and compile a problem; report terms, grids, memory")
    c.add_argument("problem")
    c.add_argument("--solver")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="also report a torchrun run on N processes: memory per rank, communication per step")
    _plugin_option(c)

    sp_ = sub.add_parser("spectrum", help="SepPGD: NTK eigenvalues before and after preconditioning")
    sp_.add_argument("problem")
    sp_.add_argument("--solver")
    sp_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp_.add_argument("--out", help="output folder (default: runs/<problem name>/spectrum)")
    _plugin_option(sp_)

    x = sub.add_parser("export", help="re-evaluate a finished run on any grid (xdmf, vtu, vti)")
    x.add_argument("run", help="run folder (with model.pt)")
    x.add_argument("--format", default="xdmf", choices=list(FORMATS))
    x.add_argument("--points", type=int, default=64, help="points per axis")
    x.add_argument("--state", default="final", choices=["final", "best"],
                   help="the final weights (model.pt) or the lowest-loss ones (best.pt); default final")
    x.add_argument("--at", action="append", default=[], metavar="AXIS=VALUE",
                   help="hold an axis at one value, e.g. a parameter axis: --at mu=2.5 (repeatable)")
    _plugin_option(x)

    pl = sub.add_parser("plot", help="convergence curves of one or several runs, side by side")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default="convergence.png", help="PNG to write (default: convergence.png)")

    e = sub.add_parser("examples", help="copy the shipped problem files into a folder")
    e.add_argument("dir", nargs="?", default="seppinn-examples")
    e.add_argument("--force", action="store_true", help="overwrite files that already exist there (kept otherwise)")

    ls = sub.add_parser("list", help="every name a problem or solver file can use (operators, models, ...)")
    _plugin_option(ls)
    return p


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a Python module that registers operators with seppinn.operator (repeatable)")


def _solve(args: argparse.Namespace) -> int:
    """``solve``; under torchrun (``WORLD_SIZE`` > 1) as one rank of a distributed run: rank 0
    prints and writes, and a failure on any rank ends every rank (status 1; 2 when every rank
    failed on the same bad input)."""
    from .train import distributed

    world = distributed.start()
    try:
        return _solve_as(args, world)
    except (SeppinnError, RunError, OSError) as exc:
        if not world.active:
            raise
        if world.writes:
            print(one_line(f"seppinn: {exc}"), file=sys.stderr)
        bad = isinstance(exc, distributed.RankFailed) and exc.bad_input and len(exc.messages) == world.size
        return 2 if bad else 1
    finally:
        distributed.stop()


def _solve_as(args: argparse.Namespace, world: World) -> int:
    from .api import Prepared, prepare, prepare_resume, run
    from .train.distributed import digest

    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")

    def load() -> tuple[Prepared, dict[str, Any] | None]:
        if args.resume:
            if args.solver:
                raise SeppinnError("a resumed run keeps its own settings; change them with --set", key="--solver")
            return prepare_resume(args.problem, args.resume, args.overrides, nproc=world.size)
        return prepare(args.problem, args.solver, args.overrides, nproc=world.size), None

    def summary(loaded: tuple[Prepared, dict[str, Any] | None]) -> str:
        p = loaded[0]
        return digest(p.problem.text, p.config.to_toml(), arrays=list(p.data_arrays.values()))

    prep, snapshot = world.agree(load, summary)
    out = Path(args.out) if args.out else Path(args.resume) if args.resume else Path("runs") / prep.problem.name
    if args.resume and args.init_from:
        raise SeppinnError("a resumed run continues from its own state; --init-from starts a new one", key="--init-from")
    try:
        # a resumed run writes back into its own folder (its checkpoint was just read as this problem's)
        result = run(prep, out, progress=not args.quiet, resume=snapshot, handle_signals=True,
                     force=args.force or (bool(args.resume) and not args.out), init_from=args.init_from, world=world)
    except Interrupted as exc:
        if world.writes:
            print(f"{exc}\ncontinue with: seppinn solve {args.problem} --resume {out}", file=sys.stderr)
        return 130
    if not world.writes:
        return 0
    print(f"{prep.problem.name}: {result.iterations} iterations in {result.wall_seconds:.1f} s -> {out}"
          + (f" ({world.size} processes, split along {result.shard_axis})" if world.active else ""))
    best = result.metrics_at_min_loss
    for f, m in result.metrics.items():
        print(f"  {f}: rel_l2 {m['rel_l2']:.4e} (final), {best[f]['rel_l2']:.4e} "
              f"(at min loss, iteration {best['iteration']}); "
              + "; ".join(f"{k} {v:.4g}" for k, v in m.items() if k != "rel_l2"))
    return 0


def _check(args: argparse.Namespace) -> int:
    from .api import check_report, prepare

    if args.nproc < 1:
        raise SeppinnError(f"expected a number of processes >= 1, got {args.nproc}", key="--nproc")
    print(check_report(prepare(args.problem, args.solver, args.overrides), args.nproc))
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    from . import spectrum
    from .api import prepare

    prep = prepare(args.problem, args.solver, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / prep.problem.name / "spectrum"
    spectra = spectrum.compute(prep)
    files = spectrum.write(spectra, out)
    for name, v in spectra.items():
        print(f"{name}: {len(v)} eigenvalues, largest {v[0]:.3e}, smallest {v[-1]:.3e}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    at: dict[str, float] = {}
    for item in args.at:
        name, _, value = item.partition("=")
        try:
            at[name.strip()] = float(value)
        except ValueError:
            raise SeppinnError(f"expected AXIS=VALUE with a number, got {item!r}", key="--at") from None
    for path in export(args.run, args.format, args.points, args.state, at):
        print(path)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .io.plots import compare_runs

    print(compare_runs(args.runs, Path(args.out)))
    return 0


def _examples(args: argparse.Namespace) -> int:
    from .problem.resources import copy_examples

    dest = Path(args.dir)
    copied, kept = copy_examples(dest, force=args.force)
    print(f"copied {len(copied)} files into {dest}" + (f": {', '.join(copied)}" if copied else ""))
    if kept:
        print(f"kept {len(kept)} existing files as they are (--force overwrites them): {', '.join(kept)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .name_catalog import catalog, format_catalog

    print(format_catalog(catalog()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        from .name_catalog import load_plugin

        for module in getattr(args, "plugin", []):
            load_plugin(module)
        return {"solve": _solve, "check": _check, "spectrum": _spectrum, "export": _export, "plot": _plot,
                "examples": _examples, "list": _list}[args.command](args)
    except SeppinnError as exc:
        print(exc, file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: earlier outputs stay as they were
        print(one_line(f"run failed: cannot write: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
