"""Furniture for the generated layouts: a class-id canvas in metres and the furniture groups of each room kind.

layouts.py plans the rooms, doors and walls; this module places beds, sofas, tables and the rest inside them,
keeping door gaps clear and never overlapping two pieces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Class ids, in the order of data.CLASSES.
BED, CABINET, CHAIR, LIGHTING, OTHERS, STOOL, SOFA, TABLE, WALL, BACKGROUND = range(10)

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) in metres, plan coordinates


@dataclass
class Canvas:
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


def _put(c: Canvas, rects: list[tuple[int, str, Rect]]) -> bool:
    """Draw a group of (class, shape, rect) unless any rect overlaps something already placed."""
    if any(_overlaps(r, p) for _, _, r in rects for p in c.placed):
        return False
    for cls, shape, r in rects:
        (c.rect if shape == "r" else c.ellipse)(cls, r)
    c.placed.extend(r for _, _, r in rects)
    return True


def _place(c: Canvas, rng: np.random.Generator, room: Rect, items: list[Item], sides=None, centred=False, tries=16) -> int | None:
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


def _place_free(c: Canvas, rng: np.random.Generator, room: Rect, items: list[Item], tries=16) -> bool:
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


def _small(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
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


def _bedroom(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
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


def _desk(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
    dw, dd = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.7)
    ch = rng.uniform(0.45, 0.55)
    _place(c, rng, room, [(CABINET, "r", 0, 0, dw, dd), (CHAIR, "e" if rng.random() < 0.5 else "r", dw / 2 - ch / 2, dd + 0.1, dw / 2 + ch / 2, dd + 0.1 + ch)])


def _study(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
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


def _dining(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
    if not _place_free(c, rng, room, _dining_group(rng)):
        _place_free(c, rng, room, _small_table(rng))
    if rng.random() < 0.6:  # sideboard
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(1.2, 2.0), rng.uniform(0.4, 0.5))])
    _small(rng, room, c)


def _living(rng: np.random.Generator, room: Rect, c: Canvas, with_dining: bool) -> None:
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


def _kitchen(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
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


def _bathroom(rng: np.random.Generator, room: Rect, c: Canvas) -> None:
    # 3D-FRONT renders few bathroom fixtures: often nothing, sometimes a vanity or a grey fixture.
    if rng.random() < 0.5:
        _place(c, rng, room, [(CABINET, "r", 0, 0, rng.uniform(0.6, 1.0), 0.5)])
    if rng.random() < 0.25:
        _place(c, rng, room, [(OTHERS, "r", 0, 0, 0.4, 0.6)])


# ---------------------------------------------------------------------------------------------------------
# Plans: rooms, walls and doors.


def furnish(rng: np.random.Generator, c: Canvas, rooms: list[Rect], doors, wall_m: float, scene: bool) -> None:
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


def _furnish_room(rng: np.random.Generator, c: Canvas, room: Rect, kind: str) -> None:
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
