"""How fast RefShapes generates: images per second with 1 and 2 worker processes at 256 px.

Writes ``benchmarks/results/refshapes_generation.json`` with the machine, the date, the
command, the measured rates and the projected time for the default splits (24,000 images).

    python benchmarks/bench_refshapes.py                # 200 images per setting
    python benchmarks/bench_refshapes.py --images 400 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rislib.data import DEFAULT_COUNTS, generate_refshapes


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker pool)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="train images generated per setting")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--generalized", action="store_true", help="also write gRefShapes (as the course does)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "refshapes_generation.json"))
    args = parser.parse_args(argv)

    total_default = sum(DEFAULT_COUNTS.values())
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    for workers in args.workers:
        tmp = Path(tempfile.mkdtemp(prefix="refshapes_bench_"))
        try:
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            summary = generate_refshapes(
                tmp, seed=0, size=args.size, counts={"train": args.images}, generalized=args.generalized,
                workers=workers, progress=False,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_before
            disk = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rate = args.images / seconds
        results.append(
            {
                "workers": workers,
                "images": args.images,
                "seconds": round(seconds, 2),
                "images_per_s": round(rate, 2),
                "cpu_seconds_per_image": round(cpu / args.images, 4),
                "images_per_s_if_cores_were_free": round(min(workers, os.cpu_count() or 1) * args.images / cpu, 2),
                "refs": summary["refs"]["train"],
                "sentences": summary["sentences"]["train"],
                "bytes_per_image": int(disk / args.images),
                "projected_default_splits_min": round(total_default / rate / 60, 1),
                "projected_default_splits_min_if_cores_were_free": round(
                    total_default * cpu / args.images / min(workers, os.cpu_count() or 1) / 60, 1
                ),
            }
        )
        print(
            f"workers={workers}: {rate:.1f} images/s -> {total_default} images in {total_default / rate / 60:.1f} min"
        )
    record = {
        "benchmark": "RefShapes generation speed",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_refshapes.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "description": f"{os.cpu_count()}-core CPU",
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": None if load_before is None else round(load_before[0], 2),
            "python": platform.python_version(),
        },
        "size": args.size,
        "generalized": args.generalized,
        "default_split_images": total_default,
        "results": results,
        "note": "images_per_s is wall-clock on a machine that may be shared (see the load average); "
        "cpu_seconds_per_image does not depend on the load, and images_per_s_if_cores_were_free = workers / "
        "cpu_seconds_per_image is the rate with that many idle cores",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
