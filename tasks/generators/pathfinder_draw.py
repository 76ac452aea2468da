"""Pathfinder drawing (the settings of the LRA release: Linsley et al. 2018, as used by
Tay et al. 2021): one image from one seed.

Two target contours of ``contour_length`` dashes ("paddles") grow together from seeds
``seed_distance`` apart; short distractor contours and two circular markers are added.
Label 1: both markers sit on the ends of the same contour; label 0: on ends of different
contours. Geometry lives on an integer occupancy grid at twice the resolution (dash id
per cell, -1 = border): each dash claims the cells within ``2 * half-width + margin`` of
its centre line, candidate dashes must be free of other claims (a contour ignores only
its own previous dash), and marker tips are kept clear of the other contour. Dash
directions are snapped to 64 bins and starts to quarter cells, so placing a dash is a
few array look-ups in precomputed templates. Ink is drawn anti-aliased at 2x and
averaged down 2x2.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

DIFFICULTIES = {"easy": 6, "medium": 9, "hard": 14}
FOLDERS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}
AA = 2  # anti-aliasing scale: draw at AA x resolution, then average AA x AA blocks


@dataclass(frozen=True)
class Params:
    """Drawing parameters in output pixels (the release's settings per resolution: ``_TABLE``)."""

    resolution: int
    contour_length: int
    padding: float
    dash_length: float
    thickness: float
    margins: tuple[int, ...]
    marker_radius: float
    seed_distance: float
    continuity: float
    contrast: float
    gain: float  # intensity scale applied after down-sampling (the release's snake contrast)
    distractor_budget: int  # distractor dashes in all; contours of contour_length // 3

    @property
    def distractor_length(self) -> int:
        return max(1, self.contour_length // 3)

    @property
    def n_distractors(self) -> int:
        return self.distractor_budget // self.distractor_length


#: per resolution, the fields of Params after ``resolution`` and ``contour_length``:
#: padding, dash_length, thickness, margins, marker_radius, seed_distance, continuity,
#: contrast, gain, distractor_budget
_TABLE = {
    32: (1, 2, 0.5, (1,), 1.5, 7, 1.0, 0.75, 2.0, 20),
    64: (1, 5, 1.0, (1,), 2.5, 12, 1.8, 1.0, 1.0, 22),
    128: (1, 5, 1.5, (2, 3), 3, 20, 1.8, 1.0, 1.0, 35),
    256: (22, 5, 2.0, (3,), 5, 27, 1.8, 1.0, 1.0, 30),
}


def params_for(resolution: int, difficulty: str) -> Params:
    """LRA parameters for a resolution (32/64/128/256) and difficulty (easy/medium/hard)."""
    if resolution not in _TABLE:
        raise ValueError(f"resolution {resolution}: expected one of {sorted(_TABLE)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r}: expected one of {list(DIFFICULTIES)}")
    return Params(resolution, DIFFICULTIES[difficulty], *_TABLE[resolution])


def folder_name(resolution: int, difficulty: str) -> str:
    """Release sub-path, e.g. ``pathfinder32/curv_contour_length_14``."""
    return f"pathfinder{resolution}/{FOLDERS[DIFFICULTIES[difficulty]]}"


# ----------------------------------------------------------------------------- drawing


NA = 64  # dash directions are snapped to NA bins
SUB = 4  # dash starts are snapped to 1/SUB of a canvas cell
_COS = np.cos(2 * np.pi * np.arange(NA) / NA)
_SIN = np.sin(2 * np.pi * np.arange(NA) / NA)


def _seg_dist(xs, ys, dx, dy):
    """Distance of points (xs, ys), relative to a segment start, to segment (0,0)-(dx,dy)."""
    l2 = dx * dx + dy * dy
    if l2 == 0:
        return np.hypot(xs, ys)
    t = np.minimum(np.maximum((xs * dx + ys * dy) / l2, 0.0), 1.0)
    return np.hypot(xs - t * dx, ys - t * dy)


def _disc_window(x: float, y: float, R: float, pad: int = 0):
    """The window of grid cells that holds the disc of radius R around (x, y), widened by
    ``pad`` cells on each side, as (row slice, column slice), and the distance of each
    cell centre in it to (x, y)."""
    x0, x1 = int(x - R) - pad, int(x + R) + 2 + pad
    y0, y1 = int(y - R) - pad, int(y + R) + 2 + pad
    d = _seg_dist(np.arange(x0, x1)[None, :] + 0.5 - x, np.arange(y0, y1)[:, None] + 0.5 - y, 0, 0)
    return (slice(y0, y1), slice(x0, x1)), d


def _snap(x, y, width: int):
    """Flat cell and sub-cell index of points with non-negative coordinates (arrays)."""
    qx = np.floor(np.asarray(x) * SUB).astype(np.int64)
    qy = np.floor(np.asarray(y) * SUB).astype(np.int64)
    return (qy // SUB) * width + qx // SUB, (qy % SUB) * SUB + qx % SUB


@functools.lru_cache(maxsize=16)
def _steps(L: float, M: float, width: int, continuity: float):
    """For a dash with template index (direction bin a, sub-cell): flat offsets from its
    start cell to the start cells of the next-dash candidates, their template indices and
    their weights cos^2(min(continuity * |turn|, pi/2)). A candidate starts M past the
    pivot, which lies M past the dash end, in the candidate's direction."""
    k = np.arange(-NA // 2 + 1, NA // 2)
    w = np.cos(np.minimum(continuity * np.abs(k) * 2 * np.pi / NA, np.pi / 2)) ** 2
    k, w = k[w > 1e-9], w[w > 1e-9]
    o = int(math.ceil(L + 2 * M)) + 2  # a frame origin that keeps coordinates positive
    cells = np.empty((NA * SUB * SUB, len(k)), np.int64)
    tmpls = np.empty_like(cells)
    for a in range(NA):
        phi = (a + k) % NA
        for s in range(SUB * SUB):
            ox, oy = o + (s % SUB + 0.5) / SUB, o + (s // SUB + 0.5) / SUB
            pc, ps = _snap(ox + (L + M) * _COS[a], oy + (L + M) * _SIN[a], width)
            px = (pc % width) + (ps % SUB + 0.5) / SUB
            py = (pc // width) + (ps // SUB + 0.5) / SUB
            cc, cs = _snap(px + M * _COS[phi], py + M * _SIN[phi], width)
            cells[a * SUB * SUB + s] = cc - (o * width + o)
            tmpls[a * SUB * SUB + s] = phi * (SUB * SUB) + cs
    return cells, tmpls, w, {}


@functools.lru_cache(maxsize=16)
def _templates(L: float, M: float, r_occ: float, r_ink: float, width: int):
    """Per (direction bin, sub-cell y, sub-cell x) of a dash start: flat offsets (for a
    canvas ``width`` wide) of the occupancy cells within r_occ, of the centre-line samples,
    of look-ahead points where a next dash could go, and of the ink cells with their
    anti-aliased coverage. Built once per geometry so that placing a dash costs a few
    array operations."""
    R = int(math.ceil(max(r_occ, r_ink + 1))) + 1
    g = np.arange(-R - int(math.ceil(L)), int(math.ceil(L)) + R + 1)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    n_pts = int(math.ceil(L)) + 1
    t = np.linspace(0.0, 1.0, n_pts)
    occ, ink, cov, pts = [], [], [], np.empty((NA, SUB, SUB, n_pts), np.int64)
    fan = np.deg2rad([-40, -20, 0, 20, 40])[:, None]
    reach = np.array([0.0, 0.5, 1.0])[None, :] * L + M
    look = np.empty((NA, SUB, SUB, fan.size * reach.size), np.int64)
    for a in range(NA):
        th = 2 * math.pi * a / NA
        dx, dy = L * math.cos(th), L * math.sin(th)
        lx = dx + M * math.cos(th) + reach * np.cos(th + fan)
        ly = dy + M * math.sin(th) + reach * np.sin(th + fan)
        for fy in range(SUB):
            for fx in range(SUB):
                oy, ox = (fy + 0.5) / SUB, (fx + 0.5) / SUB  # start inside its cell
                d = _seg_dist(gx + 0.5 - ox, gy + 0.5 - oy, dx, dy)
                flat = gy * width + gx
                occ.append(flat[d <= r_occ])
                c = np.minimum(np.maximum(r_ink + 0.5 - d, 0.0), 1.0)
                ink.append(flat[c > 0])
                cov.append(c[c > 0].astype(np.float32))
                py = np.floor(oy + t * dy).astype(np.int64)
                px = np.floor(ox + t * dx).astype(np.int64)
                pts[a, fy, fx] = py * width + px
                ly_, lx_ = np.floor(oy + ly).ravel(), np.floor(ox + lx).ravel()
                look[a, fy, fx] = ly_.astype(np.int64) * width + lx_.astype(np.int64)
    k = NA * SUB * SUB
    check = np.concatenate([pts.reshape(k, n_pts), look.reshape(k, -1)], axis=1)
    return occ, ink, cov, check, n_pts


class _Canvas:
    """Occupancy grid (int32 dash ids, -1 = border) at AA x resolution, with an outer band
    of ``off`` occupied cells so that candidate dashes never index outside. Ink is drawn
    only for the final dashes, so dashes of a stuck contour can be taken back."""

    def __init__(self, p: Params, margin: int):
        s = AA
        self.p, self.S = p, p.resolution * s
        self.L = p.dash_length * s  # dash length
        self.M = margin * s  # gap from a dash end to the pivot, and from pivot to next dash
        self.r = p.thickness * s / 2  # ink half-width
        self.R_occ = 2 * self.r + self.M  # centre lines of different dashes stay this far apart
        self.off = int(math.ceil(3 * self.L + 4 * self.M + self.R_occ)) + 2
        n = self.n = self.S + 2 * self.off
        self.occ = np.full((n, n), -1, np.int32)
        self.flat = self.occ.reshape(-1)
        b = self.off + int(math.ceil(p.padding * s))
        self.occ[b : n - b, b : n - b] = 0
        self.lo, self.hi = float(b), float(n - b)  # seeds are drawn inside [lo, hi)
        self.next_id = 1
        self.t_occ, self.t_ink, self.t_cov, self.t_check, self.n_pts = _templates(
            self.L, self.M, self.R_occ, self.r, n
        )
        self.s_cell, self.s_tmpl, self.s_w, self.g_off = _steps(self.L, self.M, n, p.continuity)
        self.strokes: list[tuple[int, int]] = []  # (flat cell of the start, template index)
        self.discs: list[tuple[float, float, float]] = []

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def xy(self, cell: int, tmpl: int) -> tuple[float, float]:
        """Coordinates of a dash start."""
        s = tmpl % (SUB * SUB)
        return cell % self.n + (s % SUB + 0.5) / SUB, cell // self.n + (s // SUB + 0.5) / SUB

    def check(self, cell, tmpl, allow: int, look: bool, off=None) -> np.ndarray:
        """Weight factor per candidate: 0 when its centre line touches a cell occupied by
        anything but dash ``allow``, else (with ``look``) 0.05 + the fraction of free
        look-ahead points where the following dash could go. ``off``: precomputed
        ``cell[:, None] + t_check[tmpl]`` relative to a scalar ``cell``."""
        v = (
            self.flat[cell + off]
            if off is not None
            else self.flat[cell[:, None] + self.t_check[tmpl]]
        )
        z = v == 0
        n = self.n_pts
        ok = np.logical_and.reduce(z[:, :n] | (v[:, :n] == allow), axis=1)
        if not look:
            return ok.astype(np.float64)
        return ok * (0.05 + np.add.reduce(z[:, n:], axis=1) * (1.0 / (v.shape[1] - n)))

    def grow_offsets(self, tmpl: int) -> np.ndarray:
        """Check offsets of all next-dash candidates of a dash, relative to its start cell
        (memoised per geometry: shared by all canvases of one parameter set)."""
        off = self.g_off.get(tmpl)
        if off is None:
            off = self.g_off[tmpl] = self.s_cell[tmpl][:, None] + self.t_check[self.s_tmpl[tmpl]]
        return off

    def claim(self, cell: int, tmpl: int, ident: int) -> np.ndarray:
        idx = cell + self.t_occ[tmpl]
        idx = idx[self.flat[idx] == 0]
        self.flat[idx] = ident
        return idx

    def tip_clearance(self) -> float:
        """Distance a marker's tip keeps from the centre lines of other contours."""
        return self.p.marker_radius * AA + 2 * self.r + self.M / 2

    def reserve(self, x: float, y: float, ident: int) -> np.ndarray:
        """Claim the free cells around a contour tip for its dash ``ident``, so the other
        contour keeps clear of the marker that may go there; returns the cells."""
        R = self.tip_clearance() + 0.5
        win, d = _disc_window(x, y, R)
        yy, xx = np.nonzero((d <= R) & (self.occ[win] == 0))
        idx = (yy + win[0].start) * self.n + (xx + win[1].start)
        self.flat[idx] = ident
        return idx

    def release(self, idx: np.ndarray) -> None:
        self.flat[idx] = 0

    def marker(self, x, y) -> None:
        R = self.p.marker_radius * AA
        rr = R + self.M + self.r
        win, d = _disc_window(x, y, rr)
        o = self.occ[win]
        o[(d <= rr) & (o == 0)] = self.new_id()
        self.discs.append((x, y, R))

    def image(self) -> np.ndarray:
        """Draw the strokes anti-aliased, max-combined (markers at full intensity), then
        average AA x AA blocks and scale to uint8 with the resolution's gain."""
        img = np.zeros(self.n * self.n, np.float32)
        for cell, tmpl in self.strokes:
            idx = cell + self.t_ink[tmpl]
            img[idx] = np.maximum(img[idx], self.t_cov[tmpl] * self.p.contrast)
        img = img.reshape(self.n, self.n)
        for x, y, R in self.discs:
            win, d = _disc_window(x, y, R, pad=1)
            ink = img[win]
            np.maximum(ink, np.minimum(np.maximum(R + 0.5 - d, 0.0), 1.0) / self.p.gain, out=ink)
        o, S, a, res = self.off, self.S, AA, self.p.resolution
        img = img[o : o + S, o : o + S].reshape(res, a, res, a).mean(axis=(1, 3))
        return np.minimum(np.rint(img * (255.0 * self.p.gain)), 255).astype(np.uint8)


class _Contour:
    """A growing contour: a stack of dashes (start cell, template index, id, claimed cells);
    the template index encodes the direction bin and the sub-cell start."""

    def __init__(self, cv: _Canvas, cell: int, tmpl: int, look: bool = True):
        self.cv, self.look = cv, look
        self.dashes: list[tuple[int, int, int, np.ndarray]] = []
        self._add(cell, tmpl)

    @property
    def n(self) -> int:
        return len(self.dashes)

    @property
    def start(self) -> tuple[float, float]:
        return self.cv.xy(*self.dashes[0][:2])

    @property
    def end(self) -> tuple[float, float]:
        cell, tmpl = self.dashes[-1][:2]
        x, y = self.cv.xy(cell, tmpl)
        a = tmpl // (SUB * SUB)
        return x + self.cv.L * _COS[a], y + self.cv.L * _SIN[a]

    def _add(self, cell: int, tmpl: int) -> None:
        ident = self.cv.new_id()
        self.dashes.append((cell, tmpl, ident, self.cv.claim(cell, tmpl, ident)))

    def undo(self) -> None:
        self.cv.release(self.dashes.pop()[3])

    def grow(self, rng: np.random.Generator) -> bool:
        """Add one dash on the circle around the pivot ahead of the last dash, weighted by
        cos^2(min(continuity * |turn|, pi/2)) times the free space ahead; False if stuck."""
        cv = self.cv
        cell, tmpl, last_id, _ = self.dashes[-1]
        off = cv.grow_offsets(tmpl)
        cw = (cv.s_w * cv.check(cell, None, last_id, self.look, off)).cumsum()
        if cw[-1] <= 0:
            return False
        j = min(int(cw.searchsorted(rng.random() * cw[-1], side="right")), len(cw) - 1)
        self._add(cell + int(cv.s_cell[tmpl, j]), int(cv.s_tmpl[tmpl, j]))
        return True

    def ink(self) -> None:
        self.cv.strokes.extend((d[0], d[1]) for d in self.dashes)


def _seed_dash(cv: _Canvas, rng, x: float, y: float, tries: int = 8) -> tuple[int, int] | None:
    """(cell, template) of a free first dash at (x, y) in a random direction, or None."""
    a = rng.integers(0, NA, tries)
    cell, sub = _snap(np.full(tries, x), np.full(tries, y), cv.n)
    tmpl = a * (SUB * SUB) + sub
    ok = cv.check(cell, tmpl, -2, look=False) > 0
    if not ok.any():
        return None
    j = int(np.argmax(ok))
    return int(cell[j]), int(tmpl[j])


def _target_pair(p: Params, margin: int, rng, max_backtracks: int = 30):
    """Two contours grown together (the shorter one grows next) from seeds
    ``seed_distance`` apart. When one gets stuck the last dashes are taken back (last in,
    first out; up to 2 + the number of earlier backtracks, so a contour that keeps getting
    stuck is regrown from its seed); after ``max_backtracks`` the caller starts a fresh
    pair."""
    cv = _Canvas(p, margin)
    ax, ay = rng.uniform(cv.lo, cv.hi, 2)
    phi = rng.random() * 2 * math.pi
    d = p.seed_distance * AA
    bx, by = ax + d * math.cos(phi), ay + d * math.sin(phi)
    if not (cv.lo <= bx < cv.hi and cv.lo <= by < cv.hi):
        return None
    sa = _seed_dash(cv, rng, ax, ay)
    if sa is None:
        return None
    a = _Contour(cv, *sa)
    cv.reserve(*a.start, a.dashes[0][2])
    sb = _seed_dash(cv, rng, bx, by)
    if sb is None:
        return None
    b = _Contour(cv, *sb)
    cv.reserve(*b.start, b.dashes[0][2])
    order: list[_Contour] = []
    backtracks = 0
    n = p.contour_length
    while a.n < n or b.n < n:
        c = a if (a.n <= b.n and a.n < n) or b.n >= n else b
        if c.grow(rng):
            order.append(c)
            if c.n < n:
                continue
            if _tip_clear(cv, c.end, b if c is a else a):  # done: keep the end tip clear
                cell, tmpl, ident, idx = c.dashes[-1]
                c.dashes[-1] = (cell, tmpl, ident, np.concatenate([idx, cv.reserve(*c.end, ident)]))
                continue
        backtracks += 1
        if backtracks > max_backtracks or not order:
            return None
        for _ in range(min(int(rng.integers(1, 3 + backtracks)), len(order))):
            order.pop().undo()
    if not all(_tip_clear(cv, tip, o) for c, o in ((a, b), (b, a)) for tip in (c.start, c.end)):
        return None  # a marker there would touch the other contour
    return cv, a, b


def _tip_clear(cv: _Canvas, tip: tuple[float, float], other: _Contour) -> bool:
    """True when the ink of the other contour stays half a margin clear of a marker disc
    at this tip, so a marker there sits on its own contour only (both tips of both
    contours are checked, so positives and negatives look alike)."""
    cells = np.array([d[0] for d in other.dashes])
    tmpls = np.array([d[1] for d in other.dashes])
    s = tmpls % (SUB * SUB)
    sx = cells % cv.n + (s % SUB + 0.5) / SUB
    sy = cells // cv.n + (s // SUB + 0.5) / SUB
    a = tmpls // (SUB * SUB)
    px, py, dx, dy = tip[0] - sx, tip[1] - sy, cv.L * _COS[a], cv.L * _SIN[a]
    t = np.minimum(np.maximum((px * dx + py * dy) / (cv.L * cv.L), 0.0), 1.0)
    d = np.hypot(px - t * dx, py - t * dy)
    return bool(d.min() >= cv.tip_clearance())


def _distractors(cv: _Canvas, p: Params, rng, tries: int = 4) -> int:
    """Short contours at free random places; one that gets stuck keeps the dashes it has.
    Returns the number of distractor dashes drawn."""
    drawn = 0
    for _ in range(p.n_distractors):
        for _ in range(tries):
            x, y = rng.uniform(cv.lo, cv.hi, 2)
            sd = _seed_dash(cv, rng, x, y)
            if sd is None:
                continue
            c = _Contour(cv, *sd)
            while c.n < p.distractor_length and c.grow(rng):
                pass
            c.ink()
            drawn += c.n
            break
    return drawn


def make_image(p: Params, seed: int, index: int) -> tuple[np.ndarray, int, int]:
    """One image: (uint8 [res, res], label, paddle margin). Deterministic in (seed, index)."""
    ss = np.random.SeedSequence([seed, p.resolution, p.contour_length, index])
    rng = np.random.default_rng(ss)
    label = int(rng.random() < 0.5)
    out = None
    while out is None:
        margin = int(p.margins[rng.integers(len(p.margins))])
        out = _target_pair(p, margin, rng)
    cv, a, b = out
    a.ink()
    b.ink()
    if rng.random() < 0.5:  # which contour carries the first marker
        a, b = b, a
    cv.marker(*a.start)
    cv.marker(*(a.end if label == 1 else b.end))
    _distractors(cv, p, rng)
    return cv.image(), label, margin
