"""The public API (demo/api.py) through the real `gradio_client`, against the real app
(`app.py --untrained --sam vit_tiny --device cpu --mcp`, started once for the module) on
COCO128 images: every endpoint, masks at the image's own size (also for an image
downscaled on the way in), bad inputs as one-line messages, two callers at once, exactly the
public endpoints in `view_api()` and in the MCP tool list, and the README's example."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.api import ENDPOINTS
from demo.tools.bench_browser import App

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
pycocotools_mask = pytest.importorskip("pycocotools.mask")
gradio_client = pytest.importorskip("gradio_client")


def start_app() -> App:
    """The app with untrained vit_tiny, a small example gallery and the MCP server on."""
    return App("vit_tiny", extra=("--gallery-max-objects", "5", "--mcp"), start_timeout_s=240)


@pytest.fixture(scope="module")
def app():
    started = start_app()
    yield started
    started.close()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def images(coco_dir, tmp_path_factory) -> dict:
    """Two COCO128 images of different sizes, one upscaled past the working size (1024)."""
    paths = sorted((coco_dir / "images").glob("*.jpg"))
    sizes = {}
    for p in paths:
        with Image.open(p) as im:
            sizes.setdefault(im.size, p)
    (a_size, a), (b_size, b) = list(sizes.items())[:2]
    folder = tmp_path_factory.mktemp("api_images")
    big = folder / "big.jpg"
    with Image.open(a) as im:
        im.convert("RGB").resize((a_size[0] * 2, a_size[1] * 2)).save(big, quality=90)
    return {"a": a, "b": b, "big": big, "folder": folder}


def _file(path):
    return gradio_client.handle_file(str(path))


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _mask(rle: dict) -> np.ndarray:
    return pycocotools_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _check_masks(items: list[dict], size: tuple[int, int]) -> None:
    for item in items:
        mask = _mask(item["rle"])
        assert mask.shape == size
        x1, y1, x2, y2 = item["box"]
        assert 0 <= x1 <= x2 <= size[1] and 0 <= y1 <= y2 <= size[0]
        assert item.get("area", mask.sum()) == mask.sum()


# ------------------------------------------------------------------------------ listing
def test_view_api_lists_exactly_the_public_endpoints(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == {f"/{name}" for name in ENDPOINTS}
    assert not info["unnamed_endpoints"]
    params = [p["parameter_name"] for p in info["named_endpoints"]["/segment"]["parameters"]]
    assert params == ["image", "points", "box"]


def test_mcp_schema_lists_the_tools(app):
    with urllib.request.urlopen(app.url + "gradio_api/mcp/schema", timeout=10) as resp:
        tools = json.loads(resp.read())
    assert sorted(t["name"] for t in tools) == sorted(ENDPOINTS)
    segment = next(t for t in tools if t["name"] == "segment")
    assert "SAM" in segment["description"]
    assert "label 1 = on the object" in segment["inputSchema"]["properties"]["points"]["description"]


# ------------------------------------------------------------------------------ endpoints
def test_segment_point_and_box(client, images):
    size = _size(images["a"])
    h, w = size
    out = client.predict(_file(images["a"]), [[w / 2, h / 2, 1]], None, api_name="/segment")
    assert out["size"] == list(size) and out["candidates"]
    _check_masks(out["candidates"] + [out["best"]], size)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["best"]["png"]))))
    assert png.shape == size and np.array_equal(png > 0, _mask(out["best"]["rle"]))
    boxed = client.predict(_file(images["a"]), None, [w * 0.25, h * 0.25, w * 0.75, h * 0.75], api_name="/segment")
    _check_masks(boxed["candidates"], size)


def test_segment_downscaled_image_answers_at_original_size(client, images):
    size = _size(images["big"])
    out = client.predict(image=_file(images["big"]), points=[[size[1] - 5, size[0] - 5, 1]], api_name="/segment")
    assert out["size"] == list(size) and max(out["work_size"]) == 1024
    _check_masks(out["candidates"], size)


def test_everything(client, images):
    size = _size(images["b"])
    out = client.predict(image=_file(images["b"]), api_name="/everything")
    assert out["count"] == len(out["masks"]) >= 1
    _check_masks(out["masks"], size)


def test_refer_says_what_it_understood(client, images):
    size = _size(images["a"])
    out = client.predict(image=_file(images["a"]), expression="the second dog from the left", api_name="/refer")
    assert out["understood"]["noun"] == "dog"
    assert out["understood"]["direction"] == "left" and out["understood"]["ordinal"] == 2
    _check_masks([out["chosen"]], size)


def test_find_and_label(client, images):
    size = _size(images["b"])
    found = client.predict(image=_file(images["b"]), phrase="people", api_name="/find")
    assert found["count"] == len(found["instances"])
    _check_masks(found["instances"], size)
    labelled = client.predict(image=_file(images["b"]), vocabulary="cat, dog, person, car", api_name="/label")
    doc = labelled["instances"]
    assert doc["images"][0]["height"] == size[0] and doc["images"][0]["width"] == size[1]
    assert {c["name"] for c in labelled["categories"]} == {"cat", "dog", "person", "car"}
    for ann in doc["annotations"]:
        assert _mask(ann["segmentation"]).shape == size
    assert isinstance(labelled["panoptic"]["segments_info"], list)


def test_search_by_text_and_by_image(client, images):
    by_text = client.predict(text="a cat", k=3, thumbnails=True, api_name="/search")
    assert len(by_text["hits"]) == 3 and by_text["view"] == "crop"
    assert [h["rank"] for h in by_text["hits"]] == [1, 2, 3]
    assert all(h["source"] and len(h["box"]) == 4 for h in by_text["hits"])
    Image.open(io.BytesIO(base64.b64decode(by_text["hits"][0]["thumbnail"]))).verify()
    by_image = client.predict(image=_file(images["a"]), box=[10, 10, 200, 200], k=2, metric="l2",
                              api_name="/search")
    assert len(by_image["hits"]) == 2 and by_image["metric"] == "l2"


# ------------------------------------------------------------------------------ rules
@pytest.fixture(scope="module")
def bad_files(images) -> dict:
    folder = images["folder"]
    (folder / "notes.jpg").write_text("not a picture")
    Image.new("RGB", (10000, 5000)).save(folder / "huge.png")
    return {"text": folder / "notes.jpg", "huge": folder / "huge.png"}


BAD = [
    ("not an image", "everything", lambda f, i: {"image": _file(f["text"])}, "is not an image the app can read"),
    ("50 MP image", "everything", lambda f, i: {"image": _file(f["huge"])}, "megapixels"),
    ("empty phrase", "find", lambda f, i: {"image": _file(i["a"]), "phrase": "  "}, "Type what to find"),
    ("no noun", "find", lambda f, i: {"image": _file(i["a"]), "phrase": "on the left"}, "no noun found"),
    ("point outside", "segment", lambda f, i: {"image": _file(i["a"]), "points": [[5000, 10, 1]]},
     "is outside the image"),
    ("no prompt", "segment", lambda f, i: {"image": _file(i["a"])}, "Give at least one point"),
    ("long text", "refer", lambda f, i: {"image": _file(i["a"]), "expression": "x" * 300}, "the limit is"),
    ("nothing to search", "search", lambda f, i: {"text": ""}, "Give a text to search for"),
    ("no large gallery", "search", lambda f, i: {"text": "cat", "gallery": "large"}, "No large gallery"),
]


@pytest.mark.parametrize("what,endpoint,kwargs,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line(client, app, images, bad_files, what, endpoint, kwargs, expected):
    with pytest.raises(Exception) as caught:
        client.predict(**kwargs(bad_files, images), api_name=f"/{endpoint}")
    message = str(caught.value)
    assert expected in message and "\n" not in message and "Traceback" not in message
    assert "Traceback" not in app.log_text()


def test_two_callers_at_once_get_their_own_answers(app, images):
    results, errors = {}, []

    def call(key):
        try:
            c = gradio_client.Client(app.url, verbose=False)
            path = images[key]
            h, w = _size(path)
            results[key] = c.predict(_file(path), [[w / 3, h / 3, 1]], None, api_name="/segment")
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for key in ("a", "b"):
        assert results[key]["image"] == images[key].name
        _check_masks(results[key]["candidates"], _size(images[key]))


def test_readme_python_example_runs(app, images):
    text = (REPO / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("http://127.0.0.1:7860/", app.url).replace("photo.jpg", str(images["a"]))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)   # noqa: S102 (our own README's example)
    assert scope["best"]["rle"]["size"] == list(_size(images["a"]))


# ------------------------------------------------------ only files sent with the request
#: Each endpoint's data with the image argument left as None (filled in by `_call_raw`).
RAW_ARGS = {"segment": [None, [[10, 10, 1]], None], "everything": [None], "refer": [None, "the cat"],
            "find": [None, "cats"], "label": [None, ""],
            "search": ["", None, None, 8, "crop", "cosine", "examples", False]}
META = {"_type": "gradio.FileData"}


def _call_raw(app, endpoint: str, image) -> str:
    """POST /gradio_api/call/<endpoint> with `image` as the image argument; the event stream's text."""
    import httpx

    data = list(RAW_ARGS[endpoint])
    data[data.index(None)] = image
    base = app.url.rstrip("/")
    event = httpx.post(f"{base}/gradio_api/call/{endpoint}", json={"data": data}, timeout=60).json()
    return httpx.get(f"{base}/gradio_api/call/{endpoint}/{event['event_id']}", timeout=120).text


def _hostile_inputs(images) -> dict:
    """Ways to name a file on the server that Gradio did not receive for this request."""
    from gradio.utils import get_upload_folder   # the app runs with this process's environment

    upload = Path(get_upload_folder())
    trap = upload / "samclip-test-symlink"
    trap.mkdir(parents=True, exist_ok=True)
    link = trap / "linked.jpg"
    if not link.is_symlink():
        link.symlink_to(images["a"])
    real = str(images["a"])
    dotted = str(upload / ".." / os.path.relpath(real, upload.parent))
    return {"plain path": real, "dict without meta": {"path": real},
            "dict without meta, missing file": {"path": real + ".missing.jpg"},
            "plain path, missing file": real + ".missing.jpg",
            "path with ..": {"path": dotted}, "path with .. and meta": {"path": dotted, "meta": META},
            "symlink in the upload folder": {"path": str(link), "meta": META},
            "symlink, no meta": str(link),
            "file:// URL": f"file://{real}", "file:// URL with meta": {"path": f"file://{real}", "meta": META}}


NOT_RECEIVED = "Paths on the server are not accepted"
NOT_FETCHED = "The image URL could not be fetched"


def _local_url(app) -> str:
    """A URL to a server on the app's own machine (here: the app itself)."""
    return app.url + "gradio_api/file=examples/coffee.jpg"


@pytest.mark.parametrize("endpoint", sorted(RAW_ARGS))
def test_api_never_opens_a_server_path(app, images, endpoint):
    """Every endpoint refuses server paths, `..`, symlinks and file:// URLs, with ONE message
    that does not depend on whether the file exists (before the fix a plain path was opened,
    and a path Gradio refused got Gradio's anonymous error)."""
    h, w = _size(images["a"])
    answers = {}
    for what, image in _hostile_inputs(images).items():
        text = _call_raw(app, endpoint, image)
        assert "event: error" in text and "event: complete" not in text, (what, text[:300])
        assert f"{h}, {w}" not in text and "Traceback" not in text, what
        answers[what] = text
    assert len(set(answers.values())) == 1, answers
    assert NOT_RECEIVED in answers["plain path"]
    local = _call_raw(app, endpoint, {"path": _local_url(app), "meta": META})
    assert "event: error" in local and NOT_FETCHED in local, local[:300]
    assert "Traceback" not in app.log_text()


#: Each endpoint's other arguments, by name, for gradio_client and MCP.
KWARGS = {"segment": {"points": [[10, 10, 1]]}, "everything": {}, "refer": {"expression": "the cat"},
          "find": {"phrase": "cats"}, "label": {}, "search": {}}


@pytest.mark.parametrize("endpoint", sorted(KWARGS))
def test_gradio_client_cannot_name_a_server_path(client, app, images, endpoint):
    """What gradio_client passes through unchanged (a string, a dict without meta, a file://
    URL) is refused with one message; a URL to the server's own machine with a clear one."""
    real = str(images["a"])
    messages = set()
    for image in (real, real + ".missing.jpg", {"path": real}, {"path": real + ".missing.jpg"}, f"file://{real}"):
        with pytest.raises(Exception) as caught:
            client.predict(image=image, **KWARGS[endpoint], api_name=f"/{endpoint}")
        messages.add(str(caught.value))
    assert len(messages) == 1 and NOT_RECEIVED in messages.pop()
    with pytest.raises(Exception) as caught:
        client.predict(image=gradio_client.handle_file(_local_url(app)), **KWARGS[endpoint], api_name=f"/{endpoint}")
    assert NOT_FETCHED in str(caught.value)


# ---------------------------------------------------------------------- MCP, real client
def _mcp(app, work):
    """Run `work(session)` in an MCP client session over streamable HTTP against the app."""
    import asyncio

    mcp_client = pytest.importorskip("mcp")
    from mcp.client.streamable_http import streamablehttp_client

    async def main():
        async with streamablehttp_client(app.url + "gradio_api/mcp/") as (read, write, _):
            async with mcp_client.ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    # in a thread of its own: an earlier test in the same process (Playwright's sync API)
    # may have left an event loop running in this one, where asyncio.run() refuses to start
    import threading

    result: dict = {}

    def runner():
        try:
            result["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join(300)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _data_uri(path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def test_mcp_tools_have_typed_arguments_and_say_how_to_pass_an_image(app):
    async def work(session):
        return (await session.list_tools()).tools

    tools = {t.name: t for t in _mcp(app, work)}
    assert sorted(tools) == sorted(ENDPOINTS)
    props = tools["segment"].inputSchema["properties"]
    points = next(o for o in props["points"].get("oneOf", props["points"].get("anyOf", [props["points"]]))
                  if o.get("type") == "array")
    assert points["items"] == {"type": "array", "items": {"type": "number"}}
    box = next(o for o in props["box"].get("oneOf", props["box"].get("anyOf", [props["box"]]))
               if o.get("type") == "array")
    assert box["items"] == {"type": "number"}
    assert "x from the left edge and y from the top" in props["points"]["description"]
    assert "[x0, y0, x1, y1]" in props["box"]["description"] and "exclusive" in props["box"]["description"]
    for name, tool in tools.items():
        image = tool.inputSchema["properties"]["image"]
        assert "data: URI" in image["description"] and "http(s) URL" in image["description"], name


def test_mcp_answers_are_json(app, images):
    h, w = _size(images["a"])

    async def work(session):
        seg = await session.call_tool("segment", {"image": _data_uri(images["a"]), "points": [[w / 2, h / 2, 1]]})
        found = await session.call_tool("find", {"image": _data_uri(images["a"]), "phrase": "cats"})
        bad = await session.call_tool("segment", {"image": _data_uri(images["a"]), "points": [[w * 9, 1, 1]]})
        return seg, found, bad

    seg, found, bad = _mcp(app, work)
    answer = json.loads(seg.content[0].text)              # JSON, not Python's repr
    assert answer["size"] == [h, w] and _mask(answer["best"]["rle"]).shape == (h, w)
    doc = json.loads(found.content[0].text)
    assert doc["count"] == len(doc["instances"])
    assert "None" not in found.content[0].text and "'" not in found.content[0].text[:40]
    assert bad.isError and "outside the image" in bad.content[0].text


def test_mcp_search_by_image(app, images):
    """The optional image of /search is a file to MCP too (a data: URI is turned into one)."""
    async def work(session):
        return await session.call_tool("search", {"image": _data_uri(images["a"]), "box": [10, 10, 200, 200], "k": 2})

    result = _mcp(app, work)
    assert not result.isError, result.content[0].text
    answer = json.loads(result.content[0].text)
    assert len(answer["hits"]) == 2 and answer["query"].startswith("the box of")


def test_mcp_tools_never_open_a_server_path(app, images):
    """Every tool refuses a server path, a file:// URL, a file dict (Gradio's MCP layer takes
    only strings) and a URL to the server's own machine (a clear message, not Gradio's
    anonymous error); no answer carries the file's size."""
    real, h, w = str(images["a"]), *_size(images["a"])
    hostile = [real, real + ".missing.jpg", f"file://{real}", {"path": real},
               {"path": real, "meta": META}]

    async def work(session):
        out = {}
        for name, kwargs in KWARGS.items():
            for i, image in enumerate(hostile + [_local_url(app)]):
                out[name, i] = await session.call_tool(name, {"image": image, **kwargs})
        return out

    results = _mcp(app, work)
    for (name, i), result in results.items():
        text = " ".join(getattr(c, "text", "") for c in result.content)
        assert result.isError, (name, i, text[:200])
        assert f"[{h}, {w}]" not in text and "Traceback" not in text
        if i == len(hostile):
            assert NOT_FETCHED in text, (name, text)
    same = {" ".join(c.text for c in results[name, i].content).replace(".missing.jpg", "")
            for name in KWARGS for i in (0, 1)}
    assert len(same) == 1   # a missing path answers like an existing one
