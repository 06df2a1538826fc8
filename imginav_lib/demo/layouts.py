"""Procedural top-down floor-plan layouts in the 3D-FRONT palette, for training without the real renders.

A layout is planned in metres (rooms from a binary space partition, doors, and furniture groups per room kind from furniture.py) and
rasterised straight into a (size, size) array of class ids, so every pixel is an exact palette colour at any
size. Wall thickness is a fixed fraction of the tile, like the real renders; furniture scales with the plan.
The look and the per-class pixel fractions were tuned against ../shared/real_layouts (tests/test_layouts.py).

Like the researchers' manifest, every layout has a `scene_id` and a `room_id`: a multi-room scene is followed by
some of its rooms cut from the scene's image (the same walls and furniture, cropped and rescaled to the tile), so
a split that is not grouped by scene would validate on rooms whose scene it trained on. A single-room plan is a
scene of one room. `meta_path` is empty (the researchers' points at a JSON of the source scene).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from imginav_lib.palette import PALETTE
from imginav_lib.errors import InputError
from imginav_lib.files import atomic_path, atomic_write, check_output_dir
from imginav_lib.demo.furniture import BACKGROUND, WALL, Rect, Canvas, furnish

P_SCENE = 0.55  # share of multi-room scenes; the rest are single rooms
P_EMPTY = 0.30  # share of walls-only layouts (the real set has 25 of 79)
WALL_PX_128 = (2.9, 4.7)  # wall band thickness range in pixels of a 128-px tile (2-4 px in the real set)
P_HOLLOW = 0.25  # share of layouts whose walls are drawn as double lines (outlined bands), as some renders do
P_GREY_FLOOR = 0.1  # share of walls-only layouts with wall-coloured floors (3 of the 25 real empty tiles)
DOOR_M = (0.8, 1.0)  # door gap width range in metres


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


def _draw_walls(rng: np.random.Generator, c: Canvas, rooms: list[Rect], doors) -> float:
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


def draw_layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, bool]:
    """One layout -> ((size, size) uint8 class ids, 'room' | 'scene', is_empty)."""
    c, _, kind, empty = _draw_plan(rng, size)
    return c.ids, kind, empty


ROOMS_CUT = (1, 3)  # rooms cut from each multi-room scene: from 1 to 2 (at most the scene's rooms that fit the tile)
MIN_ROOM_M = 2.0  # a cut room has both sides at least this long


def cut_rooms(rng: np.random.Generator, c: Canvas, rooms: list[Rect], size: int) -> list[tuple[int, np.ndarray]]:
    """Some rooms of a rendered scene as tiles of their own: (room number, (size, size) class ids).

    The room's square box (its walls included, a wall band of margin) is cut from the scene's class ids and
    rescaled (nearest) to the tile, so every pixel stays an exact palette colour. Rooms mostly outside the tile
    (a cropped scene) are not cut."""
    fits = []
    for k, r in enumerate(rooms):
        if min(r[2] - r[0], r[3] - r[1]) < MIN_ROOM_M:
            continue
        x0, y0, x1, y1 = c.ox + r[0] * c.ppm, c.oy + r[1] * c.ppm, c.ox + r[2] * c.ppm, c.oy + r[3] * c.ppm
        inside = (min(x1, size) - max(x0, 0)) * (min(y1, size) - max(y0, 0)) / ((x1 - x0) * (y1 - y0))
        if min(x1, size) > max(x0, 0) and min(y1, size) > max(y0, 0) and inside >= 0.8:
            fits.append((k, x0, y0, x1, y1))
    if not fits:
        return []
    picked = rng.choice(len(fits), size=min(len(fits), int(rng.integers(*ROOMS_CUT))), replace=False)
    out = []
    for j in sorted(picked):
        k, x0, y0, x1, y1 = fits[j]
        margin = max(2.0, 0.04 * max(x1 - x0, y1 - y0))  # pixels: the wall band and a little outside
        side = max(x1 - x0, y1 - y0) + 2 * margin
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # Tile pixel i samples the scene pixel at the centre of its share of the box; outside the scene: background.
        pos = (np.arange(size) + 0.5) / size * side - side / 2
        xs, ys = np.floor(cx + pos).astype(int), np.floor(cy + pos).astype(int)
        padded = np.pad(c.ids, 1, constant_values=BACKGROUND)
        xs, ys = np.clip(xs + 1, 0, size + 1), np.clip(ys + 1, 0, size + 1)
        out.append((k, padded[ys[:, None], xs[None, :]]))
    return out


def _draw_plan(rng: np.random.Generator, size: int) -> tuple[Canvas, list[Rect], str, bool]:
    """One plan rendered: (its canvas, its rooms in metres, 'room' | 'scene', is_empty)."""
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
    c = Canvas(np.full((size, size), BACKGROUND, dtype=np.uint8), ppm, ox, oy)
    doors = _doors(rng, rooms)
    wall_m = _draw_walls(rng, c, rooms, doors)
    if empty and rng.random() < P_GREY_FLOOR:
        # A few real walls-only renders show whole floor areas in the wall colour: fill some rooms solid.
        for r in rooms:
            if rng.random() < 0.7:
                c.rect(WALL, r)
    if not empty:
        furnish(rng, c, rooms, doors, wall_m, scene)
    return c, rooms, ("scene" if scene else "room"), empty


def make_layouts(out_dir: str | Path, n: int, size: int, seed: int, force: bool = False) -> Path:
    """Write n layouts as `out_dir/images/layout_00001.png`, ... and `out_dir/manifest.csv` (scene_id, room_id,
    type, meta_path, layout_path, is_empty); return the manifest path.

    A folder that holds anything is refused (a user's manifest.csv and images would be overwritten) unless
    `force`: then files of the same names are replaced and other files stay."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"make-layouts: n must be an integer >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise InputError(f"make-layouts: size must be an integer >= 32 pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"make-layouts: seed must be an integer >= 0, got {seed!r}")
    out = Path(out_dir)
    check_output_dir(out / "images", "make-layouts")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise InputError(f"make-layouts: {out} is not empty (it holds {shown}): choose an empty or new folder, or pass "
                         "--force to write into it (manifest.csv and images/layout_*.png are then replaced)")  # fmt: skip
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    plan = 0
    while len(rows) < n:
        plan += 1
        # One generator per plan, keyed by (seed, plan): the first n layouts are the same whatever n is.
        rng = np.random.default_rng([int(seed), plan])
        c, rooms, kind, empty = _draw_plan(rng, int(size))
        scene_id = f"scene_{plan:05d}"
        tiles = [(f"{scene_id}_room0" if kind == "room" else "", kind, c.ids, empty)]
        if kind == "scene":
            cut = cut_rooms(np.random.default_rng([int(seed), plan, 1]), c, rooms, int(size))
            tiles += [(f"{scene_id}_room{k}", "room", ids, not bool((ids < WALL).any())) for k, ids in cut]
        for room_id, t, ids, is_empty in tiles[: n - len(rows)]:
            rel = f"images/layout_{len(rows) + 1:05d}.png"
            img = Image.fromarray(PALETTE[ids])
            atomic_write(out / rel, lambda f: img.save(f, format="PNG", compress_level=6))
            rows.append((scene_id, room_id, t, "", rel, "true" if is_empty else "false"))
    with atomic_path(out / "manifest.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["scene_id", "room_id", "type", "meta_path", "layout_path", "is_empty"])
        w.writerows(rows)
    return out / "manifest.csv"
