import pytest
import torch

from imginav_lib.model.losses import cls_loss, seg_loss, total_loss
from imginav_lib.model.autoencoder import LayoutAutoencoder, heads_for
from imginav_lib.config.schema import Architecture, Loss


@pytest.mark.parametrize(
    "arch, size",
    [
        (dict(latent_channels=4, base_channels=8, downsampling_steps=2), 32),
        (dict(latent_channels=8, base_channels=16, downsampling_steps=3, activation="relu"), 64),
        (dict(latent_channels=4, base_channels=8, downsampling_steps=2, variational=True), 32),
        (dict(latent_channels=2, base_channels=16, downsampling_steps=4, norm_groups=4), 64),
    ],
)
def test_shapes(arch, size):
    cfg = Architecture(**arch)
    model = LayoutAutoencoder(cfg)
    x = torch.rand(3, 3, size, size) * 2 - 1
    out = model(x)
    f = 2 ** cfg.downsampling_steps
    assert out["latent"].shape == (3, cfg.latent_channels, size // f, size // f)
    assert out["rgb"].shape == x.shape and out["rgb"].abs().max() <= 1
    assert out["seg"].shape == (3, 10, size, size)
    assert out["cls"].shape == (3, 2)
    assert ("kl" in out) == cfg.variational
    if cfg.variational:
        assert out["kl"].shape == (3,) and (out["kl"] >= 0).all()
        model.eval()  # evaluation uses the mean: deterministic
        assert torch.equal(model(x)["rgb"], model(x)["rgb"])


def test_tiny_forward_backward_and_state_round_trip(tmp_path):
    cfg = Architecture(latent_channels=4, base_channels=8, downsampling_steps=2)
    model = LayoutAutoencoder(cfg)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    masks, labels = torch.randint(0, 10, (4, 32, 32)), torch.tensor([0, 1, -1, 0])
    loss, parts = total_loss(model(x), x, masks, labels, mse_weight=1, seg_weight=0.05, cls_weight=0.01)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = LayoutAutoencoder(cfg)
    other.load_state_dict(torch.load(tmp_path / "m.pt"))
    model.eval(), other.eval()
    assert torch.equal(model(x)["rgb"], other(x)["rgb"])


def test_zero_weight_heads_are_not_computed():
    model = LayoutAutoencoder(Architecture(latent_channels=4, base_channels=8, downsampling_steps=2))
    called = []
    model.decoder.seg_head.register_forward_hook(lambda *a: called.append("seg"))
    model.decoder.cls_head.register_forward_hook(lambda *a: called.append("cls"))
    heads = heads_for(Loss(mse=1.0, seg=0.0, cls=0.0))
    assert heads == ("rgb",)
    out = model(torch.zeros(2, 3, 32, 32), heads=heads)
    assert called == [] and set(out) == {"rgb", "latent"}
    model(torch.zeros(2, 3, 32, 32), heads=heads_for(Loss(seg=0.05, cls=0.01)))
    assert sorted(called) == ["cls", "seg"]


def test_perfect_logits_give_ce_near_zero_and_uniform_gives_log_k():
    target = torch.randint(0, 10, (2, 8, 8))
    perfect = torch.nn.functional.one_hot(target, 10).permute(0, 3, 1, 2).float() * 100
    assert seg_loss(perfect, target).item() < 1e-6
    assert seg_loss(torch.zeros(2, 10, 8, 8), target).item() == pytest.approx(torch.log(torch.tensor(10.0)).item())
    target[0, 0, 0] = 255  # ignored pixel: any logits there do not count
    perfect[0, :, 0, 0] = torch.tensor([100.0] + [0.0] * 9)
    assert seg_loss(perfect, target).item() < 1e-6


def test_cls_loss_ignores_unknown_labels_and_never_nans():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0], [0.0, 0.0]])
    assert cls_loss(logits, torch.tensor([0, 1, -1])).item() < 1e-6
    assert cls_loss(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def test_losses_check_types_instead_of_guessing():
    with pytest.raises(ValueError, match="seg_target"):
        seg_loss(torch.zeros(1, 10, 4, 4), torch.zeros(1, 4, 4))  # float mask
    with pytest.raises(ValueError, match="seg_logits"):
        seg_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_total_loss_known_values_and_parts():
    x = torch.zeros(1, 3, 2, 2)
    out = {"rgb": torch.full((1, 3, 2, 2), 0.5), "seg": torch.zeros(1, 10, 2, 2), "cls": torch.zeros(1, 2)}
    masks, labels = torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([1])
    total, parts = total_loss(out, x, masks, labels, mse_weight=1.0, seg_weight=0.5, cls_weight=0.25)
    ln10, ln2 = torch.log(torch.tensor(10.0)).item(), torch.log(torch.tensor(2.0)).item()
    assert parts["mse"].item() == pytest.approx(0.25)
    assert parts["seg_ce"].item() == pytest.approx(ln10)
    assert parts["w_seg_ce"].item() == pytest.approx(0.5 * ln10)
    assert total.item() == pytest.approx(0.25 + 0.5 * ln10 + 0.25 * ln2)
    assert not any(p.requires_grad for p in parts.values())
    _, parts = total_loss(out, x, masks, labels, mse_weight=1.0, seg_weight=0.0, cls_weight=0.0)
    assert set(parts) == {"mse", "w_mse"}
