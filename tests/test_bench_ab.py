"""``python -m tinyrnn.bench.ab``: two checkouts' kernels timed in one process, alternately."""
from pathlib import Path

import pytest

from tinyrnn.bench import ab

REPO = Path(__file__).resolve().parents[1]


def test_ab_times_both_copies_of_a_config_step(tmp_path, capsys):
    """The repository against itself: every product of config a's step, a line each, both copies
    imported under their own names and compiled into the work directory."""
    ab.main([str(REPO), "--new", str(REPO), "--config", "a", "--rounds", "2", "--only", "products",
             "--workdir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine: ") and "config a" in lines[0]
    rows = lines[1:]
    assert [row.split()[0] for row in rows] == ["tn", "nt", "nn", "nt", "nn", "tn"]
    assert rows[0].split()[1] == "512x2048x128"                 # G*H x B*T x H for LSTM 1x128, B32 T64
    for row in rows:
        ratio = float(row.split("new/old")[1])
        assert ratio > 0
    assert all((tmp_path / name / "kernels" / "cpu" / "matmul.py").is_file() for name in ab.NAMES)


def test_ab_refuses_a_directory_without_the_package(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ab.main([str(tmp_path), "--workdir", str(tmp_path / "work")])
    assert "holds no tinyrnn/ package: give a checkout's root directory" in str(e.value)


def test_ab_refuses_zero_rounds(capsys):
    with pytest.raises(SystemExit) as e:
        ab.main([str(REPO), "--rounds", "0"])
    assert e.value.code == 2 and "--rounds 0: give at least 1" in capsys.readouterr().err


def test_ab_sampling_refuses_a_bidirectional_config(tmp_path):
    with pytest.raises(SystemExit) as e:
        ab.main([str(REPO), "--new", str(REPO), "--config", "e", "--only", "sampling", "--workdir", str(tmp_path)])
    assert "config e is bidirectional, and a bidirectional model does not sample" in str(e.value)


def test_ab_copies_run_their_own_kernels(tmp_path):
    """Each copy's cases call its own kernels: ``backend.kernels`` imports ``tinyrnn.kernels.*`` by
    name, which in a copy is the installed package, not the copy (its sampling timed the installed
    code for both)."""
    copy = ab.load(REPO, "tinyrnn_ab_new", tmp_path)
    assert ab.cpu_kernels(copy).__name__ == "tinyrnn_ab_new.kernels.cpu"
    assert copy.backend.kernels("cpu").__name__ == "tinyrnn.kernels.cpu"      # why ab does not use it
