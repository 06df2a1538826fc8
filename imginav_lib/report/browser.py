"""The sample browser: per experiment, seed, epoch and sample the input, reconstruction, |error|, segmentation
and true classes. Two views of the same data with the same words (images.py holds them): a static HTML + JS
view for the report (size-limited: epochs are thinned to a budget of bytes) and an ipywidgets view for a live
kernel (`imginav browse`: every saved epoch, read on demand, and a refresh that re-reads the phase folder)."""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

from imginav_lib.report import images as I

if TYPE_CHECKING:
    from imginav_lib.analysis import Analysis

BROWSER_BYTES = 9_000_000  # characters of images embedded in the static browser; beyond them epochs are thinned
KINDS = ("input", "recon", "error", "seg", "mask")  # the panels, left to right

e = html.escape


def _load(npz: str) -> dict:
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}


def _runs(samples) -> list[tuple[str, int]]:
    return [(x, int(seed)) for (x, seed), _ in samples.groupby(["experiment", "seed"], sort=False)]


def browser_data(a: Analysis, budget: int = BROWSER_BYTES) -> dict:
    """The static browser's data: blobs (data URIs, deduplicated) and per experiment/seed/epoch the blob ids of
    each sample's panels, with its MSE and layout. Every run shows its last saved epoch; more epochs (first, then
    evenly between) and, if even that is too much, fewer samples, keep the images within `budget` characters."""
    s = a.runs.samples
    exps = [x for x in a.runs.experiments if (s.experiment == x).any()]
    if not exps:
        return {"experiments": [], "runs": [], "blobs": [], "note": "no samples/ in any run folder"}
    state = a.runs.runs.set_index(["experiment", "seed"])["state"]
    runs = [(x, int(seed)) for x in exps for seed in sorted(s.loc[s.experiment == x, "seed"].unique())]
    saved = {r: sorted(s.loc[(s.experiment == r[0]) & (s.seed == r[1]), "epoch"].tolist()) for r in runs}
    npz = {(x, seed, int(ep)): p for x, seed, ep, p in s[["experiment", "seed", "epoch", "npz"]].itertuples(index=False)}
    first = _load(npz[(*runs[0], saved[runs[0]][-1])])
    n = len(first["index"])
    trial = I.Blobs()  # one run's last epoch, to see how many samples every run's last epoch can afford
    for i in range(n):
        for k in KINDS:
            trial.add(k, first, i)
    n_show = n if trial.bytes * len(runs) <= budget else max(1, int(n * budget / (trial.bytes * len(runs))))
    blobs, frames = I.Blobs(), {r: {} for r in runs}

    def add(run, ep):
        arrays = _load(npz[(*run, ep)])
        mse = I.image_mse(arrays)
        frames[run][str(ep)] = [{**{k: blobs.add(k, arrays, i) for k in KINDS}, "mse": float(mse[i]), "index": int(arrays["index"][i])}
                                for i in range(min(n_show, len(arrays["index"])))]  # fmt: skip

    chosen = I.fill({r: I.priority(saved[r]) for r in runs}, add, blobs, budget)
    data = []
    for x in exps:
        seeds = []
        for run in [r for r in runs if r[0] == x]:
            st = state.get(run, "missing")
            seeds.append({"seed": run[1], "label": f"seed {run[1]}" + ("" if st == "done" else f" ({st})"),
                          "epochs": sorted(chosen[run]), "seg_label": I.caption("seg", "seg" in a.runs.heads.get(x, ())),
                          "frames": frames[run]})  # fmt: skip
        data.append(seeds)
    shown, total = sum(len(c) for c in chosen.values()), sum(len(v) for v in saved.values())
    note = "" if shown == total and n_show == n else (
        f"To keep this file small the static browser shows {shown} of {total} saved epochs and {n_show} of {n} samples; "
        "the live browser (imginav browse) shows all.")
    return {"experiments": exps, "runs": data, "blobs": blobs.uris, "n": n_show, "note": note}


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
    sm.max = r.frames[String(r.epochs[0])].length; if (+sm.value > +sm.max) sm.value = 1;
    draw();
  }
  function draw() {
    var r = run(), e = r.epochs[+ep.value], f = r.frames[String(e)][+sm.value - 1];
    ep.dataset.epoch = e;
    q("epoch-label").textContent = CAP.epoch.replace("{epoch}", e);
    q("sample-label").textContent = CAP.sample.replace("{i}", +sm.value).replace("{n}", +sm.max).replace("{index}", f.index + 1)
      + ", " + CAP.mse.replace("{mse}", imginavSci(f.mse));
    q("seg-caption").textContent = r.seg_label;
    KINDS.forEach(function (k) { q("img-" + k).src = D.blobs[f[k]]; });
  }
  expSel.addEventListener("change", fillSeeds);
  seedSel.addEventListener("change", fillEpochs);
  ep.addEventListener("input", draw);
  sm.addEventListener("input", draw);
  imginavZoom(root);
  fillSeeds();
})();
"""


def js_captions() -> str:
    """images.py's caption templates for the static view's JS, so it words them as the widget does."""
    return json.dumps({"epoch": I.EPOCH_CAPTION, "mse": I.MSE_CAPTION, "sample": I.SAMPLE_CAPTION})


def figure(kind: str, cap: str, role: str | None = None) -> str:
    role = role or f"img-{kind}"
    seg = ' data-role="seg-caption"' if kind == "seg" and role == "img-seg" else ""
    return f'<figure><img class="panel" data-role="{role}" alt="{e(cap)}" title="click: native size"><figcaption{seg}>{e(cap)}</figcaption></figure>'


def browser_html(a: Analysis, budget: int = BROWSER_BYTES) -> str:
    """Self-contained HTML + JS sample browser (no kernel): experiment, seed, epoch and sample controls."""
    d = browser_data(a, budget)
    if not d["experiments"]:
        return "<p>No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to browse.</p>"
    uid = I.element_id("imginav-browser", str(a.runs.runs_dir))
    payload = I.script_json(d)  # JSON inside <script>: no <, > or & that could close the tag
    figs = "".join(figure(k, I.caption(k)) for k in KINDS)
    js = _BROWSER_JS.replace("ID", json.dumps(uid)).replace("CAP", js_captions()).replace("KINDS", json.dumps(KINDS))
    return (f'<style>{I.VIEW_CSS}</style><div class="imginav-browser imginav-view" id="{uid}">'
            f'<label>experiment <select data-role="exp"></select></label><label>seed <select data-role="seed"></select></label>'
            f'<label><input type="range" data-role="epoch" min="0" max="0" step="1" value="0"> <span data-role="epoch-label"></span></label>'
            f'<label><input type="range" data-role="sample" min="1" max="1" step="1" value="1"> <span data-role="sample-label"></span></label>'
            f'{I.legend_html()}<div class="panels">{figs}</div><p class="muted">Click a panel for its native pixels. {e(d["note"])}</p></div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{I.VIEW_JS}{js}</script>")


# ---------------------------------------------------------------------------------------------------------
# The live view (ipywidgets)

ZOOMS = [("fit", 0), ("1\u00d7 native", 1), ("2\u00d7", 2), ("4\u00d7", 4)]
FIT_PX = 192


def widget_style():
    """The legend's and the pixelated panels' styles, for a live notebook (the widget view has no page CSS)."""
    import ipywidgets as W

    return W.HTML(f"<style>{I.VIEW_CSS} .imginav-pix {{image-rendering: pixelated}}</style>")


def panel_image():
    import ipywidgets as W

    img = W.Image(format="png", width=str(FIT_PX), height=str(FIT_PX))
    img.add_class("imginav-pix")
    return img


def set_panel(img, b: bytes, native: int, zoom: int) -> None:
    """Show encoded bytes b in a panel at `zoom` x its native size (0: the grid's size)."""
    img.format = "webp" if b[8:12] == b"WEBP" else "png"
    img.value = b
    img.width = img.height = str(native * zoom if zoom else FIT_PX)


def reload_samples(a: Analysis):
    """The samples table of the phase folder as it is now (a running phase saves more)."""
    from imginav_lib.analysis.phase import load_phase_runs

    return load_phase_runs(a.runs.runs_dir).samples


def browser_widget(a: Analysis):
    """The same browser with ipywidgets, for a live kernel: every saved epoch and sample, read on demand; the
    refresh button re-reads the phase folder."""
    import ipywidgets as W

    st = {"s": a.runs.samples}
    exps = lambda: [x for x in a.runs.experiments if (st["s"].experiment == x).any()]  # noqa: E731
    if not exps():
        return W.HTML("No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to browse.")
    exp = W.Dropdown(options=exps(), description="experiment")
    seed = W.Dropdown(description="seed")
    zoom = W.ToggleButtons(options=ZOOMS, value=0, description="size")
    refresh = W.Button(description="refresh", tooltip="re-read the phase folder (a running phase saves more epochs)")
    epoch = W.SelectionSlider(options=[0], description="epoch")
    sample = W.IntSlider(min=1, max=1, value=1, description="sample")
    info = W.Label()
    imgs = {k: panel_image() for k in KINDS}
    caps = {k: W.Label(I.caption(k)) for k in KINDS}
    busy = [False]  # while options are replaced, the value observers must not fire on half-updated state

    def rows(x, sd=None):
        s = st["s"]
        return s[(s.experiment == x) & ((s.seed == sd) if sd is not None else True)]

    def on_exp(_=None):
        busy[0] = True
        old = seed.value
        seed.options = sorted(rows(exp.value)["seed"].unique().tolist())
        seed.value = old if old in seed.options else seed.options[0]
        busy[0] = False
        on_seed()

    def on_seed(_=None):
        if busy[0]:
            return
        old, epochs = epoch.value, sorted(rows(exp.value, seed.value)["epoch"].tolist())
        busy[0] = True
        epoch.options = epochs
        epoch.value = min(epochs, key=lambda x: abs(x - old)) if old else epochs[-1]
        busy[0] = False
        draw()

    def draw(_=None):
        if busy[0]:
            return
        g = rows(exp.value, seed.value)
        g = g[g.epoch == epoch.value]
        if not len(g):
            return
        arrays = _load(g["npz"].iloc[0])
        n = len(arrays["index"])
        busy[0] = True
        sample.max = n
        busy[0] = False
        i = min(sample.value, n) - 1
        native = arrays["input"].shape[-1]
        for k, b in I.panels(arrays, i).items():
            set_panel(imgs[k], b, native, zoom.value)
        caps["seg"].value = I.caption("seg", "seg_pred" in arrays)
        info.value = f"{I.sample_caption(i, n, arrays['index'][i])}, {I.mse_caption(float(I.image_mse(arrays)[i]))}; " \
                     f"{I.epoch_caption(epoch.value)}; native {native}\u00d7{native} px"

    def on_refresh(_=None):
        st["s"] = reload_samples(a)
        busy[0] = True
        old = exp.value
        exp.options = exps()
        exp.value = old if old in exp.options else exp.options[0]
        busy[0] = False
        last = epoch.value == epoch.options[-1]  # following the newest epoch: stay on the newest
        on_exp()
        if last:
            epoch.value = epoch.options[-1]

    on_exp()
    exp.observe(on_exp, "value")
    seed.observe(on_seed, "value")
    epoch.observe(draw, "value")
    sample.observe(draw, "value")
    zoom.observe(draw, "value")
    refresh.on_click(on_refresh)
    panels = W.HBox([W.VBox([imgs[k], caps[k]]) for k in KINDS], layout=W.Layout(flex_flow="row wrap", overflow="auto"))
    return W.VBox([widget_style(), W.HBox([exp, seed, refresh]), W.HBox([epoch, sample]), zoom, info, W.HTML(I.legend_html()), panels])
