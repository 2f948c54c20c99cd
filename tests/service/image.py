"""Build the Dockerfile without a Docker engine: buildah (chroot isolation) on a local base.

The base is a minimal Debian bookworm with python3 and python3-venv, made by debootstrap
and imported with ``podman import``. It is cached twice on the machine: as a tarball in
:data:`CACHE` and as the image :data:`BASE_IMAGE` in containers-storage, so only the first
run on a machine pays for debootstrap (about 1.5 minutes). A lock file serialises
concurrent builders. The build mounts the host's pip config and CA bundle so pip reaches
the package index this machine uses.

Run as a script (``python -m tests.service.image``) it only prepares the base image.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE = Path("/var/cache/kzprobe-ci")
BASE_IMAGE = "localhost/kzprobe-ci-base:bookworm"
BASE_TAR = CACHE / "bookworm-python3.tar"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("buildah", "podman", "debootstrap")
HOST_FILES = ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def run(args: Sequence[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise with the tail of its output (so a test shows why)."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                            check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(args[:3])}... exited {result.returncode}:\n{tail}")
    return result  # type: ignore[no-any-return]


def debian_mirror(sources: Sequence[Path] = (Path("/etc/apt/sources.list.d/debian.sources"),
                                             Path("/etc/apt/sources.list"))) -> str:
    """The Debian mirror apt already uses on this machine (deb822 or one-line format)."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        match = (re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M)
                 or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+\S+", text, re.M))
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


@contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def _unmount_below(root: Path) -> None:
    """A debootstrap killed midway (a timeout) leaves /proc and /sys mounted in its root."""
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point.startswith(f"{root}/"):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _debootstrap_tarball() -> None:
    root = CACHE / "rootfs.tmp"
    _unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)
    run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root),
         debian_mirror()], timeout=1800)
    for leftover in [*(root / "var/cache/apt/archives").glob("*.deb"),
                     *(root / "var/lib/apt/lists").glob("*_*")]:
        leftover.unlink()
    partial = BASE_TAR.with_suffix(".tmp")
    run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], timeout=600)
    os.replace(partial, BASE_TAR)
    shutil.rmtree(root, ignore_errors=True)


def ensure_base() -> str:
    """The local base image, made (debootstrap + podman import) only if not cached."""
    with _locked():
        if _image_exists(BASE_IMAGE):
            return BASE_IMAGE
        if not BASE_TAR.exists():
            _debootstrap_tarball()
        run(["podman", "import", str(BASE_TAR), BASE_IMAGE], timeout=600)
    return BASE_IMAGE


def build(context: Path, tag: str, base: str) -> float:
    """``buildah bud`` the Dockerfile in ``context`` (Docker format: keeps HEALTHCHECK)."""
    mounts = [arg for path in HOST_FILES if Path(path).exists()
              for arg in ("-v", f"{path}:{path}:ro")]
    started = time.monotonic()
    run(["buildah", "bud", "--isolation", "chroot", "--format", "docker", "--layers=false",
         "--build-arg", f"BASE_IMAGE={base}", *mounts, "-t", tag, str(context)], timeout=1800)
    return time.monotonic() - started


def podman_run_args() -> list[str]:
    """``podman run`` options for the machine, not the image: runc when installed (crun
    refuses a hybrid cgroup v1/v2 host), no healthcheck timer (that needs systemd), and
    rlimits at or below this process's (podman's defaults raise them: CAP_SYS_RESOURCE)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    return [*runtime, "run", "--no-healthcheck", "--ulimit", f"nofile={nofile}:{nofile}",
            "--ulimit", f"nproc={nproc}:{nproc}"]


if __name__ == "__main__":
    if missing := missing_tools():
        sys.exit(f"missing: {', '.join(missing)}")
    print(ensure_base())
