"""The side-by-side comparison: one validation sample at one epoch, a row per experiment (same seed).

Each row shows the experiment's reconstruction, |error| and segmentation (predicted by the seg head, or the
reconstruction snapped to the palette) under the shared input and true classes. One epoch slider drives every
row. "Worst samples" orders the saved validation samples by how much the experiments differ in their per-image
MSE at that epoch (max - min over the experiments), so the images where the losses matter come first.

Two views of the same data: a static HTML + JS block for the report (no kernel) and an ipywidgets one.
"""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

from imginav_lib.report.images import PANELS, Blobs, element_id, script_json

if TYPE_CHECKING:
    from imginav_lib.analysis import Analysis

BUDGET = 1200  # images embedded in the static view; beyond it epochs are thinned
ROW_PANELS = (("recon", "reconstruction"), ("error", "|error|"), ("seg", "segmentation"))


def image_mse(arrays: dict) -> np.ndarray:
    """Per-image val MSE of an npz's samples, in the training's [-1, 1] scale: saved as `mse` by the trainer,
    else (older runs) from the uint8 input and reconstruction (quantised to 1/127.5)."""
    if "mse" in arrays:
        return np.asarray(arrays["mse"], dtype=float)
    d = (arrays["recon"].astype(np.float64) - arrays["input"].astype(np.float64)) / 127.5
    return (d**2).mean(axis=(1, 2, 3))


def pick_seed(samples, experiments: list[str]) -> int | None:
    """The seed with samples for the most experiments (the smallest such seed)."""
    if samples is None or not len(samples):
        return None
    have = samples.groupby("seed")["experiment"].nunique()
    return int(sorted(have.index, key=lambda s: (-have[s], s))[0])


def _at_epoch(epochs: list[int], e: int) -> int | None:
    """The epoch shown for an experiment at slider epoch e: e, or its last saved epoch before e (early stopping)."""
    before = [x for x in epochs if x <= e]
    return before[-1] if before else None


def _load(npz: str) -> dict:
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}


def comparison_data(samples, experiments: list[str], heads: dict, budget: int = BUDGET) -> dict:
    """Blobs (data URIs, deduplicated) and per epoch and sample: the shared input/mask and one row per experiment."""
    seed = pick_seed(samples, experiments)
    if seed is None:
        return {"experiments": [], "epochs": [], "frames": {}, "blobs": [], "seed": None, "note": ""}
    s = samples[samples.seed == seed]
    exps = [x for x in experiments if (s.experiment == x).any()]
    saved = {x: sorted(s.loc[s.experiment == x, "epoch"].tolist()) for x in exps}
    epochs = sorted(set().union(*saved.values()))
    with np.load(s.iloc[0]["npz"]) as z:
        n = len(z["index"])
    per_epoch = n * (2 + len(ROW_PANELS) * len(exps))
    if len(epochs) * per_epoch > budget:
        k = max(2, budget // per_epoch)
        epochs = [epochs[i] for i in np.unique(np.round(np.linspace(0, len(epochs) - 1, k)).astype(int))]
    blobs, cache = Blobs(), {}
    blob = blobs.add

    def arrays_of(x: str, e: int) -> dict:
        if (x, e) not in cache:
            cache[(x, e)] = _load(s.loc[(s.experiment == x) & (s.epoch == e), "npz"].iloc[0])
        return cache[(x, e)]

    frames = {}
    for e in epochs:
        rows = {x: (_at_epoch(saved[x], e)) for x in exps}
        loaded = {x: arrays_of(x, ep) for x, ep in rows.items() if ep is not None}
        shared = next(iter(loaded.values()))
        mse = {x: image_mse(a) for x, a in loaded.items()}
        frame = []
        for i in range(n):
            per = [None if rows[x] is None else {
                "epoch": rows[x], "mse": float(mse[x][i]), **{k: blob(k, loaded[x], i) for k, _ in ROW_PANELS}}
                for x in exps]  # fmt: skip
            vals = [r["mse"] for r in per if r]
            frame.append({"index": int(shared["index"][i]), "input": blob("input", shared, i), "mask": blob("mask", shared, i),
                          "spread": (max(vals) - min(vals)) if len(vals) > 1 else 0.0, "rows": per})  # fmt: skip
        frames[str(e)] = frame
    labels = {x: "predicted segmentation" if "seg" in heads.get(x, ()) else "reconstruction snapped to palette" for x in exps}
    note = f"seed {seed}; " + (f"{len(epochs)} of {len(set().union(*saved.values()))} saved epochs shown" if
                               len(epochs) < len(set().union(*saved.values())) else "every saved epoch")  # fmt: skip
    return {"experiments": exps, "seed": seed, "epochs": epochs, "frames": frames, "seg_labels": labels, "blobs": blobs.uris, "note": note}


_JS = """
(function () {
  var root = document.getElementById(ID);
  var D = JSON.parse(document.getElementById(ID + "-data").textContent);
  function q(r) { return root.querySelector('[data-role="' + r + '"]'); }
  var ep = q("epoch"), order = q("order"), sm = q("sample");
  ep.max = D.epochs.length - 1; ep.value = D.epochs.length - 1;
  function frame() { return D.frames[String(D.epochs[+ep.value])]; }
  function fillSamples() {
    var f = frame(), keep = +(sm.value || 0), idx = f.map(function (_, i) { return i; });
    if (order.value === "worst") idx.sort(function (a, b) { return f[b].spread - f[a].spread; });
    sm.innerHTML = "";
    idx.forEach(function (i) {
      var label = "validation image " + f[i].index + (order.value === "worst" ? " (MSE spread " + f[i].spread.toExponential(2) + ")" : "");
      sm.add(new Option(label, i));
    });
    sm.value = order.value === "worst" ? idx[0] : Math.min(keep, f.length - 1);
    draw();
  }
  function draw() {
    var e = D.epochs[+ep.value], s = frame()[+sm.value];
    q("epoch-label").textContent = "epoch " + e;
    q("img-input").src = D.blobs[s.input]; q("img-mask").src = D.blobs[s.mask];
    D.experiments.forEach(function (x, r) {
      var row = s.rows[r], box = root.querySelector('[data-row="' + r + '"]');
      ["recon", "error", "seg"].forEach(function (k) {
        var img = box.querySelector('[data-role="img-' + k + '"]');
        if (row) { img.src = D.blobs[row[k]]; img.style.visibility = "visible"; } else { img.removeAttribute("src"); img.style.visibility = "hidden"; }
      });
      box.querySelector('[data-role="row-label"]').textContent = row ?
        "epoch " + row.epoch + ", MSE " + row.mse.toExponential(3) : "no samples at or before this epoch";
    });
  }
  ep.addEventListener("input", fillSamples);
  order.addEventListener("change", fillSamples);
  sm.addEventListener("change", draw);
  fillSamples();
})();
"""


def comparison_html(a: Analysis, budget: int = BUDGET) -> str:
    """Self-contained HTML + JS side-by-side view (no kernel)."""
    d = comparison_data(a.runs.samples, a.runs.experiments, a.runs.heads, budget)
    if not d["experiments"]:
        return "<p>No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to compare.</p>"
    e = html.escape
    uid = element_id("imginav-compare", str(a.runs.runs_dir))
    payload = script_json(d)
    fig = lambda role, cap: f'<figure><img data-role="{role}" alt="{e(cap)}"><figcaption>{e(cap)}</figcaption></figure>'  # noqa: E731
    rows = "".join(
        f'<div class="row" data-row="{r}"><div class="row-name"><b>{e(x)}</b><br><span class="muted" data-role="row-label"></span></div>'
        + "".join(fig(f"img-{k}", d["seg_labels"][x] if k == "seg" else cap) for k, cap in ROW_PANELS) + "</div>"
        for r, x in enumerate(d["experiments"]))  # fmt: skip
    return (f'<div class="imginav-compare" id="{uid}">'
            f'<label><input type="range" data-role="epoch" min="0" max="0" step="1" value="0"> <span data-role="epoch-label"></span></label> '
            f'<label>order <select data-role="order"><option value="position">by position</option>'
            f'<option value="worst">worst samples: experiments differ most in MSE</option></select></label> '
            f'<label><select data-role="sample"></select></label>'
            f'<div class="row"><div class="row-name"><b>shared</b><br><span class="muted">{e(d["note"])}</span></div>'
            f'{fig("img-input", "input")}{fig("img-mask", "true classes")}</div>{rows}</div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{_JS.replace('ID', json.dumps(uid))}</script>")  # fmt: skip


def comparison_widget(a: Analysis):
    """The same view with ipywidgets for a live kernel: every saved epoch, read on demand."""
    import ipywidgets as W

    samples, exps_all = a.runs.samples, a.runs.experiments
    seed = pick_seed(samples, exps_all)
    if seed is None:
        return W.HTML("No samples saved.")
    s = samples[samples.seed == seed]
    exps = [x for x in exps_all if (s.experiment == x).any()]
    saved = {x: sorted(s.loc[s.experiment == x, "epoch"].tolist()) for x in exps}
    epochs = sorted(set().union(*saved.values()))
    epoch = W.SelectionSlider(options=epochs, value=epochs[-1], description="epoch")
    order = W.Dropdown(options=[("by position", "position"), ("worst samples", "worst")], description="order")
    sample = W.Dropdown(description="sample")
    img = lambda: W.Image(format="png", width=160, height=160)  # noqa: E731
    shared = {"input": img(), "mask": img()}
    rows = {x: ({k: img() for k, _ in ROW_PANELS}, W.Label()) for x in exps}
    busy = [False]

    def loaded():
        out = {}
        for x in exps:
            ep = _at_epoch(saved[x], epoch.value)
            if ep is not None:
                out[x] = (ep, _load(s.loc[(s.experiment == x) & (s.epoch == ep), "npz"].iloc[0]))
        return out

    def fill(_=None):
        data = loaded()
        mse = np.stack([image_mse(arr) for _, arr in data.values()])  # (experiments, N)
        spread = mse.max(0) - mse.min(0)
        idx = list(np.argsort(-spread, kind="stable")) if order.value == "worst" else list(range(mse.shape[1]))
        busy[0] = True
        sample.options = [(f"sample {i + 1}" + (f" (MSE spread {spread[i]:.2e})" if order.value == "worst" else ""), int(i)) for i in idx]
        sample.value = int(idx[0])
        busy[0] = False
        draw(data=data)

    def draw(_=None, data=None):
        if busy[0]:
            return
        data = data or loaded()
        i = sample.value
        first = next(iter(data.values()))[1]
        for k in shared:
            shared[k].value = PANELS[k](first, i)
        for x, (imgs, label) in rows.items():
            if x not in data:
                label.value = f"{x}: no samples at or before epoch {epoch.value}"
                continue
            ep, arr = data[x]
            for k, w in imgs.items():
                b = PANELS[k](arr, i)
                w.format, w.value = ("webp" if b[8:12] == b"WEBP" else "png"), b
            label.value = f"{x}: epoch {ep}, MSE {image_mse(arr)[i]:.3e}"

    fill()
    epoch.observe(fill, "value")
    order.observe(fill, "value")
    sample.observe(draw, "value")
    head = W.HBox([W.VBox([shared["input"], W.Label("input")]), W.VBox([shared["mask"], W.Label("true classes")]),
                   W.Label(f"seed {seed}")])  # fmt: skip
    body = [W.VBox([label, W.HBox([W.VBox([imgs[k], W.Label(cap)]) for k, cap in ROW_PANELS])]) for imgs, label in rows.values()]
    return W.VBox([W.HBox([epoch, order, sample]), head, *body])
