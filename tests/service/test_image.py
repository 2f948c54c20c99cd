"""The container image really builds and runs: buildah from the Dockerfile, then commands
inside it (chroot isolation shares the host's loopback, so it can measure a local site)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.service import image
from tests.service.harness import Site

# The first test builds the base image (debootstrap from a Debian mirror, minutes on a fresh
# machine) in its module fixture, inside pytest-timeout's limit: give the module room.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[2]


def _require_buildah() -> None:
    reason = ""
    if os.geteuid() != 0:
        reason = "building the image needs root (buildah chroot isolation, debootstrap)"
    elif missing := image.missing_tools():
        reason = f"missing {', '.join(missing)} (apt-get install buildah podman debootstrap)"
    if reason and IN_CI:
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def built_image() -> Iterator[str]:
    _require_buildah()
    base = image.ensure_base()
    tag = f"localhost/kzprobe-test:{uuid.uuid4().hex[:8]}"
    seconds = image.build(ROOT, tag, base)
    print(f"\nbuildah bud took {seconds:.1f} s")
    yield tag
    subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.fixture
async def container(built_image: str) -> AsyncIterator[str]:
    name = (await asyncio.to_thread(image.run, ["buildah", "from", built_image], 120)).stdout
    yield name.strip()
    await asyncio.to_thread(subprocess.run, ["buildah", "rm", name.strip()],
                            capture_output=True, check=False)


@pytest.fixture
def cfg_dir() -> Iterator[Path]:
    """A config directory the image's unprivileged user can read (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kzprobe-image-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


async def _inside(container: str, *args: str, mounts: tuple[str, ...] = ()) -> str:
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    result = await asyncio.to_thread(image.run, ["buildah", "run", "--isolation", "chroot",
                                                 *volumes, container, "--", *args], 180)
    return result.stdout


def test_image_config(built_image: str) -> None:
    """Non-root user, volume, entrypoint/cmd, stop signal and a healthcheck on /healthz."""
    out = image.run(["buildah", "inspect", "--type", "image", built_image], 60).stdout
    info = json.loads(out)
    config = info["Docker"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["kzprobe"]
    assert config["Cmd"] == ["run", "--config", "/etc/kzprobe/kzprobe.toml"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/kzprobe" in config["Volumes"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])


async def test_image_runs_version_check_config_and_measures_a_local_site(
        container: str, site: Site, cfg_dir: Path) -> None:
    """--version, the bundled example config validates, and a real measurement works."""
    assert (await _inside(container, "kzprobe", "--version")).startswith("kzprobe ")
    checked = await _inside(container, "kzprobe", "check-config",
                            "/usr/share/kzprobe/config/kzprobe.toml")
    assert "OK" in checked and "targets" in checked
    _config(cfg_dir, "m.toml", '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n')
    out = await _inside(container, "kzprobe", "measure", "--config", "/cfg/m.toml",
                        site.url("/inside"), mounts=(f"{cfg_dir}:/cfg:ro",))
    record = json.loads(out)
    assert record["input"] == site.url("/inside")
    assert record["test_keys"]["requests"][0]["response"]["code"] == 200
    assert site.seen == ["/inside"]


async def test_image_daemon_writes_its_volume_as_the_unprivileged_user(
        container: str, site: Site, cfg_dir: Path) -> None:
    """`kzprobe run --once` as uid 10001 writes compressed segments under /var/lib/kzprobe."""
    _config(cfg_dir, "run.toml",
            '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n[output]\ndir = "/var/lib/kzprobe"\n'
            f'[targets]\nurls = ["{site.url("/a")}", "{site.url("/b")}"]\n')
    await _inside(container, "kzprobe", "run", "--once", "--config", "/cfg/run.toml",
                  mounts=(f"{cfg_dir}:/cfg:ro",))
    listing = await _inside(container, "sh", "-c", "id -u; ls /var/lib/kzprobe")
    uid, *files = listing.split()
    assert uid == "10001"
    assert len([f for f in files if f.endswith(".ndjson.gz")]) == 1
    assert sorted(site.seen) == ["/a", "/b"]


# The docker run line the Dockerfile documents, minus --init/--restart (podman run --rm here).
# --read-only-tmpfs=false: podman would mount a writable /tmp and /run; docker does not.
HARDENED = ("--cap-drop", "ALL", "--read-only", "--read-only-tmpfs=false",
            "--security-opt", "no-new-privileges")


def _podman(image_name: str, *args: str, network: str = "none", mounts: tuple[str, ...] = (),
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    return subprocess.run(["podman", *image.podman_run_args(), "--rm", "--network", network,
                           *HARDENED, *volumes, image_name, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


async def test_bare_run_has_no_config_and_exits_2_with_one_line(
        built_image: str, container: str) -> None:
    """No deployment config is baked in (a bare run would sweep the internet from wherever it
    runs): the default command exits 2 with one line naming the config it needs. (No network
    for the bare run: even a regression that baked a config in could not reach anything.)"""
    baked = await _inside(container, "sh", "-c",
                          "ls -A /etc/kzprobe; ls /usr/share/kzprobe/config/targets")
    assert baked.split()[0] == "00-LEGEND-category_codes.csv"  # /etc/kzprobe is empty
    result = await asyncio.to_thread(_podman, built_image)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "/etc/kzprobe/kzprobe.toml: config file not found" in result.stderr


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A host directory for the volume, owned by the image's uid 10001."""
    path = Path(tempfile.mkdtemp(prefix="kzprobe-image-data-"))
    os.chown(path, 10001, 10001)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.ndjson.gz"))


async def test_image_runs_with_no_capabilities_read_only_and_no_new_privileges(
        built_image: str, site: Site, cfg_dir: Path, data_dir: Path) -> None:
    """`kzprobe run --once` under the documented docker run flags (--cap-drop ALL, --read-only,
    no-new-privileges): it measures a local site and writes its volume, exit 0."""
    _config(cfg_dir, "kzprobe.toml",
            '[analysis]\nnot_bogon = ["127.0.0.0/8"]\n'
            f'[targets]\nurls = ["{site.url("/a")}", "{site.url("/b")}"]\n'
            '[output]\ndir = "/var/lib/kzprobe"\n')
    result = await asyncio.to_thread(
        _podman, built_image, "run", "--once", "--config", "/etc/kzprobe/kzprobe.toml",
        network="host", mounts=(f"{cfg_dir}:/etc/kzprobe:ro", f"{data_dir}:/var/lib/kzprobe"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_segments(data_dir)) == 1
    assert sorted(site.seen) == ["/a", "/b"]
