"""`import seethrough` stays light: well under 1.5 s beyond torch's own import."""
from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = (
        "import time, torch; t = time.perf_counter(); import seethrough; "
        "seethrough.Trace; seethrough.load_model; print(time.perf_counter() - t)"
    )
    seconds = float(subprocess.check_output([sys.executable, "-c", code], text=True).strip())
    assert seconds < 1.5
    heavy = subprocess.check_output(
        [sys.executable, "-c", "import sys, seethrough; print(sorted(m for m in "
         "('matplotlib', 'pandas', 'sklearn', 'cv2', 'skimage', 'numba') if m in sys.modules))"], text=True)
    assert heavy.strip() == "[]"


def test_public_functions_are_plain_functions_beside_their_packages():
    code = ("import seethrough, seethrough.dissection.run, seethrough.evaluation.localization; "
            "print(type(seethrough.dissect).__name__, type(seethrough.evaluate).__name__)")
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["function"] * 2
