"""common/lazy.skipping_inits: a module imported without its packages' __init__, on packages
made here (the libraries it serves are tested through their users: tests/unit/test_cold_imports,
and the vision projector's tests, which import llama_cpp whole after its bindings)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.path.insert(0, {tree!r})
from common.lazy import skipping_inits
leaf = skipping_inits("heavy.inner.leaf", ["heavy", "heavy.inner"])
print("LEAF", leaf.VALUE, [m for m in ("heavy", "heavy.inner", "ran") if m in sys.modules])
print("AGAIN", skipping_inits("heavy.inner.leaf", ["heavy"]) is leaf)
import heavy
from heavy.inner import leaf as later
print("REAL", heavy.RAN, "ran" in sys.modules, later is leaf)
try:
    skipping_inits("absent.leaf", ["absent"])
except ModuleNotFoundError as exc:
    print("MISSING", exc.name)
"""


def test_a_leaf_loads_without_its_packages_code_and_they_load_whole_later(tmp_path: Path):
    inner = tmp_path / "heavy" / "inner"
    inner.mkdir(parents=True)
    # Each __init__ would mark that it ran, and the outer one imports a module named `ran`.
    (tmp_path / "heavy" / "__init__.py").write_text("import ran\nRAN = True\nfrom . import inner\n")
    (inner / "__init__.py").write_text("import ran\n")
    (inner / "leaf.py").write_text("from .. import inner as _parent\nVALUE = 42\n")
    (tmp_path / "ran.py").write_text("")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(tree=str(tmp_path)))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "LEAF 42 []" in lines and "AGAIN True" in lines, lines
    # Imported later, the package runs its code, and the module loaded before is the one.
    assert "REAL True True True" in lines, lines
    assert "MISSING absent" in lines, lines
