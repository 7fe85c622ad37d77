"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

from .conftest import ROOT


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    solve_cmd, test_cmd = block
    assert "seppinn solve problems/helmholtz3d.toml" in solve_cmd
    assert "pytest" in test_cmd
    assert test_cmd in (ROOT / ".ci/run").read_text().splitlines()
