"""core.models: registry errors, weight resolution order, checksummed download, untrained mode."""
import hashlib

import pytest

from core import config, models
from core.models import SamWeights, WeightsNotFound
from core.sam import variants


def _with_weights(monkeypatch, name: str, weights: SamWeights) -> None:
    """Give the registered SAM `name` other weights for this test."""
    import dataclasses

    monkeypatch.setitem(variants._VARIANTS, name, dataclasses.replace(variants.sam_variant(name), weights=weights))


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(config, "SAM_CHECKPOINT", None)
    return tmp_path / "cache"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="vit_b"):
        models.load_sam("vit_x", untrained=True)
    with pytest.raises(ValueError, match="ViT-B-32"):
        models.load_clip("NoSuchNet", untrained=True)
    with pytest.raises(ValueError, match="openai"):
        models.load_clip("ViT-B-32", "no-such-tag")


def test_missing_weights_message_names_file_size_and_place(empty_cache, monkeypatch):
    monkeypatch.setattr(config, "OFFLINE", True)
    with pytest.raises(WeightsNotFound) as info:
        models.resolve_sam_checkpoint("vit_b")
    message = str(info.value)
    assert "sam_vit_b_01ec64.pth" in message and "375 MB" in message
    assert str(empty_cache / "sam" / "sam_vit_b_01ec64.pth") in message and "--untrained" in message


def test_explicit_path_then_cache(empty_cache, tmp_path):
    with pytest.raises(WeightsNotFound, match="does not exist"):
        models.resolve_sam_checkpoint("vit_b", tmp_path / "missing.pth")
    given = tmp_path / "mine.pth"
    given.write_bytes(b"x")
    assert models.resolve_sam_checkpoint("vit_b", given) == given
    cached = models.sam_cache_path("vit_b")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"y")
    assert models.resolve_sam_checkpoint("vit_b", download=False) == cached


def test_download_verifies_checksum_and_is_atomic(empty_cache, tmp_path, monkeypatch):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"pretend weights" * 100)
    good = hashlib.md5(source.read_bytes()).hexdigest()
    _with_weights(monkeypatch, "vit_b", SamWeights("sam_vit_b_01ec64.pth", source.as_uri(), "0" * 32, 1))
    with pytest.raises(WeightsNotFound, match="checksum mismatch"):
        models.resolve_sam_checkpoint("vit_b", download=True)
    assert not list((empty_cache / "sam").glob("*"))  # nothing half-written left behind
    _with_weights(monkeypatch, "vit_b", SamWeights("sam_vit_b_01ec64.pth", source.as_uri(), good, 1))
    path = models.resolve_sam_checkpoint("vit_b", download=True)
    assert path.read_bytes() == source.read_bytes()


def test_real_checkpoint_file_is_loaded(tmp_path):
    """A state dict saved from SAM loads back through the checkpoint path."""
    import torch

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    with pytest.raises(WeightsNotFound, match="untrained"):
        models.load_sam("vit_tiny")
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    from segment_anything.build_sam import _build_sam

    rebuilt = _build_sam(64, 2, 2, [1], checkpoint=str(path))
    assert torch.equal(rebuilt.mask_decoder.iou_prediction_head.layers[0].weight,
                       sam.mask_decoder.iou_prediction_head.layers[0].weight)


def test_untrained_is_seeded_and_shared():
    a = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    assert models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu") is a
    clip = models.load_clip("ViT-B-32", untrained=True, device="cpu")
    assert clip.untrained and clip.label == "ViT-B-32/untrained"


def test_sam_precision_switch_picks_the_fast_path_dtype(monkeypatch):
    import torch

    from core.sam import fast_sam

    exact = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="fp32")
    assert fast_sam.is_accelerated(exact) and fast_sam.fast_dtype(exact) == torch.float32
    auto = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="auto")
    from core.sam.precision import precision_of

    assert auto is not exact and fast_sam.fast_dtype(auto) == fast_sam.PRECISIONS[precision_of(auto).dtype]
    monkeypatch.setattr(config, "SAM_PRECISION", "FP32")
    assert models.load_sam("vit_tiny", untrained=True, device="cpu") is exact
    with pytest.raises(ValueError, match="unknown SAM precision 'int4'.*fp32"):
        models.load_sam("vit_tiny", untrained=True, device="cpu", precision="int4")


def test_clip_missing_weights_is_actionable(empty_cache, monkeypatch):
    monkeypatch.setattr(config, "OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="--untrained"):
        models.load_clip("ViT-B-32", "openai", device="cpu")


def test_spacy_pipeline_loads():
    nlp = models.load_spacy()
    assert [t.lemma_ for t in nlp("two dogs")][-1] == "dog"


def test_clip_weights_found_in_cache_without_network(empty_cache, monkeypatch):
    """Weights in the open_clip cache layout (as `fetch-weights` leaves them) load offline."""
    import torch

    monkeypatch.setattr(config, "OFFLINE", True)
    source = models.load_clip("ViT-B-32", untrained=True, device="cpu")
    snapshot = empty_cache / "open_clip" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    torch.save(source.model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    assert models.cached_clip_file("ViT-B-32", "openai") == snapshot / "open_clip_pytorch_model.bin"
    loaded = models.load_clip("ViT-B-32", "openai", device="cpu")
    assert not loaded.untrained
    assert torch.equal(loaded.model.visual.proj, source.model.visual.proj)


def test_git_blob_sha1_is_gits_object_id(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert models.git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object` of ""
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello\n")
    assert models.git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_vit_t_is_registered_with_mobile_sams_file(empty_cache, monkeypatch):
    assert "vit_t" in models.sam_model_names()
    info = models.sam_weights("vit_t")
    assert info.filename == "mobile_sam.pt" and info.md5 is None and len(info.git_blob_sha1) == 40
    monkeypatch.setattr(config, "OFFLINE", True)
    with pytest.raises(WeightsNotFound, match=r"mobile_sam\.pt \(~41 MB\)"):
        models.resolve_sam_checkpoint("vit_t")


def test_download_verifies_git_blob_checksum(empty_cache, tmp_path, monkeypatch):
    source = tmp_path / "mobile_sam.pt"
    source.write_bytes(b"pretend mobile sam" * 100)
    info = models.sam_weights("vit_t")
    _with_weights(monkeypatch, "vit_t", SamWeights(info.filename, source.as_uri(), None, 1,
                                                                 git_blob_sha1="0" * 40))
    with pytest.raises(WeightsNotFound, match="checksum mismatch"):
        models.resolve_sam_checkpoint("vit_t", download=True)
    assert not list((empty_cache / "sam").glob("*"))
    _with_weights(monkeypatch, "vit_t", SamWeights(info.filename, source.as_uri(), None, 1,
                                                                 git_blob_sha1=models.git_blob_sha1(source)))
    assert models.resolve_sam_checkpoint("vit_t", download=True).read_bytes() == source.read_bytes()


class _Payload:
    """Pickled, it would run `os.system` on load: weights_only must refuse it."""

    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("kind", ["empty", "random", "pickle", "text", "not_tensors", "other_model"])
def test_bad_weight_file_gives_one_line_reason(tmp_path, kind):
    """A checkpoint that is not SAM's weights: a one-line WeightsNotFound, never a traceback
    and never code run from the file."""
    import pickle

    import numpy as np
    import torch

    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"x": _Payload()}))
    elif kind == "text":
        path.write_text("not weights\n")
    elif kind == "not_tensors":
        torch.save({"a": [1, 2, 3]}, path)
    else:
        torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(WeightsNotFound) as info:
        models.load_sam("vit_b", str(path), fast=False, device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, models.BadWeightsFile)
    if kind == "pickle":
        assert "Python objects" in message or "not a PyTorch" in message


def test_tiny_state_dict_roundtrip_through_read_state_dict(tmp_path):
    import torch

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    state = models.read_state_dict(path)
    assert set(state) == set(sam.state_dict())


def test_bad_clip_weight_file_one_line(tmp_path):
    path = tmp_path / "clip.bin"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsNotFound) as info:
        models.load_clip("ViT-B-32", "openai", checkpoint=str(path), device="cpu")
    assert "\n" not in str(info.value)
