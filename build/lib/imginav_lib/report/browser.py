"""The sample browser: images encoded once (palette PNG, WebP), a static HTML + JS browser for the report and
an ipywidgets browser for a live kernel."""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

from imginav_lib.report.images import PANELS, Blobs, element_id, panels, script_json

if TYPE_CHECKING:
    from imginav_lib.analysis import Analysis

BROWSER_BUDGET = 2400  # (run, epoch, sample) images embedded in the static browser; beyond it epochs are thinned

e = html.escape


def _thin(epochs: list[int], k: int) -> list[int]:
    if len(epochs) <= k:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, max(2, k))).astype(int))
    return [epochs[i] for i in idx]


def browser_data(a: Analysis, budget: int = BROWSER_BUDGET) -> dict:
    """The static browser's data: blobs (data URIs, deduplicated) and per experiment/seed/epoch the blob ids."""
    s = a.runs.samples
    state = a.runs.runs.set_index(["experiment", "seed"])["state"]
    runs = [(x, int(seed)) for x in a.runs.experiments for seed in sorted(s.loc[s.experiment == x, "seed"].unique())]
    if not runs:
        return {"experiments": [], "runs": [], "blobs": [], "note": "no samples/ in any run folder"}
    with np.load(s.iloc[0]["npz"]) as z:
        n = len(z["index"])
    total = sum(len(s[(s.experiment == x) & (s.seed == seed)]) for x, seed in runs) * n
    n_show = n if total <= budget else min(n, 4)
    per_run = max(2, budget // (len(runs) * n_show))
    blobs, data = Blobs(), []
    shown = total_epochs = 0
    for x in a.runs.experiments:
        seeds = []
        for seed in sorted(s.loc[s.experiment == x, "seed"].unique()):
            g = s[(s.experiment == x) & (s.seed == seed)].sort_values("epoch")
            epochs_all = g["epoch"].tolist()
            epochs = _thin(epochs_all, per_run)
            total_epochs += len(epochs_all)
            frames = {}
            for ep in epochs:
                with np.load(g.loc[g.epoch == ep, "npz"].iloc[0]) as z:
                    arrays = {k: z[k] for k in z.files}
                frame = []
                for i in range(min(n_show, len(arrays["index"]))):
                    ref = {}
                    for k in PANELS:
                        ref[k] = blobs.add(k, arrays, i)
                    frame.append(ref)
                frames[str(ep)] = frame
                shown += 1
            st = state.get((x, int(seed)), "missing")
            seeds.append({"seed": int(seed), "label": f"seed {seed}" + ("" if st == "done" else f" ({st})"), "epochs": epochs,
                          "seg_label": "predicted segmentation" if "seg" in a.runs.heads.get(x, ()) else "reconstruction snapped to palette",
                          "frames": frames})
        if seeds:
            data.append(seeds)
    exps = [x for x in a.runs.experiments if len(s[s.experiment == x])]
    note = "" if shown == total_epochs and n_show == n else (
        f"To keep this file small the static browser shows {shown} of {total_epochs} saved epochs and {n_show} of {n} samples; "
        "the live notebook (analysis.ipynb) shows all.")
    return {"experiments": exps, "runs": data, "blobs": blobs.uris, "note": note}


_BROWSER_JS = """
(function () {
  var root = document.getElementById(ID);
  var D = JSON.parse(document.getElementById(ID + "-data").textContent);
  function q(r) { return root.querySelector('[data-role="' + r + '"]'); }
  var expSel = q("exp"), seedSel = q("seed"), ep = q("epoch"), sm = q("sample");
  D.experiments.forEach(function (x, i) { expSel.add(new Option(x, i)); });
  function run() { return D.runs[+expSel.value][+seedSel.value]; }
  function fillSeeds() {
    seedSel.innerHTML = "";
    D.runs[+expSel.value].forEach(function (s, i) { seedSel.add(new Option(s.label, i)); });
    fillEpochs();
  }
  function fillEpochs() {
    var r = run(), old = +(ep.dataset.epoch || 0), best = 0;
    r.epochs.forEach(function (e, i) { if (Math.abs(e - old) < Math.abs(r.epochs[best] - old)) best = i; });
    ep.max = r.epochs.length - 1; ep.value = old ? best : r.epochs.length - 1;
    sm.max = r.frames[String(r.epochs[0])].length - 1; if (+sm.value > +sm.max) sm.value = 0;
    draw();
  }
  function draw() {
    var r = run(), e = r.epochs[+ep.value], f = r.frames[String(e)][+sm.value];
    ep.dataset.epoch = e;
    q("epoch-label").textContent = "epoch " + e;
    q("sample-label").textContent = "sample " + (+sm.value + 1) + " of " + (+sm.max + 1);
    q("seg-caption").textContent = r.seg_label;
    ["input", "recon", "error", "seg", "mask"].forEach(function (k) { q("img-" + k).src = D.blobs[f[k]]; });
  }
  expSel.addEventListener("change", fillSeeds);
  seedSel.addEventListener("change", fillEpochs);
  ep.addEventListener("input", draw);
  sm.addEventListener("input", draw);
  fillSeeds();
})();
"""


def browser_html(a: Analysis, budget: int = BROWSER_BUDGET) -> str:
    """Self-contained HTML + JS sample browser (no kernel): experiment, seed, epoch and sample controls."""
    d = browser_data(a, budget)
    if not d["experiments"]:
        return "<p>No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to browse.</p>"
    uid = element_id("imginav-browser", str(a.runs.runs_dir))
    # JSON inside <script>: escape <, > and & so no name can close the tag.
    payload = script_json(d)
    figs = "".join(f'<figure><img data-role="img-{k}" alt="{k}"><figcaption{" data-role=seg-caption" if k == "seg" else ""}>{cap}</figcaption></figure>'
                   for k, cap in (("input", "input"), ("recon", "reconstruction"), ("error", "|error|"), ("seg", "segmentation"), ("mask", "true classes")))
    return (f'<div class="imginav-browser" id="{uid}">'
            f'<label>experiment <select data-role="exp"></select></label><label>seed <select data-role="seed"></select></label>'
            f'<label><input type="range" data-role="epoch" min="0" max="0" step="1" value="0"> <span data-role="epoch-label"></span></label>'
            f'<label><input type="range" data-role="sample" min="0" max="0" step="1" value="0"> <span data-role="sample-label"></span></label>'
            f'<div class="panels">{figs}</div><p class="muted">{e(d["note"])}</p></div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{_BROWSER_JS.replace('ID', json.dumps(uid))}</script>")


def browser_widget(a: Analysis):
    """The same browser with ipywidgets, for a live kernel: every saved epoch and sample, read on demand."""
    import ipywidgets as W

    s = a.runs.samples
    exps = [x for x in a.runs.experiments if len(s[s.experiment == x])]
    if not exps:
        return W.HTML("No samples saved.")
    exp = W.Dropdown(options=exps, description="experiment")
    seed = W.Dropdown(description="seed")
    epoch = W.SelectionSlider(options=[0], description="epoch")
    sample = W.IntSlider(min=0, max=0, description="sample")
    names = ["input", "recon", "error", "seg", "mask"]
    imgs = {k: W.Image(format="png", width=192, height=192) for k in names}
    caps = {k: W.Label(k) for k in names}
    box = W.HBox([W.VBox([imgs[k], caps[k]]) for k in names])

    busy = [False]  # while options are replaced, the value observers must not fire on half-updated state

    def on_exp(_=None):
        busy[0] = True
        seed.options = sorted(s.loc[s.experiment == exp.value, "seed"].unique().tolist())
        seed.value = seed.options[0]
        busy[0] = False
        on_seed()

    def on_seed(_=None):
        if busy[0]:
            return
        g = s[(s.experiment == exp.value) & (s.seed == seed.value)]
        old, epochs = epoch.value, sorted(g["epoch"].tolist())
        busy[0] = True
        epoch.options = epochs
        epoch.value = min(epochs, key=lambda x: abs(x - old)) if old else epochs[-1]
        busy[0] = False
        draw()

    def draw(_=None):
        if busy[0]:
            return
        g = s[(s.experiment == exp.value) & (s.seed == seed.value) & (s.epoch == epoch.value)]
        if not len(g):
            return
        with np.load(g["npz"].iloc[0]) as z:
            arrays = {k: z[k] for k in z.files}
        sample.max = len(arrays["index"]) - 1
        for k, b in panels(arrays, min(sample.value, sample.max)).items():
            imgs[k].format = "webp" if b[8:12] == b"WEBP" else "png"
            imgs[k].value = b
        caps["seg"].value = "predicted segmentation" if "seg_pred" in arrays else "recon snapped to palette"

    on_exp()
    exp.observe(on_exp, "value")
    seed.observe(on_seed, "value")
    epoch.observe(draw, "value")
    sample.observe(draw, "value")
    return W.VBox([W.HBox([exp, seed]), W.HBox([epoch, sample]), box])
