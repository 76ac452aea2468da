"""Seeded ListOps generator with the LRA settings, vectorised over many trees at once.

Follows the LRA generator (``lra_benchmarks/data/listops.py``): a tree starts at depth 1;
below ``max_depth`` a node is an operator with probability 0.25 (else a leaf digit 0-9),
with k ~ U{2..max_args} children one level deeper and an operator uniform over MIN, MAX,
MED, SM; at ``max_depth`` it is always a leaf. Length = leaves + 2 per operator (the
opening token and ``]``); trees with ``min_length < length < max_length`` are kept,
deduplicated and split into train, val, test in order. Each operator node is written
left-branching with binary parentheses exactly as LRA's ``to_string``:
``[MAX 2 9`` becomes ``( ( ( [MAX 2 ) 9 ) ] )``.

Speed and determinism: trees are drawn in fixed-size chunks of ``CHUNK`` attempts, chunk
``c`` with ``numpy.random.default_rng([seed, c])``, level by level for all trees of the
chunk at once; a tree is abandoned as soon as it cannot stay under ``max_length``.
Chunks run in worker processes and are merged in chunk order with one global dedup, so
the output depends on the seed only, never on the number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from surnn.checks import int_at_least
from surnn.errors import ConfigError, HarnessError
from tasks.pool import ordered_map

log = logging.getLogger(__name__)

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
OP_P = 0.25  # LRA: VALUE_P = 0.25, a node is an operator when random() <= 0.25
CHUNK = 4096  # attempts per seeded chunk; changing it changes the data for a seed
RELEASE_DIR = "listops-1000"
SPLITS = ("train", "val", "test")
HEADER = "Source\tTarget"
MARKER = "GENERATED.json"  # written next to generated files (absent in the real release)

# serialisation ids: 0 "(", 1 ")", 2-5 operators, 6 "]", 7-16 digits
_WORDS = np.array(["(", ")", *OPERATORS, END, *map(str, range(10))], dtype=object)
_OPEN, _CLOSE, _OP0, _END, _DIGIT0 = 0, 1, 2, 6, 7


@dataclass(frozen=True)
class ListOpsSpec:
    """Generator settings; the defaults are LRA's (plus a seed, which LRA does not set)."""

    seed: int = 0
    n_train: int = 96000
    n_val: int = 2000
    n_test: int = 2000
    min_length: int = 500
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10

    def validate(self) -> None:
        """Each setting, named as the task's option ``generate.<name>``."""
        least = {"max_depth": 1, "max_args": 2}
        for name, value in asdict(self).items():
            int_at_least(least.get(name, 0)).check(f"generate.{name}", value)
        longest = 1  # longest possible tree: full max_args-ary tree of depth max_depth
        for _ in range(self.max_depth - 1):
            longest = 2 + self.max_args * longest
        lo, hi = self.min_length, self.max_length
        if hi - lo < 2 or lo + 1 > longest:
            raise ConfigError.option(
                "generate.max_length" if hi - lo < 2 else "generate.min_length",
                hi if hi - lo < 2 else lo,
                f"no tree can satisfy {lo} < length < {hi} with max_depth={self.max_depth}, "
                f"max_args={self.max_args} (longest possible {longest}); widen "
                "min_length/max_length or raise max_depth",
            )

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


@dataclass
class ListOpsData:
    """Generated examples per split plus statistics of the run."""

    sources: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    stats: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- reference


def evaluate(source: str) -> int:
    """Value of a ListOps expression (parentheses ignored); the plain reference used in
    tests and to check the vectorised evaluator."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for tok in source.replace("(", " ").replace(")", " ").split():
        if tok in OPERATORS:
            stack.append((tok, []))
            continue
        if tok == END:
            op, args = stack.pop()
            value = _reduce(op, args)
        else:
            value = int(tok)
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    if result is None or stack:
        raise ValueError(f"not a complete ListOps expression: {source[:80]!r}")
    return result


def _reduce(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2  # int(np.median)


def content_length(source: str) -> int:
    """Tokens once parentheses are dropped (the length the generator bounds)."""
    return len(source.replace("(", " ").replace(")", " ").split())


# ----------------------------------------------------------------------------- vectorised


def apply_ops(op: np.ndarray, vals: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Operator results for consecutive child segments: op i reduces the next ``k[i]``
    entries of ``vals`` (op ids index OPERATORS; MED = floor of the median)."""
    starts = np.zeros(k.size, np.int64)
    np.cumsum(k[:-1], out=starts[1:])
    seg = np.repeat(np.arange(k.size), k)
    srt = np.sort(seg * 16 + vals) & 15  # values sorted within each segment
    med = (srt[starts + (k - 1) // 2] + srt[starts + k // 2]) // 2
    table = np.stack(
        [
            np.minimum.reduceat(vals, starts),
            np.maximum.reduceat(vals, starts),
            med,
            np.add.reduceat(vals, starts) % 10,
        ]
    )
    return table[op, np.arange(k.size)]


def _excl_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.size, np.int64)
    np.cumsum(a[:-1], out=out[1:])
    return out


def sample_chunk(
    spec: ListOpsSpec, chunk: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``CHUNK`` trees for chunk ``chunk``; return the accepted ones in draw order as
    (sources, labels, lengths, attempt index within the chunk)."""
    rng = np.random.default_rng([spec.seed, chunk])
    n = CHUNK
    tree = np.arange(n)
    length = np.zeros(n, np.int64)
    alive = np.ones(n, bool)
    levels = []  # per depth: (tree id per node, is_op, k per op, op per op, digit per leaf)
    for depth in range(1, spec.max_depth + 1):
        m = tree.size
        if m == 0:
            break
        is_op = rng.random(m) < OP_P if depth < spec.max_depth else np.zeros(m, bool)
        n_op = int(is_op.sum())
        k = rng.integers(2, spec.max_args + 1, size=n_op)
        op = rng.integers(0, len(OPERATORS), size=n_op)
        digit = rng.integers(0, 10, size=m - n_op)
        levels.append((tree, is_op, k, op, digit))
        op_tree = tree[is_op]
        length += np.bincount(tree, minlength=n) + np.bincount(op_tree, minlength=n)
        pending = np.bincount(op_tree, weights=k, minlength=n).astype(np.int64)
        alive &= length + pending < spec.max_length  # every pending child adds >= 1
        keep = alive[op_tree]
        tree = np.repeat(op_tree[keep], k[keep])
    accepted = alive & (length > spec.min_length)
    if not accepted.any():
        return [], np.zeros(0, np.int8), np.zeros(0, np.int32), np.zeros(0, np.int64)

    # keep the accepted trees' nodes (order is preserved, so child segments stay aligned)
    sel = []
    for tree, is_op, k, op, digit in levels:
        mask = accepted[tree]
        sel.append((is_op[mask], k[mask[is_op]], op[mask[is_op]], digit[mask[~is_op]]))
    # bottom-up: values and serialised sizes (tokens including parentheses)
    vals: list[np.ndarray] = [np.zeros(0)] * len(sel)
    sizes: list[np.ndarray] = [np.zeros(0)] * len(sel)
    for d in reversed(range(len(sel))):
        is_op, k, op, digit = sel[d]
        v = np.empty(is_op.size, np.int64)
        s = np.ones(is_op.size, np.int64)
        v[~is_op] = digit
        if k.size:
            v[is_op] = apply_ops(op, vals[d + 1], k)
            s[is_op] = 2 * k + 4 + np.add.reduceat(sizes[d + 1], _excl_cumsum(k))
        vals[d], sizes[d] = v, s
    # top-down: start of every node in one flat token buffer, then fill the tokens
    roots = _excl_cumsum(sizes[0])
    total = int(sizes[0].sum())
    tok = np.full(total, _CLOSE, np.int8)  # every position not set below is ")"
    pos = roots
    for d, (is_op, k, op, digit) in enumerate(sel):
        tok[pos[~is_op]] = _DIGIT0 + digit
        if not k.size:
            continue
        po, so = pos[is_op], sizes[d][is_op]
        opens = k + 1
        tok[
            np.repeat(po, opens) + np.arange(opens.sum()) - np.repeat(_excl_cumsum(opens), opens)
        ] = _OPEN
        tok[po + k + 1] = _OP0 + op
        tok[po + so - 2] = _END
        step = sizes[d + 1] + 1  # each child is followed by ")"
        excl = np.cumsum(step) - step
        pos = np.repeat(po + k + 2, k) + excl - np.repeat(excl[_excl_cumsum(k)], k)
    words = _WORDS[tok]
    ends = roots + sizes[0]
    sources = [" ".join(words[a:b].tolist()) for a, b in zip(roots, ends)]
    return (
        sources,
        vals[0].astype(np.int8),
        length[accepted].astype(np.int32),
        np.flatnonzero(accepted),
    )


def _chunk_worker(args: tuple[ListOpsSpec, int]):
    return sample_chunk(*args)


def _chunks(spec: ListOpsSpec, workers: int):
    """Yield chunk results in chunk order, forever (the caller stops)."""
    return ordered_map(_chunk_worker, ((spec, c) for c in itertools.count()), workers)


def generate(spec: ListOpsSpec, workers: int | None = None, progress: bool = True) -> ListOpsData:
    """Generate the three splits; deterministic for ``spec`` whatever ``workers`` is."""
    spec.validate()
    workers = max(1, workers if workers else min(os.cpu_count() or 1, 16))
    total = spec.n_train + spec.n_val + spec.n_test
    t0 = time.perf_counter()
    seen: set[bytes] = set()
    sources: list[str] = []
    labels: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    attempts = duplicates = stale = 0
    bar = tqdm(total=total, desc="ListOps", unit="ex", disable=not progress, dynamic_ncols=True)
    gen = _chunks(spec, workers) if total else iter(())
    try:
        for src, lab, lens, idx in gen:
            n_attempts, keep = CHUNK, []
            for i, s in enumerate(src):
                h = hashlib.blake2b(s.encode(), digest_size=16).digest()
                if h in seen:
                    duplicates += 1
                    continue
                seen.add(h)
                keep.append(i)
                if len(sources) + len(keep) == total:
                    n_attempts = int(idx[i]) + 1  # the rest of this chunk is not used
                    break
            attempts += n_attempts
            stale = 0 if keep else stale + 1
            if stale >= 200:
                raise ConfigError(
                    f"listops generate: only {len(sources)} distinct trees found for "
                    f"{spec} after {attempts} attempts, {total} requested; widen the "
                    "length bounds or request fewer examples"
                )
            sources += [src[i] for i in keep]
            labels.append(lab[keep])
            lengths.append(lens[keep])
            bar.update(len(keep))
            if len(sources) >= total:
                break
    finally:
        gen.close()
        bar.close()
    lab_all = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    len_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    out = ListOpsData({}, {}, {})
    a = 0
    for name, size in spec.sizes.items():
        out.sources[name] = sources[a : a + size]
        out.labels[name], out.lengths[name] = lab_all[a : a + size], len_all[a : a + size]
        a += size
    counts = np.bincount(lab_all, minlength=10)
    out.stats = {
        "attempts": attempts,
        "accepted": len(sources) + duplicates,
        "acceptance_rate": (len(sources) + duplicates) / max(attempts, 1),
        "duplicates": duplicates,
        "mean_length": float(len_all.mean()) if len_all.size else 0.0,
        "class_prior": (counts / max(counts.sum(), 1)).round(4).tolist(),
        "seconds": round(time.perf_counter() - t0, 2),
        "workers": workers,
    }
    return out


def write_release(data: ListOpsData, out: str | os.PathLike, spec: ListOpsSpec) -> Path:
    """Write ``out/listops-1000/basic_{train,val,test}.tsv`` byte for byte as LRA's
    ``csv.writer`` does (header ``Source\\tTarget``, CRLF line ends) and a
    ``GENERATED.json`` marker; files appear only once fully written."""
    folder = Path(out).expanduser() / RELEASE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp_paths = []
    for name in SPLITS:
        tmp = folder / f".basic_{name}.tsv.tmp{os.getpid()}"
        with open(tmp, "w", encoding="ascii", newline="") as f:
            f.write(HEADER + "\r\n")
            srcs, labs = data.sources[name], data.labels[name]
            for a in range(0, len(srcs), 4096):
                rows = zip(srcs[a : a + 4096], labs[a : a + 4096])
                f.write("".join(f"{s}\t{y}\r\n" for s, y in rows))
        tmp_paths.append((tmp, folder / f"basic_{name}.tsv"))
    for tmp, final in tmp_paths:
        os.replace(tmp, final)
    marker = {"generator": "tasks.generators.listops", "chunk": CHUNK, **asdict(spec), **data.stats}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    d = ListOpsSpec()
    p = argparse.ArgumentParser(
        prog="python -m tasks.generators.listops",
        description="Generate ListOps in the LRA release layout (DIR/listops-1000/basic_*.tsv).",
    )
    p.add_argument("--out", required=True, help="output folder (listops-1000/ is created in it)")
    for name in ("seed", "n_train", "n_val", "n_test", "min_length", "max_length"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--max-args", type=int, default=d.max_args)
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: all cores, at most 16)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = ListOpsSpec(
        seed=a.seed,
        n_train=a.n_train,
        n_val=a.n_val,
        n_test=a.n_test,
        min_length=a.min_length,
        max_length=a.max_length,
        max_depth=a.max_depth,
        max_args=a.max_args,
    )
    try:
        data = generate(spec, workers=a.workers, progress=not a.quiet)
        folder = write_release(data, a.out, spec)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("wrote %s: %s", folder, json.dumps(data.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
