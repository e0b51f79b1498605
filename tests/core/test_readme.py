"""The README's Python examples run as written (in order, in one namespace)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["maps"].maps.shape == (8, 1, 64, 64)
    assert len(namespace["table"].to_frame()) > 0
    assert namespace["result"].images.shape[0] == 3
