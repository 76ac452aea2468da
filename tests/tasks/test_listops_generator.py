"""ListOps generator: values, exact LRA serialisation, bounds, determinism, dedup, statistics."""

from __future__ import annotations

import csv
import io
import random

import numpy as np
import pytest

from surnn.errors import ConfigError
from tasks.generators import listops as gen
from tasks.generators.listops import ListOpsSpec, apply_ops, content_length, evaluate

SMALL = ListOpsSpec(seed=3, n_train=300, n_val=40, n_test=40, min_length=20, max_length=150)


@pytest.fixture(scope="module")
def small():
    return gen.generate(SMALL, workers=1, progress=False)


# ----------------------------------------------------------------------------- values

HAND = [
    ("( ( ( [MIN 4 ) 7 ) ] )", 4),
    ("( ( ( ( [MAX 2 ) 9 ) 3 ) ] )", 9),
    ("( ( ( ( [MED 8 ) 1 ) 5 ) ] )", 5),  # odd count
    ("( ( ( [MED 1 ) 4 ) ] )", 2),  # even count: (1 + 4) / 2 = 2.5 -> 2
    ("( ( ( ( ( [MED 9 ) 0 ) 3 ) 8 ) ] )", 5),  # sorted 0 3 8 9 -> 5.5 -> 5
    ("( ( ( ( [SM 7 ) 8 ) 9 ) ] )", 4),  # 24 mod 10
    ("( ( ( [MAX ( ( ( [MIN 6 ) 3 ) ] ) ) ( ( ( [SM 5 ) 5 ) ] ) ) ] )", 3),  # max(3, 0)
]


@pytest.mark.parametrize("source,value", HAND)
def test_reference_evaluator_hand_examples(source, value):
    assert evaluate(source) == value


def test_vectorised_ops_match_hand_examples():
    # MIN(4 7), MAX(2 9 3), MED(8 1 5), MED(1 4), MED(9 0 3 8), SM(7 8 9)
    op = np.array([0, 1, 2, 2, 2, 3])
    k = np.array([2, 3, 3, 2, 4, 3])
    vals = np.array([4, 7, 2, 9, 3, 8, 1, 5, 1, 4, 9, 0, 3, 8, 7, 8, 9])
    assert apply_ops(op, vals, k).tolist() == [4, 9, 5, 2, 5, 4]


def test_vectorised_ops_random_against_reference():
    rng = np.random.default_rng(0)
    k = rng.integers(2, 11, size=500)
    op = rng.integers(0, 4, size=500)
    vals = rng.integers(0, 10, size=int(k.sum()))
    got = apply_ops(op, vals, k)
    a = 0
    for i in range(500):
        args = vals[a : a + k[i]].tolist()
        a += k[i]
        want = [min(args), max(args), int(np.median(args)), sum(args) % 10][op[i]]
        assert got[i] == want


# ----------------------------------------------------------------------------- format


def _parse(tokens: list[str], i: int = 0):
    """Source tokens (parentheses dropped) -> nested (op, [children]) / int, next index."""
    t = tokens[i]
    if t not in gen.OPERATORS:
        return int(t), i + 1
    children, i = [], i + 1
    while tokens[i] != gen.END:
        c, i = _parse(tokens, i)
        children.append(c)
    return (t, children), i + 1


def _lra_string(node) -> str:
    """Independent re-statement of LRA's format: ((op, c1), c2)... then (t, ']'), each
    pair written '( a b )'."""
    if isinstance(node, int):
        return str(node)
    op, children = node
    s = f"( {op} {_lra_string(children[0])} )"
    for c in children[1:]:
        s = f"( {s} {_lra_string(c)} )"
    return f"( {s} ] )"


def test_format_matches_lra_example():
    assert _lra_string(("[MAX", [2, 9])) == "( ( ( [MAX 2 ) 9 ) ] )"


def test_serialisation_is_lra_binary_parenthesisation(small):
    for s in small.sources["train"][:100]:
        tree, end = _parse(s.replace("(", " ").replace(")", " ").split())
        assert _lra_string(tree) == s
        assert s.count("(") == s.count(")")


def test_release_round_trip(small, tmp_path):
    folder = gen.write_release(small, tmp_path, SMALL)
    assert folder == tmp_path / "listops-1000"
    for split, n in SMALL.sizes.items():
        lines = (folder / f"basic_{split}.tsv").read_text().splitlines()
        assert lines[0] == "Source\tTarget"
        assert len(lines) == n + 1
        for line in lines[1:]:
            source, target = line.split("\t")
            assert evaluate(source) == int(target)
            assert SMALL.min_length < content_length(source) < SMALL.max_length
    assert (folder / gen.MARKER).exists()
    assert not list(folder.glob(".*tmp*"))


def test_release_bytes_match_lra_csv_writer(small, tmp_path):
    folder = gen.write_release(small, tmp_path, SMALL)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter="\t")  # what LRA's write_to_file uses
    w.writerow(["Source", "Target"])
    w.writerows([s, np.int64(y)] for s, y in zip(small.sources["val"], small.labels["val"]))
    assert (folder / "basic_val.tsv").read_bytes() == buf.getvalue().encode()


def test_lengths_strictly_within_bounds_and_recorded(small):
    for split in gen.SPLITS:
        lens = [content_length(s) for s in small.sources[split]]
        assert lens == small.lengths[split].tolist()
        assert min(lens) > SMALL.min_length and max(lens) < SMALL.max_length
        assert [evaluate(s) for s in small.sources[split]] == small.labels[split].tolist()


def test_tight_bounds_are_strict():
    spec = ListOpsSpec(seed=1, n_train=200, n_val=0, n_test=0, min_length=4, max_length=6)
    d = gen.generate(spec, workers=1, progress=False)
    assert {content_length(s) for s in d.sources["train"]} == {5}  # 4 < length < 6


# ----------------------------------------------------------------------------- determinism


def test_deterministic_across_worker_counts(small):
    other = gen.generate(SMALL, workers=2, progress=False)
    for split in gen.SPLITS:
        assert other.sources[split] == small.sources[split]
        assert np.array_equal(other.labels[split], small.labels[split])
    reseeded = gen.generate(ListOpsSpec(**{**SMALL.__dict__, "seed": 4}), workers=1, progress=False)
    assert reseeded.sources["train"] != small.sources["train"]


def test_dedup_keeps_distinct_trees_in_order():
    # max_depth 2, length exactly 4: "[OP d d ]" -> 4 * 100 = 400 distinct trees
    spec = ListOpsSpec(
        seed=0, n_train=300, n_val=50, n_test=50, min_length=3, max_length=5, max_depth=2
    )
    d = gen.generate(spec, workers=1, progress=False)
    everything = [s for split in gen.SPLITS for s in d.sources[split]]
    assert len(everything) == len(set(everything)) == 400
    assert d.stats["duplicates"] > 0
    with pytest.raises(ConfigError, match="distinct trees"):
        gen.generate(ListOpsSpec(**{**spec.__dict__, "n_train": 400}), workers=1, progress=False)


def test_impossible_settings_raise_config_error():
    with pytest.raises(ConfigError, match="no tree can satisfy"):
        ListOpsSpec(min_length=100, max_length=200, max_depth=2).validate()
    with pytest.raises(ConfigError, match="integer"):
        ListOpsSpec(seed=-1).validate()


# ----------------------------------------------------------------------------- statistics


def test_lra_settings_statistics():
    """At the LRA settings: acceptance ~8%, mean ~1040 tokens, classes 0 and 9 ~17% each."""
    d = gen.generate(ListOpsSpec(n_train=1500, n_val=0, n_test=0), workers=1, progress=False)
    st = d.stats
    assert 0.07 < st["acceptance_rate"] < 0.095
    assert 960 < st["mean_length"] < 1110
    prior = np.array(st["class_prior"])
    assert 0.13 < prior[0] < 0.21 and 0.13 < prior[9] < 0.21
    assert np.all((prior[1:9] > 0.04) & (prior[1:9] < 0.12))


def _reference_tree(r: random.Random, depth: int, spec: ListOpsSpec) -> int:
    """The LRA recursion in plain Python (length only)."""
    if depth < spec.max_depth and r.random() <= gen.OP_P:
        return 2 + sum(_reference_tree(r, depth + 1, spec) for _ in range(r.randint(2, 10)))
    return 1


def test_distribution_matches_plain_recursive_sampler():
    spec = ListOpsSpec(n_train=3000, n_val=0, n_test=0, min_length=10, max_length=80, max_depth=6)
    d = gen.generate(spec, workers=1, progress=False)
    r = random.Random(0)
    n = 40000
    lens = [_reference_tree(r, 1, spec) for _ in range(n)]
    acc = [x for x in lens if spec.min_length < x < spec.max_length]
    p = len(acc) / n
    assert abs(d.stats["acceptance_rate"] - p) < 5 * np.sqrt(p * (1 - p) / n)
    se = np.std(acc) / np.sqrt(len(acc))
    assert abs(d.stats["mean_length"] - np.mean(acc)) < 5 * se


def test_cli_writes_release_layout(tmp_path):
    rc = gen.main(
        [
            "--out",
            str(tmp_path),
            "--n-train",
            "20",
            "--n-val",
            "5",
            "--n-test",
            "5",
            "--min-length",
            "20",
            "--max-length",
            "150",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    rows = (tmp_path / "listops-1000" / "basic_val.tsv").read_text().splitlines()
    assert rows[0] == "Source\tTarget" and len(rows) == 6
    assert gen.main(["--out", str(tmp_path), "--min-length", "10", "--max-length", "11"]) == 2
