"""`seethrough attack`."""
import pandas as pd
import pytest

import seethrough
from seethrough.cli import main


def test_attack_writes_images_table_result_and_transfer(tmp_path):
    out = tmp_path / "adv"
    assert main(["attack", "conceptnet", "--conceptworld", "6", "--method", "fgsm", "--eps",
                 "8/255", "--transfer", "conceptnet_cheater", "--out", str(out)]) == 0
    table = pd.read_csv(out / "attack.csv")
    assert len(table) == 6 and (table.linf <= 8 / 255 + 1e-6).all()
    assert len(list((out / "images").glob("*.png"))) == 6
    assert seethrough.load_result(out / "result").method == "fgsm"
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer.target) == {"conceptnet", "conceptnet_cheater"}


def test_bad_target_and_budget_are_one_line_errors(tmp_path, capsys):
    assert main(["attack", "conceptnet", "--conceptworld", "2", "--target", "cat",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--target must be a class index or least_likely" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["attack", "conceptnet", "--conceptworld", "2", "--eps", "x/y",
              "--out", str(tmp_path / "o")])
    assert stopped.value.code == 2 and "not a number or fraction: 'x/y'" in capsys.readouterr().err
