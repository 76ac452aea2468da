"""Pathfinder generator and the pathfinder / pathx loaders on release-format fixtures."""

from __future__ import annotations

import hashlib
import itertools
import math
import os

import numpy as np
import pytest
from PIL import Image as PILImage

from surnn.errors import ConfigError, DataError
from tasks.formats import random_images, write_pathfinder_pngs
from tasks.generators import pathfinder as gen
from tasks.generators import pathfinder_draw as draw
from tasks.pathfinder import Pathfinder, PathX

HARD32 = "pathfinder32/curv_contour_length_14"


# ----------------------------------------------------------------------------- generator


def test_generator_same_seed_same_images_for_any_worker_count(tmp_path):
    a = gen.generate(
        tmp_path / "a", 32, "hard", n=10, seed=3, workers=1, fmt="cache", progress=False
    )
    b = gen.generate(
        tmp_path / "b", 32, "hard", n=10, seed=3, workers=2, fmt="release", progress=False
    )
    imgs = np.load(a / "images.npy")
    labels = np.load(a / "labels.npy")
    assert imgs.shape == (10, 1024) and imgs.dtype == np.uint8
    lines = (b / "metadata" / "0.npy").read_text().splitlines()
    assert len(lines) == 10
    for i, line in enumerate(lines):
        f = line.split()
        assert f[0] == "imgs/0" and f[1] == f"sample_{i}.png" and int(f[3]) == labels[i]
        png = np.asarray(PILImage.open(b / f[0] / f[1]))
        np.testing.assert_array_equal(png.reshape(-1), imgs[i])
    c = gen.generate(
        tmp_path / "c", 32, "hard", n=3, seed=4, workers=1, fmt="cache", progress=False
    )
    assert not np.array_equal(np.load(c / "images.npy"), imgs[:3])
    with pytest.raises(FileExistsError):
        gen.generate(tmp_path / "a", 32, "hard", n=2, progress=False)


#: sha256 over (image bytes, label, margin) of make_image(params_for(res, difficulty), 7, i)
#: for i < n: any change to the drawing changes the data a seed makes
PINNED = [
    (32, "hard", 6, "8fdd507ae72291202f004487161e81c997f6995560b0c4eb2b6bd7fc52b6a6e7"),
    (64, "easy", 2, "c227d2c65c4f9dd1f040585a930696396b55429b22345ebbb10541597d5f0e32"),
    (128, "medium", 2, "73d193c07b30ebcb2817179f63e6f36ae3a9d55b15d2df35f7689ead4f3a5cdb"),
    (256, "easy", 1, "f22b58ab4c14b302c8d948de0c55b60896b5d6e1dea6118ef42d2a384bad3cb8"),
]


@pytest.mark.parametrize("resolution, difficulty, n, digest", PINNED)
def test_generator_draws_the_pinned_images_for_a_seed(resolution, difficulty, n, digest):
    p = draw.params_for(resolution, difficulty)
    h = hashlib.sha256()
    for i in range(n):
        img, label, margin = draw.make_image(p, 7, i)
        h.update(img.tobytes())
        h.update(bytes([label, margin]))
    assert h.hexdigest() == digest


def _segments(cv, contour):
    out = []
    for cell, tmpl, _, _ in contour.dashes:
        x, y = cv.xy(cell, tmpl)
        a = tmpl // (draw.SUB * draw.SUB)
        out.append((x, y, x + cv.L * draw._COS[a], y + cv.L * draw._SIN[a]))
    return out


def _seg_gap(s, t) -> float:
    u = np.linspace(0, 1, 21)
    p = np.stack([s[0] + (s[2] - s[0]) * u, s[1] + (s[3] - s[1]) * u], 1)
    q = np.stack([t[0] + (t[2] - t[0]) * u, t[1] + (t[3] - t[1]) * u], 1)
    return float(np.sqrt(((p[:, None] - q[None]) ** 2).sum(-1)).min())


@pytest.mark.parametrize("resolution, difficulty", [(32, "hard"), (32, "easy"), (128, "hard")])
def test_target_contours_have_full_length_and_keep_apart(resolution, difficulty):
    p = gen.params_for(resolution, difficulty)
    rng = np.random.default_rng(0)
    got = 0
    while got < 3:
        out = draw._target_pair(p, p.margins[0], rng)
        if out is None:
            continue
        cv, a, b = out
        got += 1
        sa, sb = _segments(cv, a), _segments(cv, b)
        assert len(sa) == len(sb) == p.contour_length
        # dashes of different contours never come closer than the occupancy radius
        # (less the snapping error of a quarter cell per coordinate)
        gap = min(_seg_gap(s, t) for s, t in itertools.product(sa, sb))
        assert gap >= cv.R_occ - 0.5
        # a marker disc at any tip touches no ink of the other contour
        for own, other in ((a, sb), (b, sa)):
            for x, y in (own.start, own.end):
                tip = (x, y, x, y)
                assert min(_seg_gap(tip, t) for t in other) >= p.marker_radius * draw.AA + cv.r
        # the seeds are seed_distance apart
        (ax, ay), (bx, by) = a.start, b.start
        assert abs(math.hypot(ax - bx, ay - by) - p.seed_distance * draw.AA) < 1.0
        # consecutive dashes of one contour: gap 2 * margin straight ahead, turns bounded
        for s, t in zip(sa, sa[1:]):
            assert _seg_gap(s, t) <= 2 * cv.M + 0.8


def test_generator_labels_are_balanced_and_images_lit():
    p = gen.params_for(32, "hard")
    out = [gen.make_image(p, 0, i) for i in range(40)]
    labels = np.array([o[1] for o in out])
    assert 8 <= labels.sum() <= 32
    for img, _, margin in out[:5]:
        assert img.shape == (32, 32) and margin == 1
        assert img.max() == 255  # markers at full intensity
        assert 0.05 < (img > 0).mean() < 0.6


def test_generator_cli_and_bad_arguments(tmp_path, capsys):
    assert (
        gen.main(["--n", "4", "--out", str(tmp_path), "--format", "cache", "--workers", "1"]) == 0
    )
    assert np.load(tmp_path / HARD32 / "images.npy").shape == (4, 1024)
    assert gen.main(["--n", "4", "--out", str(tmp_path), "--workers", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(ValueError, match="resolution 48"):
        gen.params_for(48, "hard")


# ----------------------------------------------------------------------------- loader


def test_pathfinder_release_tokens_labels_and_seeded_split(tmp_path):
    imgs, y = random_images(30, 32)
    write_pathfinder_pngs(tmp_path / "a", HARD32, imgs, y)
    write_pathfinder_pngs(tmp_path / "b", HARD32, imgs, y)
    t = Pathfinder(tmp_path / "a", workers=1)
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (24, 3, 3)
    assert t.max_len == 1024 and t.vocab_size == 257
    for split in (s.train, s.test):
        for k in range(len(split)):
            i = int(split.indices[k])
            x, label = split[k]
            np.testing.assert_array_equal(x, imgs[i].reshape(-1).astype(np.int64) + 1)
            assert label == y[i]
    u = Pathfinder(tmp_path / "b", workers=1).splits()  # another machine, same data
    np.testing.assert_array_equal(s.test.indices, u.test.indices)
    v = Pathfinder(tmp_path / "b", split_seed=1, workers=1)
    sv = v.splits()
    assert not np.array_equal(s.test.indices, sv.test.indices)
    assert len(list((tmp_path / "b" / "cache" / "pathfinder").iterdir())) == 2
    b = s.collate([s.train[k] for k in range(5)])
    assert b["x"].shape == (5, 1024) and b["lengths"].eq(1024).all()
    d = t.describe()
    assert d["n_skipped"] == 0 and d["counts"]["train"] == 24 and d["resolution"] == 32


def test_pathfinder_cache_reused_and_values_encoding(tmp_path, monkeypatch):
    imgs, y = random_images(20, 32)
    write_pathfinder_pngs(tmp_path, HARD32, imgs, y)
    Pathfinder(tmp_path, workers=1).splits()
    monkeypatch.setattr(Pathfinder, "_build_cache", lambda *a: pytest.fail("rebuilt"))
    t = Pathfinder(tmp_path, input="values", workers=1)
    s = t.splits()
    b = s.collate([s.train[k] for k in range(len(s.train))])
    assert t.input_kind == "values" and b["x"].shape == (16, 1024, 1)
    assert abs(float(b["x"].mean())) < 1e-3


def test_pathfinder_known_empty_png_is_skipped_and_counted(tmp_path, caplog):
    imgs, y = random_images(13, 32)
    names = {i: (0, 160 + i) for i in range(13)}  # index 12 -> sample_172.png
    write_pathfinder_pngs(tmp_path, "pathfinder32/curv_baseline", imgs, y, names=names, empty=(12,))
    t = Pathfinder(tmp_path, difficulty="easy", workers=1)
    with caplog.at_level("WARNING"):
        s = t.splits()
    assert len(s.train) + len(s.val) + len(s.test) == 12
    d = t.describe()
    assert d["n_skipped"] == 1 and "imgs/0/sample_172.png: empty file" in d["skipped"][0]
    assert "sample_172.png" in caplog.text


def test_pathfinder_bad_pngs_and_labels_name_file_and_line(tmp_path):
    imgs, y = random_images(10, 32)
    root = write_pathfinder_pngs(tmp_path, HARD32, imgs, y)
    (root / "imgs/1/sample_2.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"imgs/1/sample_2.png \(metadata/1.npy:3\): empty file"):
        Pathfinder(tmp_path, workers=1).splits()
    (root / "imgs/1/sample_2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"sample_2.png \(metadata/1.npy:3\): unreadable"):
        Pathfinder(tmp_path, workers=1).splits()
    t = Pathfinder(tmp_path, skip_unreadable=True, workers=1)
    s = t.splits()
    assert t.describe()["n_skipped"] == 1 and len(s.train) + len(s.val) + len(s.test) == 9
    meta = root / "metadata" / "0.npy"
    lines = meta.read_text().splitlines()
    f = lines[1].split()
    f[3] = "3"
    lines[1] = " ".join(f)
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"metadata/0.npy:2: label '3' is not 0 or 1"):
        Pathfinder(tmp_path, workers=1).splits()
    meta.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    for k in range(1, 3):
        (root / "metadata" / f"{k}.npy").unlink()
    with pytest.raises(DataError, match=r"3 usable images leave an empty split"):
        Pathfinder(tmp_path, workers=1).splits()
    meta.write_text("imgs/0 sample_0.png\n")
    with pytest.raises(DataError, match=r"metadata/0.npy:1: expected 'subdir filename"):
        Pathfinder(tmp_path, workers=1).splits()


def test_pathfinder_missing_data_prints_command_or_generates(tmp_path):
    with pytest.raises(DataError, match=r"python -m tasks.generators.pathfinder --resolution 32 "):
        Pathfinder(tmp_path).splits()
    t = Pathfinder(tmp_path, generate={"n": 20, "workers": 1})
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (16, 2, 2)
    assert "generated" in t.describe()["source"]
    with pytest.raises(ConfigError, match="generate"):
        Pathfinder(tmp_path, generate={"count": 3})
    # generated with another n: an error naming both, not a silent stand-in
    with pytest.raises(
        DataError, match=r"holds 20 generated images \(seed 0\).*n=200000.*generate.n=20"
    ):
        Pathfinder(tmp_path, generate=True).splits()
    assert len(Pathfinder(tmp_path, generate=False).splits().train) == 16  # use what is there
    assert len(Pathfinder(tmp_path, generate={"n": 20}).splits().train) == 16
    with pytest.raises(ConfigError, match="difficulty"):
        Pathfinder(tmp_path, difficulty="extreme")


def test_pathx_folder_at_128px(tmp_path):
    imgs, y = random_images(10, 128)
    write_pathfinder_pngs(tmp_path, "pathfinder128/curv_contour_length_14", imgs, y)
    t = PathX(tmp_path, workers=1)
    s = t.splits()
    assert t.name == "pathx" and t.max_len == 16384
    assert (len(s.train), len(s.val), len(s.test)) == (8, 1, 1)
    x, label = s.val[0]
    i = int(s.val.indices[0])
    np.testing.assert_array_equal(x, imgs[i].reshape(-1).astype(np.int64) + 1)
    b = s.collate([s.train[k] for k in range(2)])
    assert b["x"].shape == (2, 16384)
    with pytest.raises(ConfigError, match="Path-X is 128 px"):
        PathX(tmp_path, resolution=32)
    with pytest.raises(DataError, match=r"--resolution 128 --difficulty hard"):
        PathX(tmp_path / "empty").splits()


def test_pathfinder_release_cache_key_sees_an_edited_png(tmp_path):
    """The key covered only the metadata files: an image rewritten in place kept serving
    the old arrays."""
    imgs, y = random_images(12, 32)
    root = write_pathfinder_pngs(tmp_path, HARD32, imgs, y)
    Pathfinder(tmp_path, workers=1).splits()
    png = sorted((root / "imgs").rglob("*.png"))[5]
    before = png.stat()
    data = png.read_bytes()
    png.write_bytes(data)  # same bytes, new mtime: a new key
    os.utime(png, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    Pathfinder(tmp_path, workers=1).splits()
    assert len(list((tmp_path / "cache" / "pathfinder").iterdir())) == 2
