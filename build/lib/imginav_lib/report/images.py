"""The report's images, for both browsers (browser.py, sidebyside.py): each panel of a saved sample encoded once
(palette PNG for flat colours, WebP for the photo-like reconstruction), de-duplicated by its pixels, embedded as
data URIs, and JSON that is safe inside a `<script>` element."""
from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np

from imginav_lib.palette import class_lut


def _error_lut() -> np.ndarray:
    """0..255 -> a dark-to-bright heat palette (black, red, yellow, white), flattened for PIL."""
    x = np.linspace(0, 1, 256)
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], 1)
    return (rgb * 255).astype(np.uint8).ravel()


def _encode(im, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_p(indices: np.ndarray, palette: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(palette.tolist())
    return _encode(im, "PNG")


def _webp(rgb: np.ndarray) -> bytes:
    from PIL import Image

    return _encode(Image.fromarray(rgb), "WEBP", quality=85, method=4)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    return _encode(Image.fromarray(rgb), "PNG")


_ERROR_LUT = _error_lut()
_CLASS_LUT = class_lut().ravel()  # IGNORE_INDEX shows black


def _seg_key(arrays: dict) -> str:
    """The segmentation panel: the seg head's prediction where it is trained, else the snapped reconstruction."""
    return "seg_pred" if "seg_pred" in arrays else "recon_classes"


# How each panel of a sample is encoded: npz arrays -> bytes. Layouts are flat colours (PNG); recon is photo-like (WebP).
PANELS = {
    "input": lambda a, i: _png(a["input"][i].transpose(1, 2, 0)),
    "recon": lambda a, i: _webp(a["recon"][i].transpose(1, 2, 0)),
    "error": lambda a, i: _png_p(a["error"][i], _ERROR_LUT),
    "seg": lambda a, i: _png_p(a[_seg_key(a)][i], _CLASS_LUT),
    "mask": lambda a, i: _png_p(a["mask"][i], _CLASS_LUT),
}


def panels(arrays: dict, i: int) -> dict[str, bytes]:
    """Encoded images of sample i of an npz: input/mask/seg as palette PNG, recon as WebP, |error| as heat PNG."""
    return {k: enc(arrays, i) for k, enc in PANELS.items()}


def data_uri(b: bytes) -> str:
    mime = "image/webp" if b[8:12] == b"WEBP" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(b).decode()


class Blobs:
    """The images of a static browser as data URIs, each encoded once: the same input and true mask recur in every
    run and epoch, so a panel is keyed by its raw pixels. `uris` is the list the page's JSON carries."""

    def __init__(self):
        self.uris: list[str] = []
        self._ids: dict[tuple, int] = {}

    def add(self, kind: str, arrays: dict, i: int) -> int:
        """The id (index into `uris`) of panel `kind` of sample i."""
        src = arrays[_seg_key(arrays) if kind == "seg" else kind][i]
        key = (kind, hashlib.blake2b(src.tobytes(), digest_size=12).digest())
        if key not in self._ids:
            self._ids[key] = len(self.uris)
            self.uris.append(data_uri(PANELS[kind](arrays, i)))
        return self._ids[key]


def script_json(data) -> str:
    """JSON to place inside `<script type="application/json">`: no `<`, `>` or `&` that could end the element."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def element_id(prefix: str, key: str) -> str:
    """A stable HTML id for one browser of one phase folder (two browsers on a page do not collide)."""
    return f"{prefix}-" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
