"""Procedural top-down floor-plan layouts in the 3D-FRONT palette, for training without the real renders.

A layout is planned in metres (rooms from a binary space partition, doors, furniture groups per room kind) and
rasterised straight into a (size, size) array of class ids, so every pixel is an exact palette colour at any
size. Wall thickness is a fixed fraction of the tile, like the real renders; furniture scales with the plan.
The look and the per-class pixel fractions were tuned against ../shared/real_layouts (tests/test_layouts.py).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .palette import PALETTE
from .errors import InputError
from .files import atomic_path

# Class ids, in the order of data.CLASSES.
BED, CABINET, CHAIR, LIGHTING, OTHERS, STOOL, SOFA, TABLE, WALL, BACKGROUND = range(10)

P_SCENE = 0.55  # share of multi-room scenes; the rest are single rooms
P_EMPTY = 0.30  # share of walls-only layouts (the real set has 25 of 79)
WALL_PX_128 = (2.9, 4.7)  # wall band thickness range in pixels of a 128-px tile (2-4 px in the real set)
P_HOLLOW = 0.25  # share of layouts whose walls are drawn as double lines (outlined bands), as some renders do
P_GREY_FLOOR = 0.1  # share of walls-only layouts with wall-coloured floors (3 of the 25 real empty tiles)
DOOR_M = (0.8, 1.0)  # door gap width range in metres

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) in metres, plan coordinates


@dataclass
class _Canvas:
    """Class-id raster plus the metre -> pixel mapping of one layout."""

    ids: np.ndarray  # (S, S) uint8 class ids
    ppm: float  # pixels per metre
    ox: float  # pixel x of the plan's x = 0
    oy: float  # pixel y of the plan's y = 0
    placed: list[Rect] = field(default_factory=list)  # furniture and door keep-outs, for overlap tests

    def span(self, a: float, b: float, o: float) -> tuple[int, int]:
        """Metre interval -> pixel slice bounds, at least one pixel wide so small objects survive at 32 px."""
        size = self.ids.shape[0]
        i0 = int(np.floor(o + a * self.ppm + 0.5))
        i1 = max(int(np.floor(o + b * self.ppm + 0.5)), i0 + 1)
        return min(max(i0, 0), size), min(max(i1, 0), size)

    def rect(self, cls: int, r: Rect) -> None:
        x0, x1 = self.span(r[0], r[2], self.ox)
        y0, y1 = self.span(r[1], r[3], self.oy)
        self.ids[y0:y1, x0:x1] = cls

    def ellipse(self, cls: int, r: Rect) -> None:
        x0, x1 = self.span(r[0], r[2], self.ox)
        y0, y1 = self.span(r[1], r[3], self.oy)
        if x1 <= x0 or y1 <= y0:
            return
        # Pixel centres inside the ellipse inscribed in the pixel box; a 1-2 px box stays a full dot.
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0 + 0.5 / max(rx, ry)
        self.ids[y0:y1, x0:x1][inside] = cls


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _local(room: Rect, side: int, u0: float, v0: float, u1: float, v1: float) -> Rect:
    """Rect given along wall `side` (0 top, 1 right, 2 bottom, 3 left): u along the wall, v away from it."""
    x0, y0, x1, y1 = room
    if side == 0:
        return (x0 + u0, y0 + v0, x0 + u1, y0 + v1)
    if side == 1:
        return (x1 - v1, y0 + u0, x1 - v0, y0 + u1)
    if side == 2:
        return (x1 - u1, y1 - v1, x1 - u0, y1 - v0)
    return (x0 + v0, y1 - u1, x0 + v1, y1 - u0)


def _wall_length(room: Rect, side: int) -> tuple[float, float]:
    """(length along the wall, depth of the room away from it)."""
    w, h = room[2] - room[0], room[3] - room[1]
    return (w, h) if side in (0, 2) else (h, w)


# A furniture group: items (class, shape 'r'|'e', u0, v0, u1, v1) in wall-local metres, u >= 0 from the group start.
Item = tuple[int, str, float, float, float, float]


def _put(c: _Canvas, rects: list[tuple[int, str, Rect]]) -> bool:
    """Draw a group of (class, shape, rect) unless any rect overlaps something already placed."""
    if any(_overlaps(r, p) for _, _, r in rects for p in c.placed):
        return False
    for cls, shape, r in rects:
        (c.rect if shape == "r" else c.ellipse)(cls, r)
    c.placed.extend(r for _, _, r in rects)
    return True


def _place(c: _Canvas, rng: np.random.Generator, room: Rect, items: list[Item], sides=None, centred=False, tries=16) -> int | None:
    """Put a group against one of `sides` of `room` where it fits and overlaps nothing placed; return the side."""
    width = max(it[4] for it in items)
    depth = max(it[5] for it in items)
    sides = list(rng.permutation(4)) if sides is None else sides
    for t in range(tries):
        side = int(sides[t % len(sides)])
        length, room_depth = _wall_length(room, side)
        if width > length or depth > room_depth:
            continue
        # Beds and sofas sit near the middle of their wall; cabinets anywhere along it.
        slack = length - width
        u = slack / 2 + rng.uniform(-0.3, 0.3) * slack if centred else rng.uniform(0, slack)
        if _put(c, [(cls, shape, _local(room, side, u + a, b, u + cc, d)) for cls, shape, a, b, cc, d in items]):
            return side
    return None


def _place_free(c: _Canvas, rng: np.random.Generator, room: Rect, items: list[Item], tries=16) -> bool:
    """Put a free-standing group (a table with chairs) somewhere inside `room`, in either orientation."""
    width = max(it[4] for it in items)
    depth = max(it[5] for it in items)
    for _ in range(tries):
        side = int(rng.integers(4))
        length, room_depth = _wall_length(room, side)
        if width > length or depth > room_depth:
            continue
        u = rng.uniform(0, length - width)
        v = (room_depth - depth) / 2 + rng.uniform(-0.35, 0.35) * (room_depth - depth)
        if _put(c, [(cls, shape, _local(room, side, u + a, v + b, u + cc, v + d)) for cls, shape, a, b, cc, d in items]):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------
# Furniture groups per room kind. Sizes are real furniture sizes in metres, jittered.


def _small(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    """Occasional floor lamp, plant (`others`) or stool in any furnished room."""
    if rng.random() < 0.35:
        s = rng.uniform(0.3, 0.45)
        _place(c, rng, room, [(LIGHTING, "e", 0.05, 0.05, 0.05 + s, 0.05 + s)])
    if rng.random() < 0.28:
        s = rng.uniform(0.35, 0.55)
        _place(c, rng, room, [(OTHERS, "e" if rng.random() < 0.6 else "r", 0.05, 0.05, 0.05 + s, 0.05 + s)])
    if rng.random() < 0.18:
        s = rng.uniform(0.35, 0.5)
        _place_free(c, rng, room, [(STOOL, "e", 0, 0, s, s * rng.uniform(0.8, 1.2))])


def _bedroom(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    bw = rng.uniform(1.4, 1.9) if rng.random() < 0.75 else rng.uniform(0.9, 1.2)
    bl = rng.uniform(1.95, 2.2)
    ns = rng.uniform(0.4, 0.55)  # nightstand side
    items: list[Item] = [(BED, "r", ns + 0.05, 0, ns + 0.05 + bw, bl)]
    for u in (0.0, ns + 0.1 + bw) if rng.random() < 0.85 else ():
        items.append((CABINET, "r", u, 0, u + ns, ns))
        if rng.random() < 0.35:  # bedside lamp drawn on the nightstand
            items.append((LIGHTING, "e", u + ns * 0.25, ns * 0.25, u + ns * 0.75, ns * 0.75))
    if rng.random() < 0.25:  # ceiling light seen from above on the bed
        m = ns + 0.05 + bw / 2
        items.append((LIGHTING, "e", m - 0.22, bl / 2 - 0.22, m + 0.22, bl / 2 + 0.22))
    side = _place(c, rng, room, items, centred=True)
    if side is None:  # room too small or too crowded for nightstands: the bed alone, single if need be
        if _place(c, rng, room, [(BED, "r", 0, 0, bw, bl)], centred=True) is None:
            _place(c, rng, room, [(BED, "r", 0, 0, 1.0, 2.0)], centred=True)
    if rng.random() < 0.85:  # wardrobe
        ww = rng.uniform(1.4, 2.6)
        if _place(c, rng, room, [(CABINET, "r", 0, 0, ww, rng.uniform(0.55, 0.65))]) is None:
            _place(c, rng, room, [(CABINET, "r", 0, 0, 1.0, 0.55)])
    if rng.random() < 0.35:
        _desk(rng, room, c)
    if rng.random() < 0.3:  # dresser (the renders class it as a table)
        _place(c, rng, room, [(TABLE, "r", 0, 0, rng.uniform(0.9, 1.5), rng.uniform(0.45, 0.55))])
    if rng.random() < 0.1:  # bench or dressing stool at the foot of the bed
        _place_free(c, rng, room, [(STOOL, "r", 0, 0, rng.uniform(0.8, 1.2), 0.4)])
    _small(rng, room, c)


def _desk(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    dw, dd = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.7)
    ch = rng.uniform(0.45, 0.55)
    _place(c, rng, room, [(CABINET, "r", 0, 0, dw, dd), (CHAIR, "e" if rng.random() < 0.5 else "r", dw / 2 - ch / 2, dd + 0.1, dw / 2 + ch / 2, dd + 0.1 + ch)])


def _study(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    _desk(rng, room, c)
    for _ in range(int(rng.integers(1, 4))):  # bookshelves
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(0.8, 2.0), rng.uniform(0.3, 0.4))])
    if rng.random() < 0.4:
        _place(c, rng, room, [(SOFA, "r", 0, 0, rng.uniform(1.4, 2.0), 0.85)])
    _small(rng, room, c)


def _dining_group(rng: np.random.Generator) -> list[Item]:
    ch = rng.uniform(0.45, 0.55)
    if rng.random() < 0.3:  # round table with 4 chairs around it (the "star" seen in the renders)
        r = rng.uniform(0.45, 0.6)
        o = ch + 0.05
        t = (TABLE, "e", o, o, o + 2 * r, o + 2 * r)
        m = o + r
        chairs = [(m - ch / 2, 0.0), (m - ch / 2, 2 * o + 2 * r - ch), (0.0, m - ch / 2), (2 * o + 2 * r - ch, m - ch / 2)]
        return [t] + [(CHAIR, "e", a, b, a + ch, b + ch) for a, b in chairs]
    n_side = 3 if rng.random() < 0.3 else 2
    tw, td = rng.uniform(0.6, 0.75) * n_side + 0.2, rng.uniform(0.8, 1.0)
    o = ch + 0.05
    items: list[Item] = [(TABLE, "r", o, o, o + tw, o + td)]
    for k in range(n_side):
        a = o + tw * (k + 0.5) / n_side - ch / 2
        items += [(CHAIR, "r", a, 0.0, a + ch, ch), (CHAIR, "r", a, o + td + 0.05, a + ch, o + td + 0.05 + ch)]
    if rng.random() < 0.65:  # chairs at both ends
        b = o + td / 2 - ch / 2
        items += [(CHAIR, "r", 0.0, b, ch, b + ch), (CHAIR, "r", o + tw + 0.05, b, o + tw + 0.05 + ch, b + ch)]
    return items


def _small_table(rng: np.random.Generator) -> list[Item]:
    """Two-seat table for rooms too small for the full dining group."""
    ch = rng.uniform(0.42, 0.5)
    tw = rng.uniform(0.7, 0.9)
    return [(TABLE, "r", ch + 0.05, 0, ch + 0.05 + tw, 0.75), (CHAIR, "r", 0, 0.15, ch, 0.15 + ch), (CHAIR, "r", ch + 0.1 + tw, 0.15, 2 * ch + 0.1 + tw, 0.15 + ch)]


def _dining(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    if not _place_free(c, rng, room, _dining_group(rng)):
        _place_free(c, rng, room, _small_table(rng))
    if rng.random() < 0.6:  # sideboard
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(1.2, 2.0), rng.uniform(0.4, 0.5))])
    _small(rng, room, c)


def _living(rng: np.random.Generator, room: Rect, c: _Canvas, with_dining: bool) -> None:
    if with_dining:  # open plan: dining table in one half of the long side, the sofa group in the other
        x0, y0, x1, y1 = room
        if x1 - x0 >= y1 - y0:
            m = (x0 + x1) / 2
            lounge, dine = ((x0, y0, m, y1), (m, y0, x1, y1)) if rng.random() < 0.5 else ((m, y0, x1, y1), (x0, y0, m, y1))
        else:
            m = (y0 + y1) / 2
            lounge, dine = ((x0, y0, x1, m), (x0, m, x1, y1)) if rng.random() < 0.5 else ((x0, m, x1, y1), (x0, y0, x1, m))
        if not _place_free(c, rng, dine, _dining_group(rng)):
            _place_free(c, rng, dine, _small_table(rng))
        _living(rng, lounge, c, with_dining=False)
        return
    sw, sd = rng.uniform(1.9, 2.8), rng.uniform(0.85, 1.0)
    core: list[Item] = [(SOFA, "r", 0, 0, sw, sd)]
    v0 = sd + rng.uniform(0.35, 0.5)  # coffee table in front of the sofa
    if rng.random() < 0.3:  # L-shaped sofa: a chaise at one end, the table pulled closer
        core.append((SOFA, "r", sw - sd, sd, sw, sd + rng.uniform(0.7, 1.0)))
        v0 = sd + 0.1
    tw = sw * rng.uniform(0.4, 0.55)
    core.append((TABLE if rng.random() < 0.75 else CABINET, "e" if rng.random() < 0.35 else "r", sw / 2 - tw / 2, v0, sw / 2 + tw / 2, v0 + rng.uniform(0.5, 0.7)))
    items = list(core)
    if rng.random() < 0.5:  # an armchair beside the table
        a = rng.uniform(0.7, 0.85)
        items.append((SOFA, "r", sw + 0.2, sd + 0.1, sw + 0.2 + a, sd + 0.1 + a))
    if rng.random() < 0.5:  # lamp or side table at the sofa's end: shift the rest along the wall
        s = rng.uniform(0.3, 0.45)
        du = s + 0.05
        items = [(LIGHTING if rng.random() < 0.6 else CABINET, "e", 0, 0, s, s)] + [(k, sh, a + du, b, cc + du, d) for k, sh, a, b, cc, d in items]
    side = _place(c, rng, room, items, centred=True)
    if side is None:  # crowded: the sofa and its table alone, else a small sofa
        side = _place(c, rng, room, core, centred=True)
    if side is None:
        side = _place(c, rng, room, [(SOFA, "r", 0, 0, 1.8, 0.85)], centred=True)
    if side is not None and rng.random() < 0.8:  # TV cabinet on the opposite wall
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(1.5, 2.2), rng.uniform(0.4, 0.5))], sides=[(side + 2) % 4], centred=True)
    for _ in range(int(rng.integers(0, 3))):  # shelves and sideboards
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(0.8, 1.8), rng.uniform(0.35, 0.5))])
    _small(rng, room, c)
    if rng.random() < 0.12:  # second stool or pouf
        _place_free(c, rng, room, [(STOOL, "e", 0, 0, 0.4, 0.4)])


def _kitchen(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    d = rng.uniform(0.55, 0.65)
    side = int(rng.integers(4))
    length, _ = _wall_length(room, side)
    a = length * rng.uniform(0.5, 1.0)
    # A counter run ending in the corner shared with the next wall clockwise (where that wall's u starts),
    # then often a second run along that wall: the L-shaped kitchens of the renders.
    if _put(c, [(CABINET, "r", _local(room, side, length - a, 0, length, d))]):
        nxt = (side + 1) % 4
        b = _wall_length(room, nxt)[0] * rng.uniform(0.4, 0.8)
        if b > d + 0.5 and rng.random() < 0.8:
            _put(c, [(CABINET, "r", _local(room, nxt, d + 0.05, 0, b, d))])
    else:  # a doorway in the way: a shorter run wherever it fits
        _place(c, rng, room, [(CABINET, "r", 0, 0, min(a, 1.8), d)])
    if rng.random() < 0.3:
        _place_free(c, rng, room, _small_table(rng))


def _bathroom(rng: np.random.Generator, room: Rect, c: _Canvas) -> None:
    # 3D-FRONT renders few bathroom fixtures: often nothing, sometimes a vanity or a grey fixture.
    if rng.random() < 0.5:
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(0.6, 1.0), 0.5)])
    if rng.random() < 0.25:
        _place(c, rng, room, [(OTHERS, "r", 0, 0, 0.4, 0.6)])


# ---------------------------------------------------------------------------------------------------------
# Plans: rooms, walls and doors.


def _split(rng: np.random.Generator, r: Rect, rooms: list[Rect], depth: int = 0) -> None:
    """Binary space partition into rooms of at least ~2 m a side; big rooms stop splitting at random."""
    w, h = r[2] - r[0], r[3] - r[1]
    if max(w, h) < 4.6 or (depth > 0 and w * h < rng.uniform(10.0, 32.0)):
        rooms.append(r)
        return
    vertical = w > h if abs(w - h) > 1.0 else rng.random() < 0.5  # a vertical cut splits the width
    length = w if vertical else h
    cut = float(np.clip(length * rng.uniform(0.3, 0.7), 2.3, length - 2.3))
    if vertical:
        _split(rng, (r[0], r[1], r[0] + cut, r[3]), rooms, depth + 1)
        _split(rng, (r[0] + cut, r[1], r[2], r[3]), rooms, depth + 1)
    else:
        _split(rng, (r[0], r[1], r[2], r[1] + cut), rooms, depth + 1)
        _split(rng, (r[0], r[1] + cut, r[2], r[3]), rooms, depth + 1)


def _plan_scene(rng: np.random.Generator) -> list[Rect]:
    w, h = rng.uniform(6.5, 12.0), rng.uniform(6.0, 10.5)
    rooms: list[Rect] = []
    _split(rng, (0.0, 0.0, w, h), rooms)
    if len(rooms) >= 4 and rng.random() < 0.5:
        # Drop a corner room for an L-shaped or notched outline, as most real plans are not rectangles.
        corners = [i for i, r in enumerate(rooms) if (r[0] == 0 or r[2] == w) and (r[1] == 0 or r[3] == h)]
        rooms.pop(int(rng.choice(corners)))
    return rooms


def _doors(rng: np.random.Generator, rooms: list[Rect]) -> list[tuple[str, float, float, float]]:
    """Door gaps as (axis, wall coordinate, start, end): axis 'x' is a vertical wall at x = coordinate."""
    doors = []
    for i, a in enumerate(rooms):
        for b in rooms[i + 1 :]:
            for axis, wa, wb, lo, hi in (
                ("x", a[2], b[0], max(a[1], b[1]), min(a[3], b[3])),
                ("x", b[2], a[0], max(a[1], b[1]), min(a[3], b[3])),
                ("y", a[3], b[1], max(a[0], b[0]), min(a[2], b[2])),
                ("y", b[3], a[1], max(a[0], b[0]), min(a[2], b[2])),
            ):
                if wa != wb:  # not a shared wall
                    continue
                dw = rng.uniform(*DOOR_M)
                if hi - lo < dw + 0.5 or rng.random() > 0.7:  # too short for a door, or no door there
                    continue
                if rng.random() < 0.1:  # open plan: most of the shared wall is an opening
                    doors.append((axis, wa, lo + 0.3, hi - 0.3))
                else:
                    s = rng.uniform(lo + 0.25, hi - 0.25 - dw)
                    doors.append((axis, wa, s, s + dw))
    # One entrance on the outline of the plan.
    x0, y0 = min(r[0] for r in rooms), min(r[1] for r in rooms)
    x1, y1 = max(r[2] for r in rooms), max(r[3] for r in rooms)
    r = rooms[int(rng.integers(len(rooms)))]
    outer = [("y", r[1], r[0], r[2]) if r[1] == y0 else None, ("y", r[3], r[0], r[2]) if r[3] == y1 else None,
             ("x", r[0], r[1], r[3]) if r[0] == x0 else None, ("x", r[2], r[1], r[3]) if r[2] == x1 else None]
    outer = [o for o in outer if o is not None]
    if outer and rng.random() < 0.9:
        axis, at, lo, hi = outer[int(rng.integers(len(outer)))]
        dw = rng.uniform(0.9, 1.2)
        if hi - lo > dw + 0.5:
            s = rng.uniform(lo + 0.25, hi - 0.25 - dw)
            doors.append((axis, at, s, s + dw))
    return doors


def _erode(m: np.ndarray, k: int) -> np.ndarray:
    """k steps of 4-neighbour erosion; the tile border counts as inside so walls cut by the edge stay open."""
    for _ in range(k):
        p = np.pad(m, 1, mode="edge")
        m = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m


def _draw_walls(rng: np.random.Generator, c: _Canvas, rooms: list[Rect], doors) -> float:
    """Rasterise every room outline as a wall band and cut the doors; return the band thickness in metres."""
    size = c.ids.shape[0]
    t = max(1, int(round(size * rng.uniform(*WALL_PX_128) / 128)))
    band = np.zeros_like(c.ids, dtype=bool)

    def line(axis: str, at: float, lo: float, hi: float, value: bool) -> None:
        o = c.ox if axis == "x" else c.oy
        p = int(np.floor(o + at * c.ppm + 0.5)) - t // 2
        p0, p1 = max(p, 0), max(p + t, 0)
        if axis == "x":
            a, b = c.span(lo, hi, c.oy)
            band[a:b, p0:p1] = value
        else:
            a, b = c.span(lo, hi, c.ox)
            band[p0:p1, a:b] = value

    half = (t / 2) / c.ppm  # extend each segment by half a band so corners close
    for r in rooms:
        line("y", r[1], r[0] - half, r[2] + half, True)
        line("y", r[3], r[0] - half, r[2] + half, True)
        line("x", r[0], r[1] - half, r[3] + half, True)
        line("x", r[2], r[1] - half, r[3] + half, True)
    for axis, at, lo, hi in doors:
        line(axis, at, lo, hi, False)
    # Some real renders draw walls as outlines of the wall polygons: hollow the band where it is thick enough.
    e = max(1, int(round(size / 128)))
    if rng.random() < P_HOLLOW and t >= 2 * e + 1:
        band &= ~_erode(band, e)
    c.ids[band] = WALL
    return t / c.ppm


def _furnish(rng: np.random.Generator, c: _Canvas, rooms: list[Rect], doors, wall_m: float, scene: bool) -> None:
    # Keep doorways clear: a 0.6 m deep keep-out on both sides of every door gap.
    keep_out = []
    for axis, at, lo, hi in doors:
        d = 0.6 if hi - lo < 1.3 else 0.25  # open-plan openings keep only a strip clear
        keep_out.append((at - d, lo, at + d, hi) if axis == "x" else (lo, at - d, hi, at + d))
    inset = wall_m / 2 + 1.0 / c.ppm + 0.03  # furniture stops a pixel short of the wall band
    inner = [(r[0] + inset, r[1] + inset, r[2] - inset, r[3] - inset) for r in rooms]
    if not scene:
        kind = rng.choice(["bedroom", "living", "dining", "study", "kitchen"], p=[0.42, 0.26, 0.14, 0.1, 0.08])
        c.placed = keep_out
        _furnish_room(rng, c, inner[0], str(kind))
        return
    order = sorted(range(len(rooms)), key=lambda i: -(rooms[i][2] - rooms[i][0]) * (rooms[i][3] - rooms[i][1]))
    has_kitchen = False
    for rank, i in enumerate(order):
        r = rooms[i]
        w, h = r[2] - r[0], r[3] - r[1]
        if min(w, h) < 2.3 or w * h < 6.0:
            kind = "bathroom"
        elif rank == 0:
            kind = "living+dining" if w * h > 18 else "living"
        else:
            kind = str(rng.choice(["bedroom", "kitchen", "study", "dining", "empty"], p=[0.5, 0.14, 0.14, 0.16, 0.06]))
            if kind == "kitchen" and has_kitchen:
                kind = "bedroom"
            has_kitchen |= kind == "kitchen"
        # Rooms' interiors are disjoint, so overlap tests only need this room's door keep-outs.
        c.placed = [k for k in keep_out if _overlaps(k, inner[i])]
        _furnish_room(rng, c, inner[i], kind)


def _furnish_room(rng: np.random.Generator, c: _Canvas, room: Rect, kind: str) -> None:
    if kind == "bedroom":
        _bedroom(rng, room, c)
    elif kind in ("living", "living+dining"):
        _living(rng, room, c, with_dining=kind == "living+dining")
    elif kind == "dining":
        _dining(rng, room, c)
    elif kind == "study":
        _study(rng, room, c)
    elif kind == "kitchen":
        _kitchen(rng, room, c)
    elif kind == "bathroom":
        _bathroom(rng, room, c)
    elif kind != "empty":
        raise ValueError(f"invalid room kind: {kind!r}")


def draw_layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, bool]:
    """One layout -> ((size, size) uint8 class ids, 'room' | 'scene', is_empty)."""
    scene = rng.random() < P_SCENE
    empty = rng.random() < P_EMPTY
    if scene:
        rooms = _plan_scene(rng)
        fill = rng.uniform(0.72, 0.97) if not empty else rng.uniform(0.8, 1.4)  # empty real tiles are often crops
    else:
        w, h = rng.uniform(2.8, 6.5), rng.uniform(2.8, 6.5)
        rooms = [(0.0, 0.0, w, h)]
        fill = rng.uniform(0.4, 0.95)
    x1, y1 = max(r[2] for r in rooms), max(r[3] for r in rooms)
    ppm = fill * size / max(x1, y1)
    # Centre the plan, then jitter it by up to 8% of the tile (crops when the plan is large).
    ox = (size - x1 * ppm) / 2 + rng.uniform(-0.08, 0.08) * size
    oy = (size - y1 * ppm) / 2 + rng.uniform(-0.08, 0.08) * size
    c = _Canvas(np.full((size, size), BACKGROUND, dtype=np.uint8), ppm, ox, oy)
    doors = _doors(rng, rooms)
    wall_m = _draw_walls(rng, c, rooms, doors)
    if empty and rng.random() < P_GREY_FLOOR:
        # A few real walls-only renders show whole floor areas in the wall colour: fill some rooms solid.
        for r in rooms:
            if rng.random() < 0.7:
                c.rect(WALL, r)
    if not empty:
        _furnish(rng, c, rooms, doors, wall_m, scene)
    return c.ids, ("scene" if scene else "room"), empty


def make_layouts(out_dir: str | Path, n: int, size: int, seed: int) -> Path:
    """Write n layouts as `out_dir/images/layout_00001.png`, ... and `out_dir/manifest.csv`; return the manifest path."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"make-layouts: n must be an integer >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise InputError(f"make-layouts: size must be an integer >= 32 pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"make-layouts: seed must be an integer >= 0, got {seed!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(1, n + 1):
        # One generator per layout, keyed by (seed, index): layout i is the same whatever n is.
        rng = np.random.default_rng([int(seed), i])
        ids, kind, empty = draw_layout(rng, int(size))
        rel = f"images/layout_{i:05d}.png"
        Image.fromarray(PALETTE[ids]).save(out / rel, compress_level=6)
        rows.append((rel, kind, "true" if empty else "false"))
    with atomic_path(out / "manifest.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["layout_path", "type", "is_empty"])
        w.writerows(rows)
    return out / "manifest.csv"
