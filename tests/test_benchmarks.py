"""The benchmark scripts still run: every entry point's --help, every command the READMEs quote
parsed by its script, and the cheap scripts at tiny sizes (no peer venv, no shared photos)."""

import argparse
import json
import math
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmarks.bench_known as bench_known
import benchmarks.bench_layouts as bench_layouts
import benchmarks.bench_near as bench_near
import benchmarks.bench_near_blocks as bench_near_blocks
import benchmarks.bench_object_store as bench_object_store
import benchmarks.mih_bound as mih_bound
from memgen.near import HASH_BITS, MAX_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent
# peer_imagededup.py runs in the benchmark venv, but parses its arguments before importing imagededup
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text())
COMMAND = re.compile(r"python (?:-m benchmarks\.(\w+)|benchmarks/(\w+)\.py)([^`\n]*)")


def quoted_commands() -> list[tuple[str, list[str]]]:
    """(script, argv) of every benchmark command in the READMEs, continuation lines joined."""
    found = []
    for readme in ("README.md", "benchmarks/README.md", "deploy/README.md"):
        text = (ROOT / readme).read_text().replace("\\\n", " ")
        for module, path, rest in COMMAND.findall(text):
            found.append((module or path, shlex.split(rest, comments=True)))
    return found


class Parsed(Exception):
    """Raised in place of running a script once its arguments are parsed."""


def run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    runpy.run_path(str(ROOT / "benchmarks" / f"{name}.py"), run_name="__main__")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_entry_point_answers_help_without_running(script, monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        run_script(script.stem, ["--help"], monkeypatch)
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_every_quoted_command_parses(monkeypatch):
    commands = quoted_commands()
    assert {name for name, _ in commands} >= {"calibrate", "bench_near", "bench_e2e", "bench_sample",
                                              "bench_known"}
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))  # an unknown flag exits 2 before this

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for name, argv in commands:
        with pytest.raises(Parsed):
            run_script(name, argv, monkeypatch)


def test_near_pipeline_refuses_a_size_it_would_not_run(monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        run_script("bench_near_pipeline", ["5000"], monkeypatch)  # hashes come in chunks of 10,000
    assert done.value.code == 2
    assert "multiple of 10,000" in capsys.readouterr().err


def test_known_refuses_a_size_that_is_not_whole_shards(monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        run_script("bench_known", ["--known-images", "20000", "--new-images", "700"], monkeypatch)
    assert done.value.code == 2
    assert f"multiples of {bench_known.SHARD}" in capsys.readouterr().err


def test_known_splits_the_corpus_into_the_first_records_and_the_last(monkeypatch, tmp_path):
    def make_corpus(out, n_images, shard_size):  # empty shards stand in for the photos' renditions
        (out / "shards").mkdir(parents=True)
        for i in range(n_images // shard_size):
            (out / "shards" / f"{i:05d}.tar").write_bytes(str(i).encode())
        return {"images": n_images}

    monkeypatch.setattr(bench_known, "make_corpus", make_corpus)
    shard = bench_known.SHARD
    bench_known.split_corpus(tmp_path, [2 * shard, 4 * shard], shard)
    folders = (f"known-{2 * shard}", f"known-{4 * shard}", "new")
    names = {d: sorted(p.name for p in (tmp_path / d).iterdir()) for d in folders}
    assert names == {f"known-{2 * shard}": ["00000.tar", "00001.tar"],
                     f"known-{4 * shard}": ["00000.tar", "00001.tar", "00002.tar", "00003.tar"],
                     "new": ["00004.tar"]}


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


def test_layouts_at_a_tiny_size(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_layouts, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_layouts", "--sizes", "3000", "--k", "6", "--rounds", "1"])
    bench_layouts.main()
    rows = json.loads((tmp_path / "layouts.json").read_text())["rows"]
    assert sum(r["picked"] for r in rows) == 1
    for r in rows:  # every layout keeps the pigeonhole units of an exact search at k
        assert sum(r["widths"]) <= 64 and sum(radius + 1 for radius in r["radii"]) == 6 + 1


def test_near_blocks_at_a_tiny_size(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_near_blocks, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_near_blocks", "--sizes", "20000", "--check", "20000",
                                      "--block-target", "4096", "--thresholds", "4", "--blocks", "1"])
    bench_near_blocks.main()
    result = json.loads((tmp_path / "near_blocks.json").read_text())
    (estimate,), (check,) = result["estimates"], result["checks"]
    assert estimate["cpu_us_per_hash"] > 0 and check["cpu_us_per_hash"] > 0
    # every hash is routed to its home block in each band at least
    assert estimate["copies_per_hash"] >= len(estimate["plan"]["widths"])


def test_mih_bound_against_the_one_band_layout(monkeypatch, tmp_path):
    # k = 0: one band at radius 0; the widest, all 64 bits, costs a key to index a hash, a key
    # to probe it, and c x n / 2^64 candidates
    for n, c in ((10**18, 1.0), (10**15, 10.0)):
        assert mih_bound.least_work(n, 0, c) == (pytest.approx(2 + c * n / 2**64), ((64, 0, 0),))
    monkeypatch.setattr(mih_bound, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["mih_bound", "--sizes", "1000", "100000", "--k", "2",
                                      "--plan-sizes", "100000", "--plan-thresholds", "2"])
    mih_bound.main()
    result = json.loads((tmp_path / "mih_bound.json").read_text())
    assert all(small <= large for small, large in (row["work"] for row in result["rows"]))
    (plan,) = result["memgen_plans"]
    assert plan["least_work"] <= plan["work"] and math.isfinite(plan["work"])


def test_readers_metadata_rows_at_a_tiny_size(monkeypatch, capsys):
    """The metadata.jsonl mode: no photos needed, every row found, the bytes held said."""
    run_script("bench_readers", ["--metadata-rows", "2000", "--rounds", "1"], monkeypatch)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("metadata.jsonl of 2000 rows") and "B a row" in out[1]


def test_components_at_a_tiny_size(monkeypatch, capsys):
    """The stage's record against the reference's, one table row a path (sorted 40 converges)."""
    run_script("bench_components", ["--nodes", "40"], monkeypatch)
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| sorted 40 | ") and "True | 0 | 0 |" in row


def test_planted_pairs_are_within_k():
    hashes, i, j = bench_near.planted(1000, 10)
    d = np.bitwise_count(hashes[i] ^ hashes[j])
    assert len(i) == 10 and ((d >= 1) & (d <= 10)).all()


def test_mih_bound_sweeps_every_verify_cost_the_readme_table_shows():
    text = (ROOT / "benchmarks/README.md").read_text()
    table = text.split("| relative verify cost c |", 1)[1].split("\n\n", 1)[0]
    costs = {float(line.split("|")[1]) for line in table.splitlines()[2:]}
    assert costs and costs <= set(mih_bound.RELATIVE_VERIFY_COSTS)


def test_classifier_bench_reads_the_photos_where_memgen_realimages_says(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMGEN_REALIMAGES", str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit, match="elsewhere"):
        run_script("bench_classifier", [], monkeypatch)


def test_object_store_counts_requests_on_the_bucket_as_the_bucket(tmp_path):
    requests = ("HEAD /bench", "PUT /bench", "GET /bench?list-type=2&prefix=memory%2F",
                "PUT /bench/memory/images/part-00001.parquet", "HEAD /bench/memory")
    log = tmp_path / "server.log"  # as moto's server writes it
    log.write_text("".join(f'127.0.0.1 - - [03/Dec/2026 06:00:00] "{r} HTTP/1.1" 200 -\n' for r in requests))
    expected = {"HEAD (bucket)": 1, "PUT (bucket)": 1, "GET (bucket)": 1, "PUT images/part-N.parquet": 1,
                "HEAD memory": 1}
    assert bench_object_store._requests(log, 0) == (5, expected)


@pytest.mark.parametrize("argv", [[], ["search", "hashes.json", "10"], ["e2e", "folder", "10", "0"]])
def test_peer_imagededup_answers_a_wrong_command_line_with_its_usage(argv, monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:  # before it imports imagededup, absent from this venv
        run_script("peer_imagededup", argv, monkeypatch)
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("peer_imagededup.py")


@pytest.mark.parametrize("script, argv", [
    ("bench_e2e", ["speed", "--repeats", "0"]), ("bench_e2e", ["speed", "--images", "0"]),
    ("bench_e2e", ["rss", "--rss-gb", "0"]), ("bench_fingerprint", ["--rounds", "0"]),
    ("bench_fingerprint", ["--processes", "-1"]), ("bench_object_store", ["--parts", "0"]),
    ("bench_layouts", ["--rounds", "0"]), ("bench_metrics", ["--rounds", "0"]),
    ("bench_near", ["--workers", "0"]), ("bench_near", ["--threshold", "-1"]),
    ("bench_near_blocks", ["--blocks", "0"]), ("bench_sample", ["--n", "0"]),
    ("bench_classifier", ["--repeat", "0"]), ("bench_stage_costs", ["--records", "9"]),
    ("mih_bound", ["--sizes", "0", "1000"]),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_a_count_too_small_to_measure_anything_is_a_usage_error(script, argv, monkeypatch, capsys):
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))  # accepted: the script would run, then fail

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(SystemExit) as done:
        run_script(script, argv, monkeypatch)
    assert done.value.code == 2
    assert "must be " in capsys.readouterr().err.splitlines()[-1]


def _parsed_or_usage_error(script: str, argv: list[str], monkeypatch) -> argparse.Namespace | None:
    """The script's parsed arguments, or None where argparse refused them (exit 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        run_script(script, argv, monkeypatch)
    except Parsed as parsed:
        return parsed.args[0]
    except SystemExit as done:
        assert done.code == 2
        return None
    raise AssertionError(f"{script} neither parsed {argv} nor refused it")


@pytest.mark.parametrize("script, flag, most", [
    ("bench_near", "--threshold", MAX_THRESHOLD), ("bench_layouts", "--k", MAX_THRESHOLD),
    ("bench_near_blocks", "--thresholds", MAX_THRESHOLD), ("mih_bound", "--plan-thresholds", MAX_THRESHOLD),
    ("mih_bound", "--k", HASH_BITS - 1),  # k + 1 bands of a bit or more
], ids=lambda x: x if isinstance(x, str) else str(x))
def test_a_threshold_beyond_what_a_hash_takes_is_a_usage_error(script, flag, most, monkeypatch, capsys):
    """Beyond memgen's MAX_THRESHOLD, plan_search raises (a traceback after the set-up); beyond
    64 bits no two hashes differ: said at once, as a usage error."""
    accepted = _parsed_or_usage_error(script, [flag, str(most)], monkeypatch)
    assert accepted is not None and getattr(accepted, flag[2:].replace("-", "_")) in (most, [most])
    for value in (most + 1, 65):
        assert _parsed_or_usage_error(script, [flag, str(value)], monkeypatch) is None
        assert capsys.readouterr().err.splitlines()[-1].endswith(f"must be at most {most}, not {value}")


def test_the_readme_names_the_benchmarks_that_print_their_result_instead_of_writing_json():
    intro = (ROOT / "benchmarks/README.md").read_text().split("\n\n")[1]
    printing = set(re.findall(r"`(\w+\.py)`", intro.split("print theirs instead", 1)[-1]))
    writing = {p.name for p in SCRIPTS if "write_text(json.dumps(" in p.read_text()}
    assert printing == {p.name for p in SCRIPTS} - writing - {"peer_imagededup.py"}  # a peer, not a benchmark
