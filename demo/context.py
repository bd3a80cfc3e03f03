"""What all sessions share: the one Engine (models), the example gallery, the large
gallery given with --gallery (opened once, memory-mapped, read-only), settings.

Created once by app.py. Read-only for sessions except `use_untrained`, the operator-level
switch the UI offers when no weights are available. Never holds per-user state.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core import config
from core.sam.automask import AutoMaskSettings
from core.engine import Engine, EngineSettings, sam_label
from core.find.instances import competitors
from core.find.vocab import TEXT_FEATURES, coco_panoptic, prompt
from core.gallery.examples import SharedGallerySet
from core.io.images import load_image
from core.views import VIEW_NAMES
from demo import settings as serving
from demo.biggallery import LargeGallery
from demo.state import UserError

REPO = Path(__file__).resolve().parents[1]
TITLE = "Find and select objects: SAM + CLIP"
EXAMPLES_DIR = REPO / "examples"


#: Automatic-mask settings used with untrained models: keep every mask (random weights
#: give low predicted IoUs) from a coarse grid, so the interface has something to show fast.
UNTRAINED_AUTOMASK = AutoMaskSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                      max_masks=16)


def release_memory() -> None:
    """Give freed heap memory back to the operating system (glibc; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory_above(limit_bytes: int) -> bool:
    """`release_memory()` when the process holds more than `limit_bytes` (0: never): trimming
    after every request would make the next one fault its scratch memory in again. True when
    it trimmed."""
    if limit_bytes <= 0 or resident_bytes() <= limit_bytes:
        return False
    release_memory()
    return True


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas: many worker threads otherwise each keep their own heap,
    and a server's memory grows with the number of threads that ever ran (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def sweep_old_files(folders: list[str], max_age_s: float, keep=frozenset()) -> None:
    """Delete files older than `max_age_s` (and folders left empty) under `folders`, except
    the paths in `keep`."""
    cutoff = time.time() - max_age_s
    kept = {str(Path(p).resolve()) for p in keep}
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):   # files before their folders
            try:
                if str(path.resolve()) in kept:
                    continue
                if path.is_file() and max(path.stat().st_mtime, path.stat().st_ctime) < cutoff:
                    path.unlink()
                elif path.is_dir() and path.stat().st_mtime < cutoff and not any(path.iterdir()):
                    path.rmdir()
            except OSError:
                pass


class ModelsUnavailable(RuntimeError):
    """The models cannot be used (missing weights, still loading); message fit for a person."""


@dataclass(frozen=True)
class AppSettings:
    """How the app behaves (not which models: that is EngineSettings)."""

    examples_dir: Path = EXAMPLES_DIR
    gallery_views: tuple[str, ...] = VIEW_NAMES   # views of the shipped gallery
    gallery_max_objects: int = 20                 # automatic masks kept per example image
    automask: AutoMaskSettings | None = None       # everything + gallery (None: per model)
    cache_dir: Path = config.CACHE_DIR / "galleries"
    display_max_side: int = 1024                  # the canvas shows images at most this big
    work_max_side: int = serving.WORK_MAX_SIDE     # bigger uploads are downscaled to this for SAM
    sam_choices: tuple[str, ...] = serving.SAM_CHOICES  # SAMs a person may switch to (per session)
    display_files: int = serving.DISPLAY_FILES     # canvas pictures kept on disk (oldest go)
    neighbours: int = 4                           # nearest objects shown per view in Compare
    gallery_path: Path | None = None              # a large gallery (`python -m core index`) to search
    page_size: int = 20                           # its hits shown per page
    page_tile_side: int = 256                     # its result tiles are at most this big


class AppContext:
    """The shared engine + example gallery + settings; thread-safe."""

    def __init__(self, engine_settings: EngineSettings, settings: AppSettings | None = None):
        self.settings = settings or AppSettings()
        self._lock = threading.Lock()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        # Pictures the canvases load (one JPEG per image content hash; not user state: any
        # session showing the same pixels gets the same file). Served by Gradio as static files.
        self.display_dir = Path(tempfile.mkdtemp(prefix="samclip_display_"))
        # Each session's downloads, one folder per session (Callbacks.files_dir), served in
        # place (a static path: Gradio makes no copy), so ending the session removes them all.
        self.files_root = Path(tempfile.mkdtemp(prefix="samclip_sessions_"))
        self._encode_seconds: dict[str, float] = {}   # SAM -> encoder time measured on this machine
        # The large gallery: opened here, once (memory-mapped, so fast); OSError / ValueError
        # (e.g. GalleryCorrupt) when it cannot be opened. Its model is checked once CLIP loads.
        self.large = LargeGallery(self.settings.gallery_path) if self.settings.gallery_path else None
        self._set_engine(Engine(engine_settings))

    def _set_engine(self, engine: Engine) -> None:
        self.engine = engine
        if self.large is not None:
            self.large.checked = False   # another CLIP model: compared again once it is loaded
        self.load_error: str | None = None
        self.loaded = threading.Event()
        s = self.settings
        self.gallery_set = SharedGallerySet(s.examples_dir, s.cache_dir, s.gallery_views,
                                            max_objects=s.gallery_max_objects,
                                            automask=self.automask_settings())

    def automask_settings(self) -> AutoMaskSettings:
        """Settings for SAM's automatic masks (looser and coarser with untrained weights)."""
        if self.settings.automask is not None:
            return self.settings.automask
        chosen = UNTRAINED_AUTOMASK if self.engine.untrained else AutoMaskSettings()
        if serving.POINTS_PER_SIDE:   # e.g. the trained path's 16 x 16 grid with untrained weights
            chosen = replace(chosen, points_per_side=serving.POINTS_PER_SIDE)
        return chosen

    # ---- models --------------------------------------------------------------------
    def load_models(self) -> bool:
        """Load SAM and CLIP now; on failure keep the message for the UI. True when loaded."""
        engine = self.engine
        try:
            engine.load()
            ok = True
        except Exception as exc:  # WeightsNotFound and anything a broken install raises
            self.load_error = str(exc) if str(exc) else type(exc).__name__
            print(f"models not loaded: {self.load_error}", file=sys.stderr)
            ok = False
        finally:
            self.loaded.set()
        return ok

    # ---- SAM models and their encoder timing ------------------------------------------
    def sam_options(self) -> list[str]:
        """SAM names a person may choose (the default first; duplicates dropped)."""
        names = [self.engine.settings.sam] + list(self.settings.sam_choices)
        return list(dict.fromkeys(n for n in names if n))

    def sam_name(self, name) -> str:
        """`name` checked against the offered SAMs (a `UserError` otherwise); accepts the label."""
        for option in self.sam_options():
            if name in (option, sam_label(option)):
                return option
        raise UserError(f"Unknown SAM model {str(name)[:40]!r}; choose one of "
                        f"{', '.join(self.sam_options())}.")

    def record_encode(self, seconds: float, model: str | None = None) -> None:
        """Remember how long SAM `model`'s image encoder took (moving average per model)."""
        model = model or self.engine.settings.sam
        with self._lock:
            old = self._encode_seconds.get(model)
            self._encode_seconds[model] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def encode_measured(self, model: str | None = None) -> float | None:
        """Measured encoder seconds of SAM `model` on this machine, None before its first encode."""
        return self._encode_seconds.get(model or self.engine.settings.sam)

    def encode_estimate(self, model: str | None = None) -> float:
        """Seconds SAM `model`'s image encoder is expected to take on this machine (measured)."""
        measured = self.encode_measured(model)
        return measured if measured is not None else 10.0

    def model_line(self, model: str | None = None) -> str:
        """"SAM vit_t -- fast (MobileSAM), encoder 0.63 s on this machine, precision fp32 (flags)"."""
        model = model or self.engine.settings.sam
        return f"SAM {model} -- {sam_label(model)}, {self.model_details(model)}"

    def model_details(self, model: str | None = None) -> str:
        """The measured part of `model_line`: encoder time and precision choice."""
        model = model or self.engine.settings.sam
        measured = self.encode_measured(model)
        timing = (f"encoder {measured:.2f} s on this machine" if measured is not None
                  else "encoder time measured on its first image")
        precision = self.engine.precision(model)
        return timing + (f", precision {precision}" if precision else "")

    def measure_encoder(self, model: str | None = None) -> float:
        """Time the encoder on small pictures (SAM resizes every image to the same input size,
        so this is the time any image takes): two passes, the warm one recorded (the first
        pays one-time costs, which made the first estimate about 3x too long)."""
        model = model or self.engine.settings.sam
        segmenter = self.engine.segmenter_for(model)
        times = []
        for stripe in (7, 5):                 # two different pictures: no embedding-cache hit
            probe = np.full((48, 64, 3), 127, np.uint8)
            probe[::stripe] = 30
            start = time.perf_counter()
            segmenter.set_image(probe)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        self.record_encode(seconds, model)
        return seconds

    def start_sweeper(self, folders: list[str], every_s: float, max_age_s: float,
                      keep=lambda: set(), also=lambda: None) -> threading.Thread:
        """Every `every_s` seconds: `sweep_old_files` under `folders` (Gradio's cache: uploads
        and the pictures it saves of gallery and image outputs), then `also()` (e.g. the
        sweep of orphaned session folders), then give freed memory back to the OS.
        `keep()` gives paths never to delete (example thumbnails, live sessions' files)."""
        def loop() -> None:
            while True:
                time.sleep(every_s)
                try:
                    sweep_old_files(folders, max_age_s, keep())
                    also()
                    release_memory()
                except Exception:
                    traceback.print_exc()

        thread = threading.Thread(target=loop, name="samclip-sweeper", daemon=True)
        thread.start()
        return thread

    def display_path(self, key: str) -> Path:
        """The canvas picture of image `key` (it may not exist)."""
        return self.display_dir / f"{key}.jpg"

    def forget_display(self, key: str) -> None:
        """Delete the canvas picture of image `key` (its last session has ended)."""
        self.display_path(key).unlink(missing_ok=True)

    def prune_display_files(self) -> int:
        """Remove the oldest canvas pictures beyond `settings.display_files`; returns how many."""
        files = sorted(self.display_dir.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
        removed = 0
        for path in files[:max(0, len(files) - self.settings.display_files)]:
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def display_url(self, key: str, image: np.ndarray, max_side: int) -> str:
        """A URL (relative to the page) of `image` as the canvas shows it: a JPEG at most
        `max_side` big, written once per content hash `key`."""
        from PIL import Image

        path = self.display_path(key)
        if not path.exists():
            pil = Image.fromarray(image)
            if max(pil.size) > max_side:
                scale = max_side / max(pil.size)
                pil = pil.resize((max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale))),
                                 Image.Resampling.LANCZOS)
            tmp = path.with_suffix(".tmp")
            pil.save(tmp, format="JPEG", quality=92)
            tmp.replace(path)
            self.prune_display_files()
        else:
            path.touch()   # recently used: pruned last
        return f"gradio_api/file={path}"

    def start(self, build_gallery: bool = True) -> threading.Thread:
        """Load models (time the encoder, then build the example gallery) in a background
        thread, so the page is up at once and says what is happening."""
        def work():
            if self.load_models():
                if self.large is not None:
                    self.large.check(self.engine.embedder.model_info)
                try:
                    self.measure_encoder()
                except Exception:
                    traceback.print_exc()
            if not self.load_error and build_gallery:
                try:
                    self.galleries()
                except Exception:
                    traceback.print_exc()
            if not self.load_error:
                self.warm_text_features()

        thread = threading.Thread(target=work, name="samclip-startup", daemon=True)
        thread.start()
        return thread

    def warm_text_features(self) -> None:
        """CLIP text features of the labelling vocabulary and find-all's competitors, computed
        at start (about 6 s on 2 cores), so the first 'Label everything' or 'Find all' does
        not pay them."""
        try:
            TEXT_FEATURES.features(self.engine.embedder, competitors("") + tuple(prompt(c) for c in coco_panoptic()))
        except Exception:
            traceback.print_exc()

    def use_untrained(self) -> threading.Thread | None:
        """Switch to untrained models (random weights, clearly labelled) -- only when the
        trained models could not be loaded, so nobody's working models can be switched away
        (the button is not an API endpoint either). Returns None when refused."""
        if not self.loaded.is_set() or not self.load_error:
            return None
        with self._lock:
            if not self.engine.untrained:
                self._set_engine(Engine(self.engine.settings.with_(untrained=True)))
        return self.start()

    def require_models(self) -> Engine:
        """The engine when its models are usable; ModelsUnavailable with the reason otherwise."""
        if not self.loaded.is_set():
            self.loaded.wait(timeout=600)
        if self.load_error:
            raise ModelsUnavailable(
                f"The models are not available: {self.load_error} -- or press 'Use untrained "
                f"models' at the top to try the interface with random weights.")
        return self.engine

    def galleries(self, progress=None) -> dict:
        """{view: Gallery} of the example images (built on first use, cached on disk)."""
        engine = self.require_models()
        return self.gallery_set.get(lambda: engine.segmenter, lambda: engine.embedder,
                                    engine.settings.sam,
                                    progress or (lambda fraction, note: None))

    def large_gallery(self) -> LargeGallery:
        """The --gallery gallery, its model checked against the loaded CLIP; UserError when
        none was given or it was built with another model."""
        large = self.large
        if large is None:
            raise UserError("No large gallery was given: start the app with --gallery PATH.")
        if not large.checked:
            large.check(self.require_models().embedder.model_info)
        if large.mismatch:
            raise UserError(f"{large.label()} cannot be searched: {large.mismatch}.")
        return large

    def large_status(self) -> str:
        """One Markdown line about the large gallery ("" when none was given)."""
        return self.large.status() if self.large is not None else ""

    # ---- banner --------------------------------------------------------------------
    def banner(self) -> str:
        """Markdown: which models run, whether they are untrained, what is missing; shared by
        all sessions, so it names the app's default SAM (the status line names a session's own)."""
        engine = self.engine
        if not self.loaded.is_set():
            return f"**Loading models** ({engine.label}) ..."
        if self.load_error:
            return ("### Model weights are missing\n"
                    f"{self.load_error}\n\n"
                    "Provide the weights as described and restart, or press **Use untrained "
                    "models** to try the interface with random weights (results are meaningless).")
        sam = engine.settings.sam   # the app's default; a session may choose another
        default = f" · default SAM {sam} -- {sam_label(sam)}"
        details = f"<details><summary>details</summary>{self.model_details(sam)}</details>"
        if engine.untrained:
            return f"**UNTRAINED MODE**: {engine.label}.{default} {details}"
        return f"Models: {engine.label}{default} {details}"

    def gallery_status(self) -> str:
        """One line about the example gallery (building progress, size, or the failure)."""
        gs = self.gallery_set
        if gs.ready:
            sizes = {v: len(g) for v, g in gs.get_ready().items()}
            return f"Example gallery: {max(sizes.values(), default=0)} objects x {len(sizes)} views."
        if gs.error:
            return f"Example gallery: build failed ({gs.error}); it is retried on the next search."
        fraction, note = gs.status()
        return f"Example gallery: {note} ({fraction:.0%})"

    # ---- source images of gallery records ------------------------------------------
    def source_image(self, source: str) -> np.ndarray:
        """The image a gallery record came from (loaded once, LRU of 32)."""
        with self._lock:
            if source in self._images:
                self._images.move_to_end(source)
                return self._images[source]
        image = load_image(source)
        with self._lock:
            self._images[source] = image
            while len(self._images) > 32:
                self._images.popitem(last=False)
        return image
