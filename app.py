"""Launch the Gradio app (what `make run` and a Hugging Face Space run).

    python app.py [--untrained] [--sam vit_t|vit_b] [--clip ViT-B-32 --pretrained openai] [--port N]
                  [--gallery PATH]     # also search a gallery made by `python -m core index`
                  [--mcp]              # also serve the API (demo/api.py) as MCP tools

SAM: --sam, else $SAMCLIP_SAM_MODEL, else `core.models.default_sam_model` of the device
(vit_t on a CPU, vit_b on a GPU), the same default as the command line's.
Port: --port, else $GRADIO_SERVER_PORT, else 7860. Host: --host, else $GRADIO_SERVER_NAME,
else 0.0.0.0 (what Spaces expects). Models load in the background so the page is up at
once; when weights are missing it says so and offers the untrained mode. On a ZeroGPU
Space the model-using callbacks run under `spaces.GPU`. A --gallery (else $SAMCLIP_GALLERY)
is opened once, memory-mapped, and shared by every session; one that cannot be opened stops
the start with a message.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.gallery.browse import GALLERY_ENV, gallery_path_from_env
from core.cli.args import add_model_arguments, engine_settings_from_args
from core.views import VIEW_NAMES
from demo import settings as serving
from demo.context import AppContext, AppSettings, limit_malloc_arenas
from demo.shell import CSS, PAGE_JS, build_demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Find and select objects: SAM + CLIP (Gradio app)")
    add_model_arguments(parser)
    app = parser.add_argument_group("app")
    app.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                     help="port (default $GRADIO_SERVER_PORT or 7860)")
    app.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                     help="interface to listen on (default $GRADIO_SERVER_NAME or 0.0.0.0)")
    app.add_argument("--gallery-views", default=",".join(VIEW_NAMES),
                     help="views of the example gallery, comma-separated (default: all)")
    app.add_argument("--gallery-max-objects", type=int, default=20,
                     help="automatic masks kept per example image (default %(default)s)")
    app.add_argument("--no-prebuild", action="store_true",
                     help="build the example gallery on the first search, not at start")
    app.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    app.add_argument("--mcp", action="store_true", default=serving.MCP_SERVER,
                     help="also serve the API as MCP tools at /gradio_api/mcp/ (default $SAMCLIP_MCP)")
    # -- a large gallery built with `python -m core index` (opened memory-mapped; see core/gallery/browse.py)
    app.add_argument("--gallery", default=gallery_path_from_env(), metavar="PATH",
                     help=f"a gallery folder made by `python -m core index` (default ${GALLERY_ENV})")
    args = parser.parse_args(argv)
    if args.gallery and not Path(args.gallery).is_dir():   # opened (once) by make_context
        parser.error(f"--gallery {args.gallery}: no such folder")
    views = tuple(v.strip() for v in args.gallery_views.split(",") if v.strip())
    unknown = [v for v in views if v not in VIEW_NAMES]
    if unknown or not views:
        parser.error(f"--gallery-views: unknown {unknown or 'empty list'}; choose from {', '.join(VIEW_NAMES)}")
    args.gallery_views = views
    if args.gallery_max_objects < 1:
        parser.error("--gallery-max-objects must be at least 1")
    return args


def gpu_decorator():
    """`spaces.GPU` on a Hugging Face ZeroGPU Space, else None."""
    try:
        import spaces  # noqa: F401  (only on Hugging Face Spaces)
    except ImportError:
        return None
    return spaces.GPU  # a no-op outside ZeroGPU hardware


def make_context(args: argparse.Namespace) -> AppContext:
    """The shared context of the parsed `args`: models (loaded later by `start`), example
    gallery settings, and the --gallery gallery opened now (OSError / ValueError when it
    cannot be: missing, damaged)."""
    return AppContext(engine_settings_from_args(args), AppSettings(
        gallery_views=args.gallery_views, gallery_max_objects=args.gallery_max_objects,
        gallery_path=Path(args.gallery) if args.gallery else None))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_malloc_arenas()
    try:
        ctx = make_context(args)
    except (OSError, ValueError) as exc:   # a bad gallery fails at start, not at the first search
        print(f"app.py: error: --gallery: {exc}", file=sys.stderr)
        return 2
    if ctx.large is not None:
        print(f"gallery: {ctx.large.status()}", file=sys.stderr)
    print(f"starting: {ctx.engine.label}; SAM choices {', '.join(ctx.sam_options())}", file=sys.stderr)
    gpu = gpu_decorator()
    # On ZeroGPU the GPU exists only inside decorated callbacks: build the gallery there.
    ctx.start(build_gallery=not args.no_prebuild and gpu is None)
    demo = build_demo(ctx, gpu=gpu)
    # Each kind of work has its own concurrency group (demo/shell.py); this default only
    # covers events without one. Uploads over the limit are refused before they are stored.
    demo.queue(default_concurrency_limit=2, max_size=256)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, js=PAGE_JS,
                ssr_mode=False, show_error=False, allowed_paths=[str(ctx.settings.examples_dir)],
                max_file_size=serving.MAX_UPLOAD_BYTES, mcp_server=args.mcp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
