#!/usr/bin/env python3
"""mediabot vs Pillow, side by side in one run, as whole processes (wall time + peak RSS).

Runs `mediabot image <op>` and `../shared/bench/pillow_baseline.py --op <op>` on the same
inputs, alternating, N times each, and prints a Markdown table of medians: wall ms, peak RSS
MiB, output bytes, and PSNR / SSIM (luma, 8x8 windows) of each output against the same
reference (the decoded, upright input, Lanczos-resized by Pillow to the output size).

Setup: python3 -m venv .venv && .venv/bin/pip install Pillow pilmoji numpy
Usage: .venv/bin/python bench/compare.py --mediabot target/release/mediabot [--runs 5]
         [--emoji-dir DIR]   (Twemoji PNGs, e.g. npm emoji-datasource-twitter img/twitter/64)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared"))
BASELINE = os.path.join(SHARED, "bench", "pillow_baseline.py")
INPUTS = [
    "testdata/bench/heavy_4000x3000_q95.jpg",
    "testdata/bench/heavy_6000x4000_q95.jpg",
    "testdata/photos/large_nokia83_9mp_gps.jpg",
    "testdata/photos/large_olympus_ep3_12mp.jpg",
]
CAPTION = "Привет, мир! Тестовая подпись"
CAPTION_EMOJI = "Привет, мир! 👋🔥 Тестовая подпись ❤️"
OPS = {  # pillow op name -> mediabot image args (after IN OUT)
    "compress_for_api": ["compress-for-api"],
    "fit_for_telegram": ["fit"],
    "add_text": ["overlay", "--text", CAPTION],
    "add_text_emoji": ["overlay", "--text", CAPTION_EMOJI],
}


def timed(cmd):
    """(wall ms, peak RSS MiB) of one process: wall from a monotonic clock around the whole
    process (GNU time's %e has 10 ms steps), peak RSS from GNU time's %M."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "TIME %M"] + cmd, capture_output=True, text=True)
    wall = (time.perf_counter() - t0) * 1000
    if res.returncode != 0:
        raise RuntimeError(f"{cmd}: {res.stderr.strip()}")
    line = [l for l in res.stderr.splitlines() if l.startswith("TIME ")][-1]
    return wall, int(line.split()[1]) / 1024


def luma(img):
    return np.asarray(img.convert("L"), dtype=np.float64)


def quality(out_path, ref):
    out = Image.open(out_path)
    r = ref if ref.size == out.size else ref.resize(out.size, Image.LANCZOS)
    a, b = luma(out), luma(r)
    mse = np.mean((a - b) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
    # Mean SSIM over non-overlapping 8x8 windows.
    h, w = (a.shape[0] // 8) * 8, (a.shape[1] // 8) * 8
    a = a[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    b = b[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = a.mean(1), b.mean(1)
    va, vb = a.var(1), b.var(1)
    cov = ((a - ma[:, None]) * (b - mb[:, None])).mean(1)
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return psnr, float(ssim.mean()), out.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mediabot", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--emoji-dir", default=os.environ.get("TWEMOJI_PNG_DIR"))
    ap.add_argument("--ops", default=",".join(OPS))
    a = ap.parse_args()
    ops = [o for o in a.ops.split(",") if o != "add_text_emoji" or a.emoji_dir]
    work = tempfile.mkdtemp(prefix="mediabot-bench-")
    print("| input | op | mediabot ms | Pillow ms | speed-up | mediabot MiB | Pillow MiB | mem ratio "
          "| mediabot bytes | Pillow bytes | size ratio | PSNR mb / Pil (dB) | SSIM mb / Pil |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rel in INPUTS:
        src = os.path.join(SHARED, rel)
        stem = os.path.splitext(os.path.basename(src))[0]
        ref = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        for op in ops:
            mb_out = os.path.join(work, f"{stem}.{op}.mediabot.jpg")
            pil_dir = os.path.join(work, "pillow")
            pil_out = os.path.join(pil_dir, f"{stem}.{op}.jpg")
            mb_cmd = [a.mediabot, "image", OPS[op][0], src, mb_out] + OPS[op][1:]
            pil_cmd = [sys.executable, BASELINE, src, pil_dir, "--op", op]
            if a.emoji_dir:
                pil_cmd += ["--emoji-dir", a.emoji_dir]
            mb_t, pil_t = [], []
            for _ in range(a.runs):  # alternate, so machine noise hits both alike
                mb_t.append(timed(mb_cmd))
                pil_t.append(timed(pil_cmd))
            mb_ms, pil_ms = statistics.median(t for t, _ in mb_t), statistics.median(t for t, _ in pil_t)
            mb_mem, pil_mem = max(m for _, m in mb_t), max(m for _, m in pil_t)
            mb_b, pil_b = os.path.getsize(mb_out), os.path.getsize(pil_out)
            q_mb, q_pil = quality(mb_out, ref), quality(pil_out, ref)
            print(f"| {os.path.basename(src)} | {op} | {mb_ms:.0f} | {pil_ms:.0f} | {pil_ms / mb_ms:.2f}× "
                  f"| {mb_mem:.0f} | {pil_mem:.0f} | {mb_mem / pil_mem:.2f} | {mb_b} | {pil_b} "
                  f"| {mb_b / pil_b:.3f} | {q_mb[0]:.2f} / {q_pil[0]:.2f} | {q_mb[1]:.4f} / {q_pil[1]:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
