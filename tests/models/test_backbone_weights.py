"""``model.backbone_weights: imagenet`` reads torchvision's ImageNet file from the torch hub cache (never
downloading offline), and ``model.frozen_stages`` fixes the stem and the first stages as torchvision's
``trainable_layers`` does."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import load_config
from libra_cli.errors import LibraError
from libra_cli.models import build
from libra_cli.models.build import build_detector, imagenet_weights_path

runner = CliRunner()
RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of torchvision's ResNet18_Weights.IMAGENET1K_V1 URL


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache of its own (what ``torch.hub.set_dir`` sets), restored afterwards."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    monkeypatch.delenv(build.OFFLINE_ENV, raising=False)
    return hub


def fail_download(url, dst, *args, **kwargs):
    raise AssertionError(f"tried to download {url}")


def random_imagenet_file(hub, backbone: str = "resnet18", seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ResNet state_dict (fc included, as torchvision's) under the file name of the weights URL."""
    torch.manual_seed(seed)
    state = getattr(resnet, backbone)(weights=None).state_dict()
    state = {name: torch.randn_like(value) if value.is_floating_point() else value for name, value in state.items()}
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, imagenet_weights_path(backbone))
    return state


def imagenet_config(**model):
    return load_config(None, {"model": {"backbone_weights": "imagenet", "norm": "frozen_bn", **model}})


def test_the_file_is_torchvisions_file_name_in_the_hub_cache(hub_dir):
    assert imagenet_weights_path("resnet18") == hub_dir / "checkpoints" / RESNET18_FILE
    assert imagenet_weights_path("resnet50").name == "resnet50-0676ba61.pth"


def test_cached_imagenet_weights_are_loaded_into_the_backbone(hub_dir, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail_download)
    state = random_imagenet_file(hub_dir)
    model = build_detector(imagenet_config(), num_classes=3)
    body = model.backbone.body.state_dict()
    for name, value in body.items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    # Every ImageNet tensor but the classifier (and BatchNorm's counters, which FrozenBatchNorm2d has not).
    assert body.keys() == {n for n in state if not n.startswith("fc.") and not n.endswith("num_batches_tracked")}


def test_missing_file_offline_names_the_file_and_folder_and_downloads_nothing(hub_dir, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail_download)
    monkeypatch.setenv(build.OFFLINE_ENV, "1")
    with pytest.raises(LibraError) as info:
        build_detector(imagenet_config(), num_classes=3)
    message = str(info.value)
    assert RESNET18_FILE in message and str(hub_dir / "checkpoints") in message and "\n" not in message


def test_missing_file_without_network_is_the_same_one_line_error(hub_dir, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(LibraError) as info:
        build_detector(imagenet_config(), num_classes=3)
    message = str(info.value)
    assert RESNET18_FILE in message and str(hub_dir / "checkpoints") in message
    assert "Name or service not known" in message and "\n" not in message


def test_missing_file_online_is_downloaded_once_into_the_cache(hub_dir, monkeypatch):
    calls = []

    def download(url, dst, *args, **kwargs):
        calls.append(url)
        torch.save(resnet.resnet18(weights=None).state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    build_detector(imagenet_config(), num_classes=3)
    build_detector(imagenet_config(), num_classes=3)
    assert calls == [resnet.ResNet18_Weights.IMAGENET1K_V1.url]
    assert (hub_dir / "checkpoints" / RESNET18_FILE).is_file()


def test_a_local_file_still_works(tmp_path):
    state = resnet.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    model = build_detector(load_config(None, {"model": {"backbone_weights": str(path), "norm": "bn"}}), num_classes=3)
    torch.testing.assert_close(model.backbone.body.conv1.weight, state["conv1.weight"])


def test_cli_train_offline_stops_with_one_line_before_writing_anything(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(build.OFFLINE_ENV, "1")
    monkeypatch.chdir(tmp_path)  # the default benchmark would be generated here; it must not be
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--backbone-weights", "imagenet", "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and RESNET18_FILE in lines[0]
    assert not out.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("frozen_stages", [0, 1, 2, 3, 4])
def test_frozen_stages_match_torchvisions_trainable_layers(frozen_stages):
    config = load_config(None, {"model": {"frozen_stages": frozen_stages, "norm": "bn"}})
    ours = build_detector(config, num_classes=3).backbone.body
    trainable_layers = 5 if frozen_stages == 0 else 4 - frozen_stages
    theirs = _resnet_fpn_extractor(resnet.resnet18(norm_layer=torch.nn.BatchNorm2d), trainable_layers).body
    expected = {name: p.requires_grad for name, p in theirs.named_parameters()}
    assert {name: p.requires_grad for name, p in ours.named_parameters()} == expected
    frozen = {name.split(".")[0] for name, p in ours.named_parameters() if not p.requires_grad}
    assert frozen == ({"conv1", "bn1"} | {f"layer{k}" for k in range(1, frozen_stages + 1)} if frozen_stages else set())


def test_frozen_stages_out_of_range_is_one_line():
    with pytest.raises(LibraError, match=r"model.frozen_stages \(--frozen-stages\): must lie in \[0, 4\]; got 5"):
        load_config(None, {"model": {"frozen_stages": 5}})
