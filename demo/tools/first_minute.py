"""The first minute on a CPU (issue 20's targets), measured in one run against an earlier checkout.

    python -m demo.tools.first_minute --baseline DIR [--json out.json]

DIR: a checkout from before the change, e.g. `git worktree add /tmp/base 67b5a68`. Runs, one
after another (let nothing else run meanwhile: two cores shared make timings meaningless):

1. the SAM image encoder (1024 x 1024 input) with precision fp32, bf16 and "auto" (chosen by
   measuring now, in a fresh cache folder), the default CPU model (vit_t) and the papers'
   vit_b: median of 5 passes each;
2. `demo.tools.bench_browser` in headless Chromium: upload -> first mask with each checkout's
   default SAM on a CPU (this checkout: vit_t; the baseline: what it defaulted to), and
   Everything -> first / all masks drawn with the trained path's 16 x 16 grid;
3. `demo.tools.bench_analysis --baseline`: Refer on a new image and after the Refer tab was
   open 15 s;
4. `demo.tools.loadtest --users 8 --seconds 120`: this checkout with the 4 x 4 and 16 x 16
   grids (Refer sent at once, as the issue's command does), and 16 x 16 with Refer typed at 6
   characters per second after focusing the box (as a person does; the focus starts the
   analysis); the baseline with its own grid.

Prints one Markdown table: each target, this checkout, the baseline. Untrained weights
throughout (timings do not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.bench.timing import cpu_info

REPO = Path(__file__).resolve().parents[2]
GRID = "16"


def run_tool(args: list[str], cwd: Path = REPO, env: dict | None = None, timeout: float = 1500) -> str:
    """stdout of `python -m <args>` in `cwd` (stderr goes to ours, for progress)."""
    print(f"$ {' '.join(args)}  (in {cwd})", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env={**os.environ, **(env or {})},
                          stdout=subprocess.PIPE, text=True, timeout=timeout)
    return done.stdout


def encoder_times(model: str) -> dict:
    """Median seconds of the fast path's image encoder per precision, and what "auto" chose."""
    code = f"""
import json, statistics, time, torch
from core.models import load_sam
from core.sam.precision import precision_of
x = torch.randn(1, 3, 1024, 1024)
out = {{}}
for p in ("fp32", "bf16", "auto"):
    sam = load_sam({model!r}, untrained=True, device="cpu", precision=p)
    with torch.inference_mode():
        sam.image_encoder(x)
        times = []
        for _ in range(5):
            t = time.perf_counter(); sam.image_encoder(x); times.append(time.perf_counter() - t)
    out[p] = round(statistics.median(times), 3)
    if p == "auto":
        out["auto_chose"] = precision_of(sam).describe()
print(json.dumps(out))
"""
    env = {"SAMCLIP_CACHE": tempfile.mkdtemp(prefix="samclip_precision_")}
    print(f"$ encoder timings of {model}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env},
                          stdout=subprocess.PIPE, text=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def browser(baseline: Path, baseline_sam: str) -> dict:
    out = Path(tempfile.mkdtemp()) / "browser.json"
    run_tool(["demo.tools.bench_browser", "--sam", "vit_t", "--clicks", "20", "--baseline", str(baseline),
              "--baseline-sam", baseline_sam, "--json", str(out)], env={"SAMCLIP_POINTS_PER_SIDE": GRID})
    return json.loads(out.read_text())["results"] if out.exists() else {}


def analysis(baseline: Path) -> dict:
    lines = run_tool(["demo.tools.bench_analysis", "--baseline", str(baseline), "--points-per-side", GRID])
    rows = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    return {row["checkout"]: row for row in rows if "checkout" in row}


def load_in(repo: Path, grid: str | None, typing_cps: float = 0.0) -> dict:
    """The load test of this checkout against the app of `repo`."""
    out = Path(tempfile.mkdtemp()) / "load.json"
    args = ["demo.tools.loadtest", "--users", "8", "--seconds", "120", "--json", str(out), "--app-repo", str(repo)]
    if typing_cps:
        args += ["--typing-cps", str(typing_cps)]
    run_tool(args, env={"SAMCLIP_POINTS_PER_SIDE": grid} if grid else {})
    return json.loads(out.read_text()) if out.exists() else {}


def _get(d: dict, *path, scale: float = 1.0, digits: int = 2):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return "-"
        d = d[key]
    return round(d * scale, digits) if isinstance(d, (int, float)) else d


def _load_row(report: dict) -> str:
    if not report:
        return "did not run"
    refer = report.get("latency", {}).get("refer", {})
    clicks = report.get("latency", {}).get("click preview", {})
    busy = report.get("latency", {}).get("click preview (others encoding)", {})
    return (f"Refer p50 {_get(refer, 'p50')} s / p95 {_get(refer, 'p95')} s; click preview p95 "
            f"{_get(clicks, 'p95')} s ({_get(busy, 'p95')} s while others encode); peak {_get(report, 'mem_peak_gb')} GB; errors {len(report.get('errors', []))}")


def table(r: dict) -> str:
    enc_t, enc_b = r["encoder"]["vit_t"], r["encoder"]["vit_b"]
    def within(e):
        fastest = min(e["fp32"], e["bf16"])
        return f"auto {e['auto']} s vs fastest {fastest} s ({(e['auto'] / fastest - 1) * 100:+.0f} %); {e['auto_chose']}"
    b, a = r["browser"], r["analysis"]
    this_b, base_b = b.get("this checkout", {}), b.get("baseline", {})
    this_a, base_a = a.get("this checkout", {}), a.get("baseline", {})
    rows = [
        ("Upload -> first mask, default model (<= 1.5 s)",
         f"{_get(this_b, 'upload_first_mask_ms', scale=1e-3)} s (vit_t)",
         f"{_get(base_b, 'upload_first_mask_ms', scale=1e-3)} s ({r['baseline_sam']})"),
        ("Encoder, precision auto within 5 % of the fastest: vit_t", within(enc_t), "-"),
        ("the same for vit_b", within(enc_b), "-"),
        ("Refer, the Refer tab open 15 s before (<= 1 s)",
         f"{_get(this_a, 'refer_after_15s_prepared_ms', scale=1e-3)} s",
         f"{_get(base_a, 'refer_cold_ms', scale=1e-3)} s (no preparation: cold)"),
        ("Refer cold, on a new image (<= 8 s)", f"{_get(this_a, 'refer_cold_ms', scale=1e-3)} s",
         f"{_get(base_a, 'refer_cold_ms', scale=1e-3)} s"),
        ("Everything, first masks drawn (<= 1.5 s)",
         f"{_get(this_b, 'everything_first_masks_ms', scale=1e-3)} s",
         "the same as all masks (none before the last)"),
        ("Everything, all masks drawn", f"{_get(this_b, 'everything_overlay_ms', scale=1e-3)} s", "-"),
        ("8 users, 4 x 4 grid, Refer sent at once", _load_row(r["load_4"]), _load_row(r["load_base"])),
        ("8 users, 16 x 16 grid, Refer sent at once", _load_row(r["load_16"]), "-"),
        ("8 users, 16 x 16 grid, Refer typed (<= 4 s p50)", _load_row(r["load_16_typed"]), "-"),
    ]
    lines = [f"CPU: {r['cpu']}; untrained weights; {time.strftime('%Y-%m-%d', time.gmtime(r['started']))}",
             "", "| target | this checkout | baseline |", "|---|---|---|"]
    lines += [f"| {a_} | {b_} | {c_} |" for a_, b_, c_ in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier checkout (git worktree)")
    parser.add_argument("--baseline-sam", default="vit_b", help="the baseline's default SAM on a CPU")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    base = args.baseline.resolve()
    r: dict = {"cpu": cpu_info().describe(), "started": time.time(), "baseline_sam": args.baseline_sam}
    r["encoder"] = {m: encoder_times(m) for m in ("vit_t", "vit_b")}
    r["browser"] = browser(base, args.baseline_sam)
    r["analysis"] = analysis(base)
    r["load_4"] = load_in(REPO, None)
    r["load_16"] = load_in(REPO, GRID)
    r["load_16_typed"] = load_in(REPO, GRID, 6.0)
    r["load_base"] = load_in(base, None)
    r["minutes"] = round((time.time() - r["started"]) / 60, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    print(table(r))
    print(f"\n(took {r['minutes']} min; load average at the end {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
