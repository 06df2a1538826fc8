"""The bf16 path, exercised on the CPU (the GPU runs use it): autocast, a finite loss, checkpoint and resume."""
import json

import numpy as np
import pandas as pd
import torch

from imginav_lib.data.dataset import to_model_input
from imginav_lib.model.autoencoder import LayoutAutoencoder
from imginav_lib.config.params import resolve_run
from imginav_lib.train.device import precision
from imginav_lib.train.trainer import fit

from conftest import tiny_params

BF16 = {"precision": "bf16", "device": "cpu"}


def test_bf16_autocast_step_gives_bf16_activations_and_a_finite_loss(tiny):
    cfg = resolve_run(tiny, "F3", 1)
    model = LayoutAutoencoder(cfg.architecture)
    x = to_model_input(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    with precision(torch.device("cpu"), torch.bfloat16):
        out = model(x, heads=("rgb", "seg", "cls"))
    assert out["rgb"].dtype == torch.bfloat16 and out["seg"].dtype == torch.bfloat16
    loss = torch.nn.functional.mse_loss(out["rgb"].float(), x)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_run_checkpoints_and_resumes_with_finite_losses(tmp_path, labelled_manifest):
    few = tmp_path / "few.csv"  # 5 layouts, one step of 4 per epoch: CPU bf16 convolutions are slow
    lines = labelled_manifest.read_text().splitlines(keepends=True)
    few.write_text("".join([lines[0], *[line for line in lines[1:] if line.rstrip().endswith("false")][:5]]))
    one = resolve_run(tiny_params(tmp_path, few, training={**BF16, "epochs": 1}, data={"num_samples": 1}), "F3", 1)
    first = fit(one, progress=False)
    info = json.loads((first.run_dir / "run.json").read_text())
    assert info["precision"] == "bfloat16" and info["status"] == "done"
    assert (first.run_dir / "checkpoints" / "latest.pt").is_file()
    info["status"] = "running"  # as a job killed after its first epoch leaves it
    (first.run_dir / "run.json").write_text(json.dumps(info))
    two = resolve_run(tiny_params(tmp_path, few, training={**BF16, "epochs": 2}, data={"num_samples": 1}), "F3", 1)
    resumed = fit(two, progress=False)
    h = pd.read_csv(resumed.run_dir / "metrics.csv")
    assert json.loads((resumed.run_dir / "run.json").read_text())["attempts"] == 2
    assert list(h["epoch"]) == [1, 2]  # epoch 1 kept from the first attempt, epoch 2 trained after the resume
    pd.testing.assert_frame_equal(h.iloc[:1], first.history.iloc[:1], check_dtype=False)
    losses = h[[c for c in h.columns if c.endswith(("loss", "mse"))]].to_numpy(float)
    assert losses.size and np.isfinite(losses).all()


# ---------------------------------------------------------------------------------------------------------
# precision auto, the kernels of the torch build, the environment of each attempt (simulated GPUs: no GPU here)

import pytest  # noqa: E402

from imginav_lib.train import device as dev  # noqa: E402

V100_BUILD_WITHOUT_SM70 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # a CUDA 13 wheel
CU126_BUILD = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def _fake_gpu(monkeypatch, capability, archs, name="Tesla V100-SXM2-32GB"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a V100 (emulation)


def test_auto_does_not_choose_bf16_at_capability_7_0(monkeypatch):
    _fake_gpu(monkeypatch, (7, 0), CU126_BUILD)
    training = type("T", (), {"device": "auto", "precision": "auto"})()
    device, dtype = dev.setup_device(training)
    assert device.type == "cuda" and dtype == torch.float16  # fp16 (with the grad scaler), never emulated bf16
    for cap, expected in [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)]:
        assert dev.resolve_precision("auto", torch.device("cuda"), cap) == expected, cap
    assert dev.resolve_precision("auto", torch.device("cpu"), None) == torch.float32


def test_bf16_asked_for_on_a_gpu_without_bf16_units_is_refused():
    with pytest.raises(dev.UnsupportedGPU, match="no bf16 units"):
        dev.resolve_precision("bf16", torch.device("cuda"), (7, 0))
    assert dev.resolve_precision("bf16", torch.device("cuda"), (8, 0)) == torch.bfloat16


@pytest.mark.parametrize("archs, cap, runs", [
    (CU126_BUILD, (7, 0), True), (V100_BUILD_WITHOUT_SM70, (7, 0), False), (["sm_80"], (8, 6), True),
    (["sm_86"], (8, 0), False), (["sm_90"], (12, 0), False), (["sm_80", "compute_90"], (12, 0), True),
    (["sm_90a"], (9, 0), True), (["sm_100", "sm_120"], (12, 1), True), ([], (7, 0), False),
])  # fmt: skip
def test_has_kernels_follows_cuda_binary_compatibility(archs, cap, runs):
    assert dev.has_kernels(archs, cap) is runs


def test_a_torch_without_sm_70_refuses_in_one_line_before_any_data_is_read(monkeypatch, tmp_path, tiny):
    from imginav_lib.data import dataset
    from imginav_lib.train import trainer

    _fake_gpu(monkeypatch, (7, 0), V100_BUILD_WITHOUT_SM70)
    read = []
    monkeypatch.setattr(dataset, "read_manifest", lambda *a, **k: read.append(a) or pytest.fail("data read"))
    monkeypatch.setattr(trainer, "load_run_data", lambda *a, **k: read.append(a) or pytest.fail("data read"))
    cfg = resolve_run(tiny, "F1", 1)
    with pytest.raises(dev.UnsupportedGPU) as e:
        fit(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and not read
    assert "Tesla V100-SXM2-32GB" in msg and "sm_70" in msg and "compute capability 7.0" in msg  # the GPU
    assert f"torch {torch.__version__}" in msg and "sm_75" in msg  # the build
    assert "cu126" in msg and "environment.yml" in msg  # the fix


def test_run_one_refuses_the_build_in_one_line_before_the_notebook_starts(monkeypatch, tmp_path, tiny, capsys):
    from imginav_lib.cli import main
    from imginav_lib.config.params import load_params
    from imginav_lib.launch import runner

    _fake_gpu(monkeypatch, (7, 0), V100_BUILD_WITHOUT_SM70)
    index = runner.write_index(load_params(tiny), tiny, tmp_path / "runs")
    monkeypatch.setattr(runner, "train_notebook", lambda *a: pytest.fail("the notebook would start"))
    assert main(["run-one", str(index), "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imginav: error: torch ") and "V100" in err[0] and "cu126" in err[0]


def test_deterministic_mode_is_set_for_the_run_and_put_back_after():
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    with dev.deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before


def test_run_json_records_each_attempts_environment_and_a_resume_keeps_its_precision(tmp_path, labelled_manifest):
    few = tmp_path / "few.csv"
    lines = labelled_manifest.read_text().splitlines(keepends=True)
    few.write_text("".join([lines[0], *[line for line in lines[1:] if line.rstrip().endswith("false")][:12]]))
    params = lambda **t: tiny_params(tmp_path, few, training={"epochs": 1, "deterministic": True, **t},  # noqa: E731
                                     data={"num_samples": 1})
    first = fit(resolve_run(params(), "F1", 1), progress=False)
    info = json.loads((first.run_dir / "run.json").read_text())
    env = info["environment"]
    assert env == {"device": "cpu", "gpu": None, "capability": None, "precision": "float32", "torch": torch.__version__,
                   "cuda": torch.version.cuda, "cudnn": env["cudnn"], "deterministic": True}
    assert [a["attempt"] for a in info["environments"]] == [1]
    # A second attempt (more epochs) appends its own environment.
    second = fit(resolve_run(params(epochs=2), "F1", 1), progress=False)
    info = json.loads((second.run_dir / "run.json").read_text())
    assert [a["attempt"] for a in info["environments"]] == [1, 2] and info["attempts"] == 2
    # An attempt whose precision would differ (auto: bf16 on one GPU, fp16 on another) is refused before training.
    info["environments"][0]["precision"] = "float16"
    info["status"] = "running"
    (second.run_dir / "run.json").write_text(json.dumps(info))
    from imginav_lib.errors import InputError

    with pytest.raises(InputError, match="started in precision float16 .* would resume in float32"):
        fit(resolve_run(params(epochs=3), "F1", 1), progress=False)
    # and a changed training.precision in the params is a field a resumed run must match
    with pytest.raises(InputError, match="training.precision auto → fp32 would mix two runs"):
        fit(resolve_run(params(epochs=3, precision="fp32"), "F1", 1), progress=False)


def test_the_gpu_check_runs_tiny_on_the_cpu(tmp_path):
    """bench/gpu_check.py is ready for a GPU node: here it runs (tiny) and measures every row it promises."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(script), "--tiny", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "precision auto resolves to: float32" in r.stdout and "| fp32 (auto) |" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    kinds = {(x["precision"], x["kind"], x["deterministic"]) for x in rows if x["images_per_s"] and x["images_per_s"] > 0}
    assert kinds == {(p, k, False) for p in ("fp32", "fp16", "bf16") for k in ("bare", "trainer")} | {("fp32", "bare", True)}
