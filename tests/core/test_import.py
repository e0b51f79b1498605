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


def test_functions_named_like_their_package_stay_callable():
    code = ("import seethrough, seethrough.dissect.run, seethrough.evaluate.localization; "
            "print(callable(seethrough.dissect), callable(seethrough.evaluate))")
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["True"] * 2
