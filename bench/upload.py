"""Benchmark the upload service: tus-js-client over loopback against ``cp`` on the same disk.

What it measures
----------------
One random file (``--size-mb``, default 1024) in a temporary directory
(``$TMPDIR``); the copy, the staged upload and ``sources/`` all land in that
same directory, so everything runs on one disk. Then, in each round:

- cp:   ``cp SRC DST`` on the same disk: the physical limit here (both
        files are in the page cache, as the upload's source is);
- disk: ``vidpipe serve`` with ``upload.store: local`` (staged in
        ``{data_dir}/uploads``, then hard-linked to ``sources/{sha256}``);
- s3:   ``vidpipe serve`` with ``upload.store: s3`` against moto's server
        (``moto_server``, a separate process): S3 multipart parts spooled
        through local disk, completed, streamed back once for the sha256,
        copied server-side to ``sources/{sha256}``.

Each upload is tus-js-client (Node, ``tests/tus/upload.mjs``) with
``--chunk-mb`` (8) MiB PATCHes, timed from the client's start to its exit.
The final PATCH returns after the completion (sha256 pass, move into
``sources/``, catalog registration), so that is inside the time. The
servers run with ``upload.dispatch: none`` (no Prefect). MB/s is 10^6
bytes per second. The server's peak RSS is VmHWM from /proc after the
upload. ``others`` is the share of the CPUs that processes other than the
client, the server and moto used meanwhile (from /proc/stat; the embedded
PostgreSQL counts as other): compare figures only from runs where it is low.

Run: ``.venv/bin/python bench/upload.py`` (1 GiB, 1 round; a few minutes),
``--smoke`` (16 MiB, one round, well under a minute; what CI runs). The
last line is ``RESULT upload disk=… s3=… cp=… MB/s disk/cp=… s3/cp=… rss_disk=… rss_s3=… MiB``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.uploads import TUS_JS, UploadServer  # noqa: E402

MIB = 1024 * 1024


def _cpu_times() -> tuple[float, float]:
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _own_cpu(pids: list[int]) -> float:
    ticks = 0.0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(float(x) for x in parts[11:15])  # utime stime cutime cstime
        except (FileNotFoundError, IndexError):
            pass
    return ticks


class Others:
    """The share of all CPUs that processes other than ``pids`` used meanwhile."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.busy0, self.total0 = _cpu_times()
        self.own0 = _own_cpu(pids) + _own_cpu([os.getpid()])

    def share(self) -> float:
        busy, total = _cpu_times()
        own = _own_cpu(self.pids) + _own_cpu([os.getpid()]) - self.own0
        return max(0.0, (busy - self.busy0 - own) / max(1.0, total - self.total0))


def _make_source(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MIB))
            fh.write(block)
            left -= len(block)


def _time_cp(src: Path, dest: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sync", "-f", str(dest)], check=True)
    wall = time.perf_counter() - t0
    dest.unlink()
    return wall


def _upload(server: UploadServer, src: Path, chunk: int, helpers: list[int]) -> tuple[float, float]:
    """(wall seconds, others share) of one tus-js-client upload; ``helpers`` (moto) count
    as part of the run, not as others."""
    opts = {"file": str(src), "endpoint": server.files, "chunkSize": chunk, "retryDelays": None}
    argv = ["node", str(TUS_JS / "upload.mjs"), json.dumps(opts)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    others = Others([server.proc.pid, proc.pid, *helpers])
    out, err = proc.communicate(timeout=3600)
    wall = time.perf_counter() - t0
    share = others.share()
    if proc.returncode != 0:
        raise SystemExit(f"tus-js-client failed:\n{out}\n{err}")
    url = json.loads(out.strip().splitlines()[-1])["url"]
    with urllib.request.urlopen(url, timeout=30) as resp:
        status = json.loads(resp.read())
    if status["status"] != "completed":
        raise SystemExit(f"upload did not complete: {status}")
    return wall, share


def _moto(port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="file size, MiB (default 1024)")
    ap.add_argument("--chunk-mb", type=int, default=8, help="PATCH size, MiB (default 8)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    ap.add_argument("--smoke", action="store_true", help="16 MiB, one round")
    ap.add_argument("--json", type=Path, help="write the raw samples here")
    args = ap.parse_args()
    if args.smoke:
        args.size_mb, args.rounds = 16, 1
    if not (TUS_JS / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=TUS_JS,
                       check=True)  # fmt: skip
    size, chunk = args.size_mb * MIB, args.chunk_mb * MIB
    env = {"VIDPIPE_UPLOAD__MAX_SIZE_MB": str(max(args.size_mb * 2, 64)),
           "VIDPIPE_UPLOAD__DISPATCH": "none", "PREFECT_API_URL": ""}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="vidpipe-bench-upload-"))
    samples: dict[str, list[tuple[float, float]]] = {"cp": [], "disk": [], "s3": []}
    rss: dict[str, float] = {}
    moto = None
    try:
        src = work / "source.bin"
        print(f"source: {args.size_mb} MiB random bytes in {work}; PATCH {args.chunk_mb} MiB; "
              f"{args.rounds} round(s)")  # fmt: skip
        _make_source(src, size)
        port = _free_port()
        moto = _moto(port)
        s3_env = env | {
            "VIDPIPE_STORAGE__KIND": "s3", "VIDPIPE_STORAGE__S3_BUCKET": "bench",
            "VIDPIPE_STORAGE__S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "VIDPIPE_UPLOAD__STORE": "s3", "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        }  # fmt: skip
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench",
                     ).create_bucket(Bucket="bench")  # fmt: skip
        for r in range(args.rounds):
            others = Others([])
            cp_wall = _time_cp(src, work / "copy.bin")
            samples["cp"].append((cp_wall, others.share()))
            for name, extra, helpers in (("disk", env, []), ("s3", s3_env, [moto.pid])):
                data = work / f"data-{name}-{r}"
                server = UploadServer.start(data, env=extra)
                try:
                    samples[name].append(_upload(server, src, chunk, helpers))
                    rss[name] = max(rss.get(name, 0.0), server.peak_rss_mib())
                finally:
                    server.stop()
                shutil.rmtree(data, ignore_errors=True)
            line = "  ".join(f"{k} {v[-1][0]:6.2f} s ({v[-1][1]:.0%})" for k, v in samples.items())
            print(f"  round {r + 1}: {line}")
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    mbps = {k: size / 1e6 / statistics.median(w for w, _ in v) for k, v in samples.items()}
    worst = {k: max(o for _, o in v) for k, v in samples.items()}
    print()
    print(f"{'':6} {'MB/s':>8} {'x cp':>6} {'peak RSS':>9} {'others':>7}")
    for k in ("cp", "disk", "s3"):
        peak = f"{rss[k]:.0f} MiB" if k in rss else "-"
        print(f"{k:6} {mbps[k]:8.0f} {mbps[k] / mbps['cp']:6.2f} {peak:>9} {worst[k]:7.0%}")
    if max(worst.values()) > 0.10:
        print("warning: other processes used over 10 % of the CPUs in some run; "
              "wall figures are stretched")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"size_bytes": size, "chunk_bytes": chunk,
                                         "samples": samples, "mb_per_s": mbps,
                                         "peak_rss_mib": rss}, indent=2))  # fmt: skip
    print(
        f"RESULT upload disk={mbps['disk']:.0f} s3={mbps['s3']:.0f} cp={mbps['cp']:.0f} MB/s "
        f"disk/cp={mbps['disk'] / mbps['cp']:.2f} s3/cp={mbps['s3'] / mbps['cp']:.2f} "
        f"rss_disk={rss['disk']:.0f} rss_s3={rss['s3']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
