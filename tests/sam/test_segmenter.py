"""core.sam.segmenter: coordinates, sizes, cache, prompt validation, thread safety (small untrained SAM)."""
import threading

import numpy as np
import pytest

from core.io.images import load_image
from core.sam.segmenter import PromptError, Segmenter, image_key


@pytest.fixture(scope="module")
def stock_sam():
    from core.models import load_sam

    return load_sam("vit_tiny", untrained=True, fast=False, device="cpu")


def test_matches_segment_anything_predictor(stock_sam, coco_image):
    """Same prompts through our Segmenter and the stock SamPredictor give the same masks."""
    from segment_anything import SamPredictor

    image = coco_image[0]
    ours = Segmenter(stock_sam)
    emb = ours.set_image(image)
    ref = SamPredictor(stock_sam)
    ref.set_image(image)
    pts, labels, box = np.array([[120.0, 90.0], [300.0, 200.0]]), np.array([1, 0]), np.array([50, 40, 400, 300])
    for kwargs in ({"point_coords": pts[:1], "point_labels": labels[:1], "multimask_output": True},
                   {"box": box, "multimask_output": False},
                   {"point_coords": pts, "point_labels": labels, "box": box, "multimask_output": False}):
        ref_masks, ref_scores, _ = ref.predict(**kwargs)
        got = ours.predict(emb, kwargs.get("point_coords"), kwargs.get("point_labels"), kwargs.get("box"),
                           multimask=kwargs["multimask_output"])
        order = np.argsort(-ref_scores, kind="stable")
        assert np.allclose(got.scores, ref_scores[order], atol=1e-5)
        assert (got.masks == ref_masks[order]).all()


def test_shapes_at_original_size(tiny_segmenter, coco_image):
    image = coco_image[0]
    emb = tiny_segmenter.set_image(image)
    assert emb.original_size == image.shape[:2]
    assert max(emb.input_size) == 1024 and emb.features.shape == (1, 256, 64, 64)
    one = tiny_segmenter.predict(emb, points=[[10, 10]])
    assert one.masks.shape == (3,) + image.shape[:2] and one.masks.dtype == bool
    assert (np.diff(one.scores) <= 0).all() and one.logits.shape == (3, 256, 256)
    boxed = tiny_segmenter.predict(emb, box=[5, 5, 200, 100])
    assert boxed.masks.shape == (1,) + image.shape[:2]
    refined = tiny_segmenter.predict(emb, points=[[10, 10]], mask_input=one.logits[:1], multimask=False)
    assert refined.masks.shape[0] == 1


def test_very_large_image_masks_at_full_size(tiny_segmenter, coco_image):
    big = np.repeat(np.repeat(coco_image[0], 6, axis=0), 6, axis=1)  # e.g. 2880 x 3840
    emb = tiny_segmenter.set_image(big)
    pred = tiny_segmenter.predict(emb, points=[[big.shape[1] - 1, big.shape[0] - 1]], multimask=False)
    assert pred.masks.shape == (1,) + big.shape[:2]


def test_cache_hit_and_lru(stock_sam):
    seg = Segmenter(stock_sam, cache_size=2)
    a, b, c = (np.full((32, 48, 3), v, np.uint8) for v in (10, 20, 30))
    first = seg.set_image(a)
    assert seg.set_image(a.copy()) is first and seg.hits == 1 and seg.misses == 1
    seg.set_image(b), seg.set_image(c)
    assert seg.cached(image_key(a)) is None and seg.cached(image_key(c)) is not None
    assert image_key(a) != image_key(a.reshape(48, 32, 3))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "at least one point or a box"),
    ({"points": [[700, 10]]}, "outside the image"),
    ({"points": [[-1, 10]]}, "outside the image"),
    ({"points": [[10, 10]], "labels": [1, 0]}, "labels"),
    ({"points": [[10, 10]], "labels": [2]}, "positive"),
    ({"box": [10, 10, 10, 50]}, "empty or outside"),
    ({"box": [700, 500, 900, 800]}, "empty or outside"),
    ({"box": [1, 2, 3]}, "4 finite numbers"),
])
def test_bad_prompts(tiny_segmenter, coco_image, kwargs, message):
    emb = tiny_segmenter.set_image(coco_image[0])
    with pytest.raises(PromptError, match=message):
        tiny_segmenter.predict(emb, **kwargs)


def test_box_partly_outside_is_clipped(tiny_segmenter, coco_image):
    image = coco_image[0]
    emb = tiny_segmenter.set_image(image)
    assert tiny_segmenter.predict(emb, box=[-50, -50, 100, 100]).masks.shape[1:] == image.shape[:2]


def test_rejects_non_rgb_arrays(tiny_segmenter):
    with pytest.raises(ValueError, match="load_image"):
        tiny_segmenter.set_image(np.zeros((10, 10), np.uint8))


def test_concurrent_sessions_get_their_own_results(tiny_segmenter, coco_dir):
    paths = sorted((coco_dir / "images").glob("*.jpg"))[:2]
    images = [load_image(p) for p in paths]
    expected = [tiny_segmenter.predict(tiny_segmenter.set_image(im), points=[[30, 40]]).masks for im in images]
    results = [None, None]

    def session(i):
        emb = tiny_segmenter.set_image(images[i])
        results[i] = tiny_segmenter.predict(emb, points=[[30, 40]]).masks

    threads = [threading.Thread(target=session, args=(i,)) for i in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for got, want in zip(results, expected):
        assert (got == want).all()


def test_click_does_not_wait_for_another_images_encoding(stock_sam):
    """Fairness: while one image is being encoded (encoder lock held), a click on an image
    already encoded answers at once, and cache lookups do not wait either."""
    seg = Segmenter(stock_sam)
    image = np.full((64, 80, 3), 100, np.uint8)
    emb = seg.set_image(image)
    done = threading.Event()
    with seg._encode_lock:                          # another session's encoding in progress
        assert seg.encoding

        def click():
            assert seg.cached(emb.key) is emb
            seg.predict(emb, [[10, 10]], [1])
            done.set()

        worker = threading.Thread(target=click)
        worker.start()
        assert done.wait(timeout=20), "a click waited behind the encoder"
        worker.join()
    assert seg.encode_seconds is not None and seg.encode_seconds > 0


def test_same_image_encoded_once_by_concurrent_sessions(stock_sam):
    seg = Segmenter(stock_sam)
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    results = []
    threads = [threading.Thread(target=lambda: results.append(seg.set_image(image))) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert seg.misses == 1 and len({id(r) for r in results}) == 1


def test_background_work_steps_aside_while_a_click_runs():
    """An encoding thread (background) waits at its next module while a click is active,
    and resumes when the click ends; threads not marked background never wait."""
    import time

    import torch

    from core.sam.segmenter import ClickPriority

    gate = ClickPriority(max_wait_s=5.0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
    gate.install(model)
    gate.install(model)  # idempotent: one hook per module
    assert len(model[0]._forward_pre_hooks) == 1
    entered, release, done = threading.Event(), threading.Event(), []

    def click():
        with gate.click():
            entered.set()
            release.wait(5)

    def encode():
        with gate.background(), torch.inference_mode():
            model(torch.zeros(1, 4))
        done.append(time.perf_counter())

    clicker = threading.Thread(target=click)
    clicker.start()
    entered.wait(5)
    encoder = threading.Thread(target=encode)
    encoder.start()
    time.sleep(0.3)
    assert not done and gate.yields >= 1           # paused while the click is active
    with torch.inference_mode():
        model(torch.zeros(1, 4))                   # a non-background call is not held
    released = time.perf_counter()
    release.set()
    clicker.join(5)
    encoder.join(5)
    assert done and done[0] >= released


def test_background_wait_is_bounded():
    import time

    import torch

    from core.sam.segmenter import ClickPriority

    gate = ClickPriority(max_wait_s=0.05)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    gate.install(model)
    with gate.click():                             # a click that never ends ...
        start = time.perf_counter()
        with gate.background(), torch.inference_mode():
            model(torch.zeros(1, 2))
        assert time.perf_counter() - start < 1.0   # ... delays a background job only boundedly


def test_same_prompts_are_decoded_once(tiny_segmenter, coco_image):
    emb = tiny_segmenter.set_image(coco_image[0])
    before = tiny_segmenter.decodes
    first = tiny_segmenter.predict(emb, points=[[40.25, 30.5]], labels=[1])
    with pytest.raises(ValueError):
        first.masks[:] = False                               # shared answers are read-only
    again = tiny_segmenter.predict(emb, points=[[40.25, 30.5]], labels=[1])
    assert tiny_segmenter.decodes == before + 1
    fresh = tiny_segmenter._predict(emb, (np.array([[40.25, 30.5]], np.float32), np.array([1])), None, True, None)
    np.testing.assert_array_equal(again.masks, fresh.masks)
    np.testing.assert_array_equal(again.scores, fresh.scores)
    before = tiny_segmenter.decodes
    tiny_segmenter.predict(emb, points=[[40.25, 30.5]], labels=[0])          # another label: decoded
    tiny_segmenter.predict(emb, points=[[40.25, 30.5]], labels=[1], multimask=False)
    assert tiny_segmenter.decodes == before + 2


def test_prediction_cache_is_bounded():
    from core.sam.segmenter import MaskPrediction, PredictionCache

    def pred():
        return MaskPrediction(np.ones((3, 5, 7), bool), np.zeros(3, np.float32), np.zeros((3, 4, 4), np.float32))

    size = 3 * 5 * 7 + 3 * 4 + 3 * 4 * 4 * 4
    cache = PredictionCache(2 * size)
    for i in range(3):
        cache.put(("k", i), pred())
    assert cache.get(("k", 0)) is None and cache.get(("k", 2)).masks.shape == (3, 5, 7)
    assert cache.nbytes == 2 * size
    PredictionCache(size - 1).put(("big",), pred())         # bigger than the budget: not kept


def test_the_same_prompt_asked_twice_at_once_is_decoded_once(tiny_segmenter, coco_image):
    """A hover and the click on the same spot arrive together: one decoder run serves both."""
    emb = tiny_segmenter.set_image(coco_image[0])
    before, results = tiny_segmenter.decodes, []
    barrier = threading.Barrier(4)

    def ask():
        barrier.wait()
        results.append(tiny_segmenter.predict(emb, points=[[21.5, 17.25]], labels=[1]))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tiny_segmenter.decodes == before + 1 and len(results) == 4
    assert all(np.array_equal(r.masks, results[0].masks) for r in results)


def test_a_one_point_click_reports_its_decode_time_to_the_precision_check(tiny_segmenter, coco_image, monkeypatch):
    """Clicks feed core.sam.precision.observe_click (times seen in use vs the cached probe); other
    prompts (boxes, several points) are not the probe's workload and are not reported."""
    from core.sam import segmenter

    seen = []
    monkeypatch.setattr(segmenter, "observe_click", lambda choice, seconds: seen.append(seconds) or "")
    emb = tiny_segmenter.set_image(coco_image[0])
    tiny_segmenter.predict(emb, points=[[12.5, 20.0]], labels=[1])
    assert len(seen) == 1 and 0 < seen[0] < 60
    tiny_segmenter.predict(emb, points=[[12.5, 20.0], [30.0, 5.0]], labels=[1, 0])
    tiny_segmenter.predict(emb, box=[1, 2, 40, 30])
    assert len(seen) == 1
