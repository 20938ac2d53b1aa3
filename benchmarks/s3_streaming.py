"""Memory while download streams a large object from S3: a real SeaweedFS on 127.0.0.1
(tests/s3.py), one
object of --gb GB (random bytes, uploaded with pose.files.storage, multipart), then `python -m
components.download`
fetching it in a child process while this one samples the child's resident memory (VmRSS) and how
many
bytes have reached the disk. Flat means: the peak RSS does not grow with the object.

    python -m benchmarks.s3_streaming [--gb 2] [--every 0.5] [--json out.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def written_bytes(output: Path) -> int:
    """Bytes of the object on disk so far: the staged file in download's temporary sibling,
    or the result."""
    found = list(output.parent.glob(f".{output.name}.tmp-*/.download-*")) + list(output.glob("*"))
    return sum(p.stat().st_size for p in found if p.is_file())


def make_object(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for index in range(size >> 20):
            out.write(block[index % 256 :] + block[: index % 256])  # no two MiB alike


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", default=None, help="also write the samples here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pose.files import storage
    from tests.s3 import make_bucket, start_seaweedfs

    size = int(args.gb * (1 << 30)) >> 20 << 20
    with tempfile.TemporaryDirectory(prefix="s3-streaming-") as work:
        work = Path(work)
        server = start_seaweedfs(work / "seaweedfs")
        try:
            make_bucket("bench")
            make_object(work / "big.bin", size)
            started = time.perf_counter()
            storage.upload_file(str(work / "big.bin"), "s3://bench/big.bin")
            upload_s = time.perf_counter() - started
            (work / "big.bin").unlink()
            output = work / "raw"
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "components.download",
                    "--source",
                    "s3://bench/big.bin",
                    "--output",
                    str(output),
                    "--allow-no-images",
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            started, samples = time.perf_counter(), []
            while child.poll() is None:
                rss = rss_mb(child.pid)
                if rss is not None:
                    samples.append(
                        {
                            "s": round(time.perf_counter() - started, 1),
                            "rss_mb": round(rss, 1),
                            "bytes": written_bytes(output),
                        }
                    )
                time.sleep(args.every)
            seconds = time.perf_counter() - started
            stderr = child.stderr.read().decode(errors="replace")
            if child.returncode != 0:
                print(stderr[-3000:], file=sys.stderr)
                return 1
            assert (output / "big.bin").stat().st_size == size
        finally:
            server.stop()
    streaming = [s for s in samples if 0 < s["bytes"] < size]
    summary = {
        "object_bytes": size,
        "upload_s": round(upload_s, 1),
        "download_s": round(seconds, 1),
        "download_mb_per_s": round(size / seconds / 1e6, 1),
        "rss_before_first_byte_mb": max([s["rss_mb"] for s in samples if s["bytes"] == 0] or [0]),
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "rss_while_streaming_mb": {
            f"{q}%": _at_fraction(streaming, size, q / 100) for q in (10, 50, 90)
        },
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    return 0


def _at_fraction(samples: list[dict], size: int, fraction: float) -> float | None:
    after = [s for s in samples if s["bytes"] >= fraction * size]
    return after[0]["rss_mb"] if after else None


if __name__ == "__main__":
    raise SystemExit(main())
