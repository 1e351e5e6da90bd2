"""The benchmark scripts still run: every entry point's --help, every command the READMEs quote
parsed by its script, and the cheap scripts at tiny sizes (no peer venv, no shared photos)."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmarks.bench_near as bench_near

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    runpy.run_path(str(ROOT / "benchmarks" / f"{name}.py"), run_name="__main__")


def test_near_pipeline_refuses_a_size_it_would_not_run(monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        run_script("bench_near_pipeline", ["5000"], monkeypatch)  # hashes come in chunks of 10,000
    assert done.value.code == 2
    assert "multiple of 10,000" in capsys.readouterr().err


def test_bench_near_with_a_budget_its_first_peer_run_exceeds(monkeypatch, tmp_path):
    def peer(command, path, k, workers):  # imagededup's brute force: time grows as n^2
        n = len(json.loads(Path(path).read_text()))
        return {"n": n, "search_s": (n / 1000) ** 2, "pairs": 0}

    monkeypatch.setattr(bench_near, "OUT", tmp_path)
    monkeypatch.setattr(bench_near, "peer", peer)
    monkeypatch.setattr(sys, "argv", ["bench_near", "--sizes", "1000", "4000", "--peer-budget", "0.1"])
    bench_near.main()
    result = json.loads((tmp_path / "near.json").read_text())
    assert [r["n"] for r in result["imagededup_measured"]] == [1000, 2000]  # two sizes to fit
    assert result["imagededup_fit_exponent"] == pytest.approx(2.0)
    assert all(r["planted_found"] == r["planted"] > 0 for r in result["memgen"])
    assert result["memgen"][1]["imagededup_s_extrapolated"] == pytest.approx(16.0)


def test_planted_pairs_are_within_k():
    hashes, i, j = bench_near.planted(1000, 10)
    d = np.bitwise_count(hashes[i] ^ hashes[j])
    assert len(i) == 10 and ((d >= 1) & (d <= 10)).all()