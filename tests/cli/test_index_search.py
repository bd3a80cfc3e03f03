"""`python -m core index/search`: every argument checked before any work, never exit 0
having done nothing, append/resume flags, the Ray pipeline equal to the in-process one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = ["--untrained", "--sam", "vit_tiny", "--device", "cpu"]


def run(*args, check=True, timeout=300):
    env = {**os.environ, "SAMCLIP_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.mark.parametrize("args, reason", [
    (["--limit", "0"], "--limit must be at least 1"),
    (["--max-objects", "0"], "--max-objects must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 0"),
    (["--recall-target", "2"], "recall_target"),
    (["--oracle-masks"], "need --coco"),
    (["--append", "--overwrite"], "not both"),
    (["--coco", "/no/such.json"], "no such file"),
])
def test_index_rejects_bad_settings_before_loading_anything(tmp_path, args, reason):
    proc = run("index", "--images", str(REPO / "examples"), "--out", str(tmp_path / "g"), *args, *MODELS,
               check=False, timeout=60)
    assert proc.returncode == 2 and reason in proc.stderr, proc.stderr
    assert "UNTRAINED" not in proc.stderr  # failed before the models were built
    assert not (tmp_path / "g").exists()


def test_index_rejects_bad_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run("index", "--images", str(REPO / "examples"), "--out", str(tmp_path / "file"), *MODELS, check=False)
    assert proc.returncode == 2 and "is a file" in proc.stderr
    proc = run("index", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "g"), *MODELS, check=False)
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("index", "--images", str(empty), "--out", str(tmp_path / "g"), *MODELS, check=False)
    assert proc.returncode == 2 and "no images" in proc.stderr
    proc = run("search", str(tmp_path / "nope"), "--text", "dog", "-k", "0", *MODELS, check=False)
    assert proc.returncode == 2 and "-k must be at least 1" in proc.stderr


@pytest.mark.slow
def test_unreadable_folder_fails(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.png").write_bytes(b"not a png")
    proc = run("index", "--images", str(bad), "--out", str(tmp_path / "g"), *MODELS, check=False)
    assert proc.returncode == 2 and "nothing indexed" in proc.stderr and "2 unreadable" in proc.stderr
    assert not (tmp_path / "g" / "CURRENT").exists()


def test_no_thumbnails_flag_maps_to_the_settings():
    from core.cli.commands import index_settings_from_args
    from core.cli.main import build_parser

    base = ["index", "--images", "x", "--out", "y"]
    parse = build_parser().parse_args
    assert index_settings_from_args(parse(base)).thumbnails
    assert not index_settings_from_args(parse(base + ["--no-thumbnails"])).thumbnails


@pytest.mark.slow
def test_index_append_then_search_pages(tmp_path, coco_dir):
    common = ["--coco", str(coco_dir / "instances.json"), "--images", str(coco_dir / "images"), "--oracle-masks",
              "--out", str(tmp_path / "g"), *MODELS]
    first = json.loads(run("index", "--limit", "2", "--no-thumbnails", *common).stdout)
    assert first["images_new"] == 2 and first["index"]["kind"] == "flat" and not (tmp_path / "g" / "thumbs").exists()
    proc = run("index", "--limit", "3", *common, check=False)
    assert proc.returncode == 2 and "--append" in proc.stderr
    second = json.loads(run("index", "--limit", "3", "--append", *common).stdout)
    assert second["images_skipped"] == 2 and second["images_new"] == 1
    assert second["objects_total"] == first["objects_total"] + second["objects_added"]
    assert len(list((tmp_path / "g" / "thumbs").glob("*/*/*.jpg"))) == second["objects_added"]  # the new image's
    page1 = [json.loads(l) for l in run("search", str(tmp_path / "g"), "--text", "a dog", "-k", "3", *MODELS).stdout.splitlines()]
    page2 = [json.loads(l) for l in run("search", str(tmp_path / "g"), "--text", "a dog", "-k", "3", "--offset", "3",
                                        *MODELS).stdout.splitlines()]
    assert [h["rank"] for h in page1 + page2] == list(range(6))
    assert not {h["id"] for h in page1} & {h["id"] for h in page2}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_pipeline_gives_the_in_process_gallery(tmp_path, coco_dir, workers):
    from core.gallery.ray_runner import ray_available

    reason = ray_available()
    if reason:
        pytest.skip(reason)
    from core.gallery.gallery import Gallery

    # one fixed precision: "auto" may be measured again in each process (a choice made under
    # load is not kept), and the driver and the actors must run the same numerics
    common = ["--coco", str(coco_dir / "instances.json"), "--images", str(coco_dir / "images"), "--limit", "3",
              "--checkpoint-every", "2", *MODELS, "--sam-precision", "fp32"]
    run("index", *common, "--out", str(tmp_path / "local"))
    # 2 workers on 2 CPUs: 4 actors and the read tasks must fit together (this once stalled)
    proc = run("index", *common, "--out", str(tmp_path / "ray"), "--ray", "--ray-cpus", "2",
               "--ray-workers", str(workers), timeout=600)
    assert json.loads(proc.stdout)["images_new"] == 3
    a, b = Gallery.load(tmp_path / "local"), Gallery.load(tmp_path / "ray")
    assert len(a) > 3 and list(a.records) == list(b.records)
    thumbs = [sorted(p.relative_to(d) for p in (d / "thumbs").glob("*/*/*.jpg"))
              for d in (tmp_path / "local", tmp_path / "ray")]
    assert len(thumbs[0]) == len(a) and thumbs[0] == thumbs[1]   # rendered by the actors, written by the driver
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
    q = a.embeddings
    assert [[h.id for h in hits] for hits in a.search(q, 3)] == [[h.id for h in hits] for hits in b.search(q, 3)]
