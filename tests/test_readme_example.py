"""The README's "Test your program against trio_stock" example runs, exactly as written.

The code block after the ``<!-- readme-test -->`` marker is a user's own pytest-trio test
file. It is written to a directory of its own and run by a separate ``python -m pytest``,
as a user would run it, so the README cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- readme-test -->"
BLOCK = re.compile(re.escape(MARKER) + r"\s*```python\n(.*?)```", re.DOTALL)
# The block's own directory is its root: no pytest configuration above it applies, and
# warnings fail the run as they do in this suite.
PYTEST_INI = "[pytest]\nfilterwarnings = error\naddopts = --strict-markers\n"


def readme_test() -> str:
    """The one marked code block of the README."""
    text = README.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"README.md must mark exactly one block with {MARKER}"
    match = BLOCK.search(text)
    assert match is not None, f"{MARKER} must be followed by a ```python block"
    return match.group(1)


def test_the_readme_test_example_passes_as_a_users_own_test(tmp_path: Path) -> None:
    (tmp_path / "test_my_program.py").write_text(readme_test(), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    # A developer's provider keys or gateway settings must not change what the example does.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_"))}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_program.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    summary = re.search(r"^(\d+) passed in ", report, re.MULTILINE)
    assert summary is not None, report  # nothing failed, skipped or errored beside them
    assert int(summary.group(1)) >= 1, report
