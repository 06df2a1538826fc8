"""The report's images, for both browsers (browser.py, sidebyside.py): each panel of a saved sample encoded once
(palette PNG for flat colours, WebP for the photo-like reconstruction and the |error| heat map), de-duplicated by its pixels, embedded as
data URIs, and JSON that is safe inside a `<script>` element."""
from __future__ import annotations

import base64
import hashlib
import html
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


# How each panel of a sample is encoded: npz arrays -> bytes. Layouts are flat colours (PNG, exact pixels); recon and
# the heat map are photo-like (WebP).
PANELS = {
    "input": lambda a, i: _png(a["input"][i].transpose(1, 2, 0)),
    "recon": lambda a, i: _webp(a["recon"][i].transpose(1, 2, 0)),
    "error": lambda a, i: _webp(_ERROR_LUT.reshape(256, 3)[a["error"][i]]),  # a heat map: lossy, 1/20 of the PNG at 512 px
    "seg": lambda a, i: _png_p(a[_seg_key(a)][i], _CLASS_LUT),
    "mask": lambda a, i: _png_p(a["mask"][i], _CLASS_LUT),
}


def panels(arrays: dict, i: int) -> dict[str, bytes]:
    """Encoded images of sample i of an npz: input/mask/seg as palette PNG, recon and the |error| heat map as WebP."""
    return {k: enc(arrays, i) for k, enc in PANELS.items()}


def image_mse(arrays: dict) -> np.ndarray:
    """Per-image val MSE of an npz's samples, in the training's [-1, 1] scale: saved as `mse` by the trainer,
    else (older runs) from the uint8 input and reconstruction (quantised to 1/127.5)."""
    if "mse" in arrays:
        return np.asarray(arrays["mse"], dtype=float)
    d = (arrays["recon"].astype(np.float64) - arrays["input"].astype(np.float64)) / 127.5
    return (d**2).mean(axis=(1, 2, 3))


def data_uri(b: bytes) -> str:
    mime = "image/webp" if b[8:12] == b"WEBP" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(b).decode()


class Blobs:
    """The images of a static browser as data URIs, each encoded once: the same input and true mask recur in every
    run and epoch, so a panel is keyed by its raw pixels. `uris` is the list the page's JSON carries."""

    def __init__(self):
        self.uris: list[str] = []
        self.bytes = 0  # characters of the data URIs so far: what they add to the page
        self._ids: dict[tuple, int] = {}

    def add(self, kind: str, arrays: dict, i: int) -> int:
        """The id (index into `uris`) of panel `kind` of sample i."""
        src = arrays[_seg_key(arrays) if kind == "seg" else kind][i]
        key = (kind, hashlib.blake2b(src.tobytes(), digest_size=12).digest())
        if key not in self._ids:
            self._ids[key] = len(self.uris)
            self.uris.append(data_uri(PANELS[kind](arrays, i)))
            self.bytes += len(self.uris[-1])
        return self._ids[key]


def priority(epochs: list[int]) -> list[int]:
    """The saved epochs in the order a size-limited view adds them: the last, the first, then the middle of the
    widest gap left, so that any prefix covers the run evenly."""
    if not epochs:
        return []
    order, gaps = [len(epochs) - 1] + ([0] if len(epochs) > 1 else []), [(0, len(epochs) - 1)]
    while gaps:
        a, b = gaps.pop(0)
        if b - a > 1:
            m = (a + b) // 2
            order.append(m)
            gaps += [(a, m), (m, b)]
    return [epochs[i] for i in order]


def fill(orders: dict, add, blobs: Blobs, budget: int) -> dict:
    """Add (key, epoch) in rounds, each key's next epoch in its priority order, until the images reach `budget`
    characters (the first round always: every run shows its last epoch). Returns key -> the epochs added."""
    chosen = {k: [] for k in orders}
    for r in range(max((len(o) for o in orders.values()), default=0)):
        for k, o in orders.items():
            if r < len(o):
                if r and blobs.bytes >= budget:
                    return chosen
                add(k, o[r])
                chosen[k].append(o[r])
    return chosen


def script_json(data) -> str:
    """JSON to place inside `<script type="application/json">`: no `<`, `>` or `&` that could end the element."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def element_id(prefix: str, key: str) -> str:
    """A stable HTML id for one browser of one phase folder (two browsers on a page do not collide)."""
    return f"{prefix}-" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# One vocabulary for both views (static report and live widget): captions, numbering from 1, the legend.

CAPTIONS = {"input": "input", "recon": "reconstruction", "error": "|error|", "mask": "true classes"}
SEG_CAPTIONS = {True: "predicted segmentation", False: "reconstruction snapped to palette"}


def caption(kind: str, has_seg_head: bool = False) -> str:
    """The caption of a panel: CAPTIONS, or the segmentation panel's for an experiment with or without a seg head."""
    return SEG_CAPTIONS[has_seg_head] if kind == "seg" else CAPTIONS[kind]


# Templates, filled here for the widget and by the static view's JS (browser.py: js_captions) alike.
SAMPLE_CAPTION = "sample {i} of {n} (layout {index})"  # numbered from 1; the layout: its row in the phase's layouts
EPOCH_CAPTION = "epoch {epoch}"
MSE_CAPTION = "MSE {mse}"


def sample_caption(i: int, n: int, index: int) -> str:
    """Sample i (0-based position among the saved ones) of n, with its layout's 0-based index: "sample 2 of 6 (layout 19)"."""
    return SAMPLE_CAPTION.format(i=i + 1, n=n, index=int(index) + 1)


def mse_caption(mse: float) -> str:
    return MSE_CAPTION.format(mse=f"{mse:.3e}")


def epoch_caption(epoch: int) -> str:
    return EPOCH_CAPTION.format(epoch=epoch)


def legend_html() -> str:
    """The key beside every grid: the 10 class colours (black: a pixel too far from every palette colour) and the
    |error| heat scale (the mean over R, G and B of |reconstruction - input|, in 8-bit levels)."""
    from imginav_lib.palette import CLASSES

    swatch = '<span class="imginav-sw" style="background:rgb({},{},{})"></span>'
    classes = "".join(f'<span class="imginav-key">{swatch.format(*rgb)}{html.escape(name)}</span>' for name, rgb in CLASSES)
    classes += f'<span class="imginav-key">{swatch.format(0, 0, 0)}not a palette colour</span>'
    scale = ('<span class="imginav-key">|error| <span>0</span><span class="imginav-bar"></span><span>255</span> '
             '(mean over R, G, B of |reconstruction &minus; input|, 8-bit levels)</span>')
    return f'<div class="imginav-legend" data-role="legend"><div>classes: {classes}</div><div>{scale}</div></div>'


# The views' styles, emitted with each view (a page that shows only one of them still has them). Panels are drawn
# pixelated when enlarged (a 64 px phase) and smoothly when shrunk (a 512 px phase in a 192 px grid); clicking one
# shows it at its native size (zoom 1x, 2x, 4x), pixelated.
VIEW_CSS = """
.imginav-view figure {margin: 0; text-align: center; font-size: 0.85em}
.imginav-view img.panel {width: 192px; height: 192px; border: 1px solid #ccc; cursor: zoom-in}
.imginav-view img.panel.up {image-rendering: pixelated}
.imginav-view label {margin-right: 1em}
.imginav-view .panels {display: flex; flex-wrap: wrap; gap: 8px; margin-top: 6px}
.imginav-view .row {display: flex; gap: 8px; align-items: flex-start; margin-top: 6px}
.imginav-view .row-name {width: 220px; font-size: 0.9em; overflow-wrap: anywhere}
.imginav-legend {font-size: 0.8em; margin: 6px 0; color: #333}
.imginav-key {display: inline-flex; align-items: center; gap: 3px; margin-right: 10px; white-space: nowrap}
.imginav-sw {display: inline-block; width: 12px; height: 12px; border: 1px solid #999}
.imginav-bar {display: inline-block; width: 160px; height: 12px; border: 1px solid #999;
  background: linear-gradient(to right, #000 0%, #f00 33.3%, #ff0 66.7%, #fff 100%)}
.imginav-zoom {position: fixed; inset: 0; background: rgba(0,0,0,0.82); z-index: 1000; overflow: auto; padding: 12px; color: #eee}
.imginav-zoom[hidden] {display: none}
.imginav-zoom img {image-rendering: pixelated; display: block; margin-top: 8px}
.imginav-zoom button {margin-right: 4px}
"""

# Both static views' JS helpers. imginavZoom: click any panel (img.panel) inside `root` and an overlay shows it at
# its native size, pixelated, with 1x/2x/4x. imginavSci: a number as Python's f"{x:.3e}" writes it.
VIEW_JS = """
function imginavSci(x) {
  var t = x.toExponential(3).split("e"), p = +t[1];
  return t[0] + "e" + (p < 0 ? "-" : "+") + String(Math.abs(p)).padStart(2, "0");
}
function imginavZoom(root) {
  var box = document.createElement("div"), img = new Image(), cap = document.createElement("span"), k = 1;
  box.className = "imginav-zoom"; box.hidden = true; box.setAttribute("data-role", "zoom");
  [1, 2, 4].forEach(function (f) {
    var b = document.createElement("button"); b.textContent = f + "\\u00d7"; b.setAttribute("data-zoom", f);
    b.onclick = function (ev) { ev.stopPropagation(); k = f; size(); }; box.appendChild(b);
  });
  var close = document.createElement("button"); close.textContent = "close"; close.setAttribute("data-zoom", "close");
  box.appendChild(close); box.appendChild(cap); box.appendChild(img); root.appendChild(box);
  img.setAttribute("data-role", "zoom-img");
  function size() { img.style.width = img.naturalWidth * k + "px"; img.style.height = img.naturalHeight * k + "px";
    cap.textContent = " " + box.dataset.caption + " \\u2014 native " + img.naturalWidth + "\\u00d7" + img.naturalHeight + " px, shown " + k + "\\u00d7"; }
  img.onload = size;
  box.onclick = function () { box.hidden = true; };
  root.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!t.classList || !t.classList.contains("panel") || !t.src) return;
    var fig = t.closest("figure"), row = t.closest("[data-row]");
    box.dataset.caption = (row ? row.querySelector("b").textContent + ": " : "") + (fig ? fig.querySelector("figcaption").textContent : "");
    k = 1; box.hidden = false;
    if (img.src === t.src && img.complete) size(); else img.src = t.src;
  });
  // enlarged panels are drawn pixelated, shrunk ones smoothly
  root.querySelectorAll("img.panel").forEach(function (p) {
    p.addEventListener("load", function () { p.classList.toggle("up", p.naturalWidth < p.clientWidth); });
  });
}
"""
