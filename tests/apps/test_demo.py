"""The demo: attribute tasks on scikit-learn digits and the NCE matrix it prints."""

import json

import numpy as np
from sklearn.datasets import load_digits

import jaxtransfer as jt
from jaxtransfer.cli import main
from jaxtransfer.datasets import digits_attribute_tasks


def test_tasks_are_attributes_of_the_digits():
    tasks = digits_attribute_tasks()
    digit = load_digits().target
    assert len(tasks.names) >= 12 and tasks.labels.shape == (len(tasks.names), digit.size)
    by_name = dict(zip(tasks.names, tasks.labels, strict=True))
    np.testing.assert_array_equal(by_name["odd"], digit % 2)
    np.testing.assert_array_equal(by_name["is_7"], digit == 7)
    np.testing.assert_array_equal(by_name["digit"], digit)
    for labels, classes in zip(tasks.labels, tasks.num_classes, strict=True):
        assert labels.max() < classes


def test_demo_json_matches_direct_scores(capsys, tmp_path):
    assert main(["demo", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    tasks = digits_attribute_tasks()
    i, j = tasks.names.index("digit"), tasks.names.index("odd")
    # the digit determines parity: NCE(digit -> odd) = 0; the reverse leaves log(5) of 10 digits
    assert abs(result["nce"][i][j]) < 1e-6
    assert result["nce"][j][i] == np.float32(jt.nce(tasks.labels[j], tasks.labels[i])).item()
    assert result["hardness"][i] == np.float32(jt.hardness(tasks.labels[i])).item()
    assert result["best_sources"]["odd"][0][0] == "digit"


def test_demo_table_prints_ranked_hardness(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Hardness H(Y)" in out and "Timings:" in out
    first = next(line for line in out.splitlines() if line.strip().startswith("1."))
    assert "digit" in first  # 10 classes: the hardest task
