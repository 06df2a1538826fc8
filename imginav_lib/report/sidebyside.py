"""The side-by-side comparison: one validation sample at one epoch, a row per experiment (same seed).

Each row shows the experiment's reconstruction, |error| and segmentation (predicted by the seg head, or the
reconstruction snapped to the palette) under the shared input and true classes. A seed selector picks the seed;
one epoch slider drives every row. "Worst samples" orders the saved validation samples by how much the
experiments differ in their per-image MSE at that epoch (max - min over the experiments), so the images where the
losses matter come first.

Two views of the same data with the same words (images.py): a static HTML + JS block for the report (no kernel;
epochs thinned to a budget of bytes) and an ipywidgets one (`imginav browse`; every saved epoch, a refresh).
"""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

from imginav_lib.report import images as I
from imginav_lib.report.images import image_mse

if TYPE_CHECKING:
    from imginav_lib.analysis import Analysis

BUDGET = 6_000_000  # characters of images embedded in the static view; beyond them epochs are thinned
ROW_KINDS = ("recon", "error", "seg")
SPREAD_CAPTION = "MSE spread {spread}"  # the worst-samples order: max - min of the experiments' per-image MSE


def seed_order(samples, experiments: list[str]) -> list[int]:
    """The seeds, those with samples for the most experiments first (then the smallest)."""
    if samples is None or not len(samples):
        return []
    have = samples.groupby("seed")["experiment"].nunique()
    return [int(s) for s in sorted(have.index, key=lambda s: (-have[s], s))]


def pick_seed(samples, experiments: list[str]) -> int | None:
    """The seed shown first: the one with samples for the most experiments (the smallest such seed)."""
    seeds = seed_order(samples, experiments)
    return seeds[0] if seeds else None


def _at_epoch(epochs: list[int], e: int) -> int | None:
    """The epoch shown for an experiment at slider epoch e: e, or its last saved epoch before e (early stopping)."""
    before = [x for x in epochs if x <= e]
    return before[-1] if before else None


def _load(npz: str) -> dict:
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}


def _saved(samples, seed: int, exps: list[str]) -> dict[str, list[int]]:
    s = samples[samples.seed == seed]
    return {x: sorted(s.loc[s.experiment == x, "epoch"].tolist()) for x in exps if (s.experiment == x).any()}


def comparison_data(samples, experiments: list[str], heads: dict, budget: int = BUDGET) -> dict:
    """Blobs (data URIs, deduplicated) and per seed, epoch and sample: the shared input/mask and one row per
    experiment. Every seed shows its last epoch; more epochs (first, then evenly between) fill `budget`."""
    seeds = seed_order(samples, experiments)
    if not seeds:
        return {"experiments": [], "seeds": [], "by_seed": {}, "blobs": [], "seg_labels": {}, "note": ""}
    exps = [x for x in experiments if (samples.experiment == x).any()]
    saved = {sd: _saved(samples, sd, exps) for sd in seeds}
    epochs = {sd: sorted(set().union(*saved[sd].values())) for sd in seeds}
    npz = {(x, int(sd), int(ep)): p for x, sd, ep, p in samples[["experiment", "seed", "epoch", "npz"]].itertuples(index=False)}
    blobs, frames = I.Blobs(), {sd: {} for sd in seeds}

    def add(sd, e):
        rows = {x: _at_epoch(saved[sd][x], e) for x in saved[sd]}
        loaded = {x: _load(npz[(x, sd, ep)]) for x, ep in rows.items() if ep is not None}
        shared = next(iter(loaded.values()))
        mse = {x: image_mse(a) for x, a in loaded.items()}
        frame = []
        for i in range(len(shared["index"])):
            per = [None if rows.get(x) is None else {
                "epoch": rows[x], "mse": float(mse[x][i]), **{k: blobs.add(k, loaded[x], i) for k in ROW_KINDS}}
                for x in exps]  # fmt: skip
            vals = [r["mse"] for r in per if r]
            frame.append({"index": int(shared["index"][i]), "input": blobs.add("input", shared, i), "mask": blobs.add("mask", shared, i),
                          "spread": (max(vals) - min(vals)) if len(vals) > 1 else 0.0, "rows": per})  # fmt: skip
        frames[sd][str(e)] = frame

    chosen = I.fill({sd: I.priority(epochs[sd]) for sd in seeds}, add, blobs, budget)
    by_seed = {}
    for sd in seeds:
        shown, total = sorted(chosen[sd]), len(epochs[sd])
        missing = [x for x in exps if x not in saved[sd]]
        note = ("every saved epoch" if len(shown) == total else f"{len(shown)} of {total} saved epochs shown (to keep this file small)") + (
            f"; no samples for {', '.join(missing)} at this seed" if missing else "")  # fmt: skip
        by_seed[str(sd)] = {"epochs": shown, "frames": frames[sd], "note": note}
    labels = {x: I.caption("seg", "seg" in heads.get(x, ())) for x in exps}
    return {"experiments": exps, "seeds": seeds, "by_seed": by_seed, "seg_labels": labels, "blobs": blobs.uris}


_JS = """
(function () {
  var root = document.getElementById(ID);
  var D = JSON.parse(document.getElementById(ID + "-data").textContent);
  function q(r) { return root.querySelector('[data-role="' + r + '"]'); }
  var seedSel = q("seed"), ep = q("epoch"), order = q("order"), sm = q("sample");
  D.seeds.forEach(function (s) { seedSel.add(new Option("seed " + s, s)); });
  function S() { return D.by_seed[seedSel.value]; }
  function fillEpochs() {
    var s = S(), old = +(ep.dataset.epoch || 0), best = s.epochs.length - 1;
    if (old) s.epochs.forEach(function (e, i) { if (Math.abs(e - old) < Math.abs(s.epochs[best] - old)) best = i; });
    ep.max = s.epochs.length - 1; ep.value = best;
    q("note").textContent = s.note;
    fillSamples();
  }
  function frame() { return S().frames[String(S().epochs[+ep.value])]; }
  function fillSamples() {
    var f = frame(), keep = +(sm.value || 0), idx = f.map(function (_, i) { return i; });
    if (order.value === "worst") idx.sort(function (a, b) { return f[b].spread - f[a].spread; });
    sm.innerHTML = "";
    idx.forEach(function (i) {
      var label = CAP.sample.replace("{i}", i + 1).replace("{n}", f.length).replace("{index}", f[i].index + 1) +
        (order.value === "worst" ? ", " + CAP.spread.replace("{spread}", imginavSci(f[i].spread)) : "");
      sm.add(new Option(label, i));
    });
    sm.value = order.value === "worst" ? idx[0] : Math.min(keep, f.length - 1);
    draw();
  }
  function draw() {
    var e = S().epochs[+ep.value], s = frame()[+sm.value];
    ep.dataset.epoch = e;
    q("epoch-label").textContent = CAP.epoch.replace("{epoch}", e);
    q("img-input").src = D.blobs[s.input]; q("img-mask").src = D.blobs[s.mask];
    D.experiments.forEach(function (x, r) {
      var row = s.rows[r], box = root.querySelector('[data-row="' + r + '"]');
      ROW_KINDS.forEach(function (k) {
        var img = box.querySelector('[data-role="img-' + k + '"]');
        if (row) { img.src = D.blobs[row[k]]; img.style.visibility = "visible"; } else { img.removeAttribute("src"); img.style.visibility = "hidden"; }
      });
      box.querySelector('[data-role="row-label"]').textContent = row ?
        CAP.epoch.replace("{epoch}", row.epoch) + ", " + CAP.mse.replace("{mse}", imginavSci(row.mse)) : "no samples at or before this epoch";
    });
  }
  seedSel.addEventListener("change", fillEpochs);
  ep.addEventListener("input", fillSamples);
  order.addEventListener("change", fillSamples);
  sm.addEventListener("change", draw);
  imginavZoom(root);
  fillEpochs();
})();
"""


def comparison_html(a: Analysis, budget: int = BUDGET) -> str:
    """Self-contained HTML + JS side-by-side view (no kernel)."""
    from imginav_lib.report.browser import figure, js_captions

    d = comparison_data(a.runs.samples, a.runs.experiments, a.runs.heads, budget)
    if not d["experiments"]:
        return "<p>No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to compare.</p>"
    e = html.escape
    uid = I.element_id("imginav-compare", str(a.runs.runs_dir))
    payload = I.script_json(d)
    rows = "".join(
        f'<div class="row" data-row="{r}"><div class="row-name"><b>{e(x)}</b><br><span class="muted" data-role="row-label"></span></div>'
        + "".join(figure(k, d["seg_labels"][x] if k == "seg" else I.caption(k)) for k in ROW_KINDS) + "</div>"
        for r, x in enumerate(d["experiments"]))  # fmt: skip
    caps = json.dumps({**json.loads(js_captions()), "spread": SPREAD_CAPTION})
    js = _JS.replace("ID", json.dumps(uid)).replace("CAP", caps).replace("ROW_KINDS", json.dumps(ROW_KINDS))
    return (f'<style>{I.VIEW_CSS}</style><div class="imginav-compare imginav-view" id="{uid}">'
            f'<label>seed <select data-role="seed"></select></label> '
            f'<label><input type="range" data-role="epoch" min="0" max="0" step="1" value="0"> <span data-role="epoch-label"></span></label> '
            f'<label>order <select data-role="order"><option value="position">by position</option>'
            f'<option value="worst">worst samples: experiments differ most in MSE</option></select></label> '
            f'<label><select data-role="sample"></select></label>{I.legend_html()}'
            f'<div class="row"><div class="row-name"><b>shared</b><br><span class="muted" data-role="note"></span></div>'
            f'{figure("input", I.caption("input"))}{figure("mask", I.caption("mask"))}</div>{rows}'
            f'<p class="muted">Click a panel for its native pixels.</p></div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{I.VIEW_JS}{js}</script>")  # fmt: skip


def comparison_widget(a: Analysis):
    """The same view with ipywidgets for a live kernel: every saved epoch, read on demand; refresh re-reads the
    phase folder."""
    import ipywidgets as W

    from imginav_lib.report.browser import ZOOMS, panel_image, reload_samples, set_panel, widget_style

    st = {"s": a.runs.samples}
    exps = [x for x in a.runs.experiments if (st["s"].experiment == x).any()]
    if not exps:
        return W.HTML("No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to compare.")
    seed = W.Dropdown(options=[(f"seed {s}", s) for s in seed_order(st["s"], exps)], description="seed")
    epoch = W.SelectionSlider(options=[0], description="epoch")
    order = W.Dropdown(options=[("by position", "position"), ("worst samples", "worst")], description="order")
    sample = W.Dropdown(description="sample", layout=W.Layout(width="420px"))
    zoom = W.ToggleButtons(options=ZOOMS, value=0, description="size")
    refresh = W.Button(description="refresh", tooltip="re-read the phase folder (a running phase saves more epochs)")
    note = W.Label()
    shared = {"input": panel_image(), "mask": panel_image()}
    rows = {x: ({k: panel_image() for k in ROW_KINDS}, W.Label(), W.Label(I.caption("seg", "seg" in a.runs.heads.get(x, ()))))
            for x in exps}  # fmt: skip
    busy = [False]

    def saved():
        return _saved(st["s"], seed.value, exps)

    def loaded():
        out = {}
        for x, eps in saved().items():
            ep = _at_epoch(eps, epoch.value)
            if ep is not None:
                s = st["s"]
                out[x] = (ep, _load(s.loc[(s.experiment == x) & (s.seed == seed.value) & (s.epoch == ep), "npz"].iloc[0]))
        return out

    def on_seed(_=None):
        old, sv = epoch.value, saved()
        epochs = sorted(set().union(*sv.values()))
        busy[0] = True
        epoch.options = epochs
        epoch.value = min(epochs, key=lambda x: abs(x - old)) if old else epochs[-1]
        busy[0] = False
        missing = [x for x in exps if x not in sv]
        note.value = f"no samples for {', '.join(missing)} at this seed" if missing else ""
        fill()

    def fill(_=None):
        if busy[0]:
            return
        data = loaded()
        mse = np.stack([image_mse(arr) for _, arr in data.values()])  # (experiments, N)
        spread, n = mse.max(0) - mse.min(0), mse.shape[1]
        idx = list(np.argsort(-spread, kind="stable")) if order.value == "worst" else list(range(n))
        first = next(iter(data.values()))[1]
        busy[0] = True
        old = sample.value
        sample.options = [(I.sample_caption(i, n, first["index"][i]) + (", " + SPREAD_CAPTION.format(spread=f"{spread[i]:.3e}")
                           if order.value == "worst" else ""), int(i)) for i in idx]  # fmt: skip
        sample.value = int(idx[0]) if order.value == "worst" or old is None or old >= n else old
        busy[0] = False
        draw(data=data)

    def draw(_=None, data=None):
        if busy[0]:
            return
        data = data or loaded()
        i = sample.value
        first = next(iter(data.values()))[1]
        native = first["input"].shape[-1]
        for k in shared:
            set_panel(shared[k], I.PANELS[k](first, i), native, zoom.value)
        for x, (imgs, label, _) in rows.items():
            if x not in data:
                label.value = f"{x}: no samples at or before {I.epoch_caption(epoch.value)}"
                for w in imgs.values():
                    w.value = b""
                continue
            ep, arr = data[x]
            for k, w in imgs.items():
                set_panel(w, I.PANELS[k](arr, i), native, zoom.value)
            label.value = f"{x}: {I.epoch_caption(ep)}, {I.mse_caption(float(image_mse(arr)[i]))}"

    def on_refresh(_=None):
        st["s"] = reload_samples(a)
        busy[0] = True
        old = seed.value
        seed.options = [(f"seed {s}", s) for s in seed_order(st["s"], exps)]
        seed.value = old if old in [v for _, v in seed.options] else seed.options[0][1]
        busy[0] = False
        last = epoch.value == epoch.options[-1]
        on_seed()
        if last:
            epoch.value = epoch.options[-1]

    on_seed()
    seed.observe(on_seed, "value")
    epoch.observe(fill, "value")
    order.observe(fill, "value")
    sample.observe(draw, "value")
    zoom.observe(lambda _: draw(), "value")
    refresh.on_click(on_refresh)
    cell = lambda img, cap: W.VBox([img, W.Label(cap)])  # noqa: E731
    head = W.HBox([cell(shared["input"], I.caption("input")), cell(shared["mask"], I.caption("mask")), note])
    body = [W.VBox([label, W.HBox([cell(imgs[k], seg.value if k == "seg" else I.caption(k)) for k in ROW_KINDS])])
            for imgs, label, seg in rows.values()]  # fmt: skip
    return W.VBox([widget_style(), W.HBox([seed, epoch, order, refresh]), W.HBox([sample, zoom]), W.HTML(I.legend_html()), head, *body])
