"""ListOps (LRA): nested MIN/MAX/MED/SM expressions over digits, 10 classes.

Data source, in order:
  * generate settings equal to the LRA defaults (``tasks.generators.listops.ListOpsSpec()``,
    seed 0): ``<data_dir>/listops-1000/basic_{train,val,test}.tsv`` -- the real LRA release
    when present, else generated there with the seeded generator;
  * other generate settings (e.g. the CPU demo): ``<data_dir>/listops-gen-<key>/listops-1000/``,
    generated when absent, so a variant never overwrites or passes for the real data;
  * ``generate: null``: the release files are required, nothing is generated.
Which one a run used is logged and recorded in ``describe()["source"]``.

Tokenisation: ``(`` and ``)`` are dropped and every other whitespace-separated token is
looked up in a fixed vocabulary (``VOCAB``): pad 0, ``[MIN`` 1, ``[MAX`` 2, ``[MED`` 3,
``[SM`` 4, ``]`` 5, digits 0-9 -> 6-15, EOS 16 (vocab_size 17). EOS: the original LRA
input pipeline appends none (and its tokenizer even drops ``]``); the S4/S5 ListOps
loaders, whose numbers the published SSM rows come from, keep ``]`` and append EOS. We
follow S4 (``append_eos: true`` by default): a generated 1999-token tree plus EOS fits
``max_len`` 2000 exactly. Longer sequences keep their first ``max_len - 1`` tokens and
the EOS; how many were cut is logged and recorded.

Arrays are cached as int8 under ``<data_dir>/cache/listops/<key>/``, the key covering
the source files' identity (path, size, mtime) and every option that changes them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from surnn.checks import boolean, int_at_least
from surnn.errors import ConfigError, DataError
from tasks.base import Splits, Task, check_no_unknown
from tasks.cache import build_command, cache_key, load_or_build, writing
from tasks.collate import make_collate
from tasks.datasets import SequenceDataset, pack_sequences
from tasks.generators import listops as gen

log = logging.getLogger(__name__)

VOCAB = ("<pad>", "[MIN", "[MAX", "[MED", "[SM", "]", *map(str, range(10)), "<eos>")
TOKEN_IDS = {t: i for i, t in enumerate(VOCAB) if not t.startswith("<")}
EOS_ID = VOCAB.index("<eos>")
CACHE_FORMAT = 1  # bump when the tokenisation changes

# fast path: operators become one control character each, parentheses become spaces,
# then a byte lookup table gives the ids (-2 = separator, -1 = not in the vocabulary)
_SUBS = (
    ("[MIN", "\x01"),
    ("[MAX", "\x02"),
    ("[MED", "\x03"),
    ("[SM", "\x04"),
    ("(", " "),
    (")", " "),
)
_LUT = np.full(256, -1, np.int16)
_LUT[ord(" ")] = -2
for _i in range(1, 5):
    _LUT[_i] = _i
_LUT[ord("]")] = TOKEN_IDS["]"]
for _d in range(10):
    _LUT[ord(str(_d))] = TOKEN_IDS[str(_d)]

_SPEC_KEYS = tuple(f.name for f in fields(gen.ListOpsSpec))


def _has_placeholder(source: str) -> bool:
    return any(c in source for c in "\x01\x02\x03\x04")


def encode_source(source: str) -> np.ndarray:
    """Token ids (int8, no EOS) of one ``Source`` string; ValueError names a bad token."""
    s = source
    for a, b in _SUBS:
        s = s.replace(a, b)
    codes = np.frombuffer(s.encode("ascii", errors="replace"), np.uint8)
    ids = _LUT[codes]
    word = ids != -2
    if (ids == -1).any() or (word[1:] & word[:-1]).any() or _has_placeholder(source):
        for tok in source.replace("(", " ").replace(")", " ").split():
            if tok not in TOKEN_IDS:
                raise ValueError(f"token {tok[:20]!r} is not one of {' '.join(TOKEN_IDS)}")
        raise ValueError("unexpected characters")  # pragma: no cover - control characters
    out = ids[word].astype(np.int8)
    if out.size == 0:
        raise ValueError("the Source column has no tokens")
    return out


def read_tsv(
    path: Path, max_len: int, append_eos: bool
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Tokenise a ``Source\\tTarget`` file; returns (sequences, labels, truncated count).
    A malformed row raises a one-line DataError naming the file, the line and the fix."""
    seqs: list[np.ndarray] = []
    labels: list[int] = []
    truncated = 0
    keep = max_len - 1 if append_eos else max_len
    eos = np.array([EOS_ID], np.int8)
    fix = "fix or delete that row, or restore the file from lra_release.gz / regenerate it"
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, lineno)
            if lineno == 1:
                if line.strip() != gen.HEADER:
                    raise DataError(
                        f"{path}:1: expected the header 'Source<TAB>Target' of the LRA release, "
                        f"got {line[:40]!r}; add that header line"
                    )
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                raise DataError(
                    f"{path}:{lineno}: expected 2 tab-separated columns (Source, Target), "
                    f"got {len(cols)}; {fix}"
                )
            try:
                y = int(cols[1])
            except ValueError:
                y = -1
            if not 0 <= y <= 9:
                raise DataError(
                    f"{path}:{lineno}: Target {cols[1][:20]!r} is not an integer 0-9; {fix}"
                )
            try:
                ids = encode_source(cols[0])
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: {e}; {fix}") from None
            if ids.size > keep:
                ids, truncated = ids[:keep], truncated + 1
            seqs.append(np.concatenate([ids, eos]) if append_eos else ids)
            labels.append(y)
    if not labels:
        raise DataError(
            f"{path}: no rows after the header; restore the file from lra_release.gz or "
            "delete the folder to regenerate it"
        )
    return seqs, np.asarray(labels, np.int8), truncated


_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    """One line of a TSV as text; a file in another encoding than UTF-8 (the LRA files
    are ASCII) is a DataError that says so, naming the file and line."""
    if lineno == 1:
        for bom, name in _BOMS.items():
            if raw.startswith(bom):
                raise DataError(
                    f"{path}: the file is {name} text; the LRA files are UTF-8 (ASCII): "
                    "re-save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8"
                )
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    if b"\x00" in raw:
        raise DataError(
            f"{path}:{lineno}: NUL bytes: the file looks like UTF-16 text; the LRA files are "
            "UTF-8 (ASCII): re-save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8"
        )
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
            f"{e.start + 1}); the LRA files are UTF-8 (ASCII): re-save the file as UTF-8 "
            "(e.g. iconv -f LATIN1 -t UTF-8) or restore it from lra_release.gz"
        ) from None


class ListOps(Task):
    """LRA ListOps; see the module docstring for the data source, vocabulary and EOS."""

    name = "listops"
    n_classes = 10
    input_kind = "tokens"
    vocab_size = len(VOCAB)

    def __init__(
        self,
        data_dir,
        max_len: int = 2000,
        append_eos: bool = True,
        generate: dict[str, Any] | None = None,
        **unknown: Any,
    ):
        super().__init__(data_dir, max_len=max_len, append_eos=append_eos, generate=generate)
        check_no_unknown("listops", unknown, "max_len, append_eos, generate")
        self.max_len = int_at_least(2).check("max_len", max_len)
        self.append_eos = boolean().check("append_eos", append_eos)
        self.workers: int | None = None
        self.spec: gen.ListOpsSpec | None = None
        if generate is not None:
            g = dict(generate)
            self.workers = int_at_least(1, optional=True).check(
                "generate.workers", g.pop("workers", None)
            )
            bad = sorted(set(g) - set(_SPEC_KEYS))
            if bad:
                raise ConfigError(
                    f"task listops: unknown generate option(s) {', '.join(bad)}; valid are "
                    f"{', '.join((*_SPEC_KEYS, 'workers'))}"
                )
            self.spec = gen.ListOpsSpec(**g)
            self.spec.validate()
            for split, n in self.spec.sizes.items():
                if n < 1:
                    raise ConfigError.option(
                        f"generate.n_{split}",
                        n,
                        f"expected an integer >= 1 (an empty {split} split cannot train or "
                        "evaluate)",
                    )
        self._info: dict[str, Any] = {}

    # ------------------------------------------------------------------ data source

    def _release_files(self, folder: Path) -> list[Path]:
        return [folder / f"basic_{s}.tsv" for s in gen.SPLITS]

    def _resolve_source(self) -> tuple[list[Path], str]:
        """Find or generate the TSV files; returns (files, source description)."""
        release = self.data_dir / gen.RELEASE_DIR
        is_default = self.spec is not None and self.spec == gen.ListOpsSpec()
        if self.spec is None or is_default:
            folder = release
        else:
            key = cache_key({"chunk": gen.CHUNK, **asdict(self.spec)})
            folder = self.data_dir / f"listops-gen-{key}" / gen.RELEASE_DIR
            if release.exists():
                log.info("listops: generate settings differ from LRA's, so %s is not used", release)
        files = self._release_files(folder)
        if not all(f.exists() for f in files):
            if self.spec is None:
                self._check_complete(folder, files)
                raise DataError(
                    f"{folder}: ListOps files basic_{{train,val,test}}.tsv not found and "
                    "task.options.generate is null; unpack lra_release.gz into data_dir or "
                    "set generate settings"
                )
            self._generate(folder, files)
        generated = (folder / gen.MARKER).exists()
        kind = "generated" if generated else "lra_release"
        log.info("listops: using %s data in %s", kind, folder)
        return files, kind

    @staticmethod
    def _check_complete(folder: Path, files: list[Path]) -> None:
        """Some splits without the others is a DataError (never generated over)."""
        missing = [f.name for f in files if not f.exists()]
        if missing and len(missing) < len(files):
            raise DataError(
                f"{folder}: {', '.join(missing)} missing while other ListOps splits are there; "
                f"restore them from lra_release.gz or delete {folder} to regenerate"
            )

    def _generate(self, folder: Path, files: list[Path]) -> None:
        """Generate the TSV files into ``folder`` once, however many processes ask."""
        lacking = ", ".join(f.name for f in files if not f.exists())
        fix = f"generate them where they can be written: {build_command(self)}"
        with writing(self, folder, "listops-generate", f"{folder} lacks {lacking}", fix):
            self._check_complete(folder, files)
            if all(f.exists() for f in files):
                return  # generated by another process while this one waited
            log.info("listops: generating %s into %s", self.spec, folder)
            data = gen.generate(self.spec, workers=self.workers, progress=True)
            gen.write_release(data, folder.parent, self.spec)
            log.info("listops: generated %s", data.stats)

    # ------------------------------------------------------------------ splits

    def _tokenise(self, files: list[Path], kind: str, ident: list[dict]):
        """The cache's arrays and metadata: every split tokenised and packed flat."""
        arrays, stats = {}, {}
        for split, f in zip(gen.SPLITS, files):
            seqs, labels, cut = read_tsv(f, self.max_len, self.append_eos)
            if cut:
                log.warning(
                    "listops %s: %d of %d sequences longer than max_len=%d were truncated",
                    split,
                    cut,
                    len(seqs),
                    self.max_len,
                )
            data, offsets = pack_sequences(seqs, dtype=np.int8)
            arrays.update(
                {f"{split}_data": data, f"{split}_offsets": offsets, f"{split}_labels": labels}
            )
            lens = np.diff(offsets)
            stats[split] = {
                "n": len(seqs),
                "truncated": cut,
                "mean_len": round(float(lens.mean()), 1) if lens.size else 0.0,
                "max_len": int(lens.max()) if lens.size else 0,
                "class_counts": np.bincount(labels, minlength=10).tolist(),
            }
        return arrays, {"source": kind, "files": ident, "stats": stats}

    def splits(self) -> Splits:
        names = [f"{s}_{a}" for s in gen.SPLITS for a in ("data", "offsets", "labels")]
        files, kind = self._resolve_source()
        ident = [
            {"path": str(f.resolve()), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
            for f in files
        ]
        opts = {
            "format": CACHE_FORMAT,
            "vocab": VOCAB,
            "max_len": self.max_len,
            "append_eos": self.append_eos,
            "files": ident,
        }
        cache = load_or_build(
            self, self.name, opts, names, lambda _: self._tokenise(files, kind, ident)
        )
        arrays = cache.arrays
        self._info = {"source": kind, "files": [i["path"] for i in ident], "cache": str(cache.path)}
        self._info["stats"] = cache.meta["stats"]
        ds = {
            s: SequenceDataset(arrays[f"{s}_data"], arrays[f"{s}_offsets"], arrays[f"{s}_labels"])
            for s in gen.SPLITS
        }
        return Splits(ds["train"], ds["val"], ds["test"], make_collate("tokens"))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            {
                "vocab": {t: i for i, t in enumerate(VOCAB)},
                "append_eos": self.append_eos,
                "eos_note": "EOS appended as in the S4/S5 ListOps loaders; the original LRA "
                "pipeline appends none",
                "tokenisation": "parentheses dropped, whitespace tokens, ']' kept",
                "generate": asdict(self.spec) if self.spec else None,
                **self._info,
            }
        )
        return out
