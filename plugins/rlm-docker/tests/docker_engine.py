"""A container engine and a local image for the rlm-docker tests, without any registry.

Podman (run as root) is the engine: its ``podman system service`` speaks the Docker API on
a private Unix socket, so the tests drive it with the real ``docker`` CLI through
``DOCKER_HOST``, as a Docker user would, and with the ``podman`` CLI directly. Podman reads
a private ``containers.conf`` (``CONTAINERS_CONF``) that picks ``runc`` and ``cgroupfs``
and this machine's own open-file and process limits, which work in nested containers and
on ordinary machines alike.

The test image is built from the running interpreter: its executable, standard library
(without tests and GUI modules), the shared libraries they load, and this environment's
``grpcio``, ``protobuf`` and ``typing_extensions`` (on ``PYTHONPATH``), imported as one
root-filesystem tar.
Its tag carries a digest of what went in, so an unchanged machine reuses it.

``python tests/docker_engine.py`` prepares both and prints how long each step took.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_REPOSITORY = "localhost/rlm-docker-test"
"""Where the test image is tagged (never pushed anywhere)."""

SKIPPED_STDLIB = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
    "pydoc_data", "unittest", "venv",
}  # fmt: skip
"""Standard-library directories the agent never imports."""

SITE_DIR = "/opt/rlm-test/site-packages"
"""Where the image holds what the agent needs beyond the standard library (on
``PYTHONPATH``, whatever the interpreter's own site directories are)."""

CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    f"ENV PYTHONPATH={SITE_DIR}",
    "WORKDIR /tmp",
)
"""The image's configuration."""

SITE_PACKAGES = ("grpc", "google/protobuf", "google/_upb", "typing_extensions.py")
"""What the agent needs beyond the standard library."""


def unavailable() -> str | None:
    """Why the engine cannot run here (``None`` when it can)."""
    if sys.platform != "linux":
        return "the rlm-docker tests run podman, which needs Linux"
    if os.geteuid() != 0:
        return "the rlm-docker tests run podman as root, and this is not root"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"the rlm-docker tests need {tool!r} (make podman installs it)"
    if shutil.which("docker") is None:
        return "the rlm-docker tests need the docker command-line client (no daemon)"
    return None


NPROC_CAP = 16384
"""The process limit given to containers at most (some nested sandboxes refuse a container
more than about 32768, even below the host's own limit)."""


def containers_conf(path: Path) -> Path:
    """Write podman's configuration for the tests: the ``runc`` runtime, ``cgroupfs`` and
    this process's own limits for open files and processes (podman's defaults can be above
    what a nested container may grant)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = tuple(
        NPROC_CAP if v == resource.RLIM_INFINITY else min(v, NPROC_CAP)
        for v in resource.getrlimit(resource.RLIMIT_NPROC)
    )

    def limit(name: str, values: tuple[int, ...]) -> str:
        soft, hard = (str(v) if v != resource.RLIM_INFINITY else "-1" for v in values)
        return f'"{name}={soft}:{hard}"'

    path.write_text(
        "[containers]\n"
        f"default_ulimits = [{limit('nofile', nofile)}, {limit('nproc', nproc)}]\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    return path


@dataclass
class Engine:
    """A running podman service: its socket and the variables that reach it."""

    directory: Path
    service: subprocess.Popen[bytes]
    socket: Path

    @property
    def environ(self) -> dict[str, str]:
        """``DOCKER_HOST`` for the docker CLI, ``CONTAINERS_CONF`` for podman."""
        return {
            "DOCKER_HOST": f"unix://{self.socket}",
            "CONTAINERS_CONF": str(self.directory / "containers.conf"),
        }

    def stop(self) -> None:
        """Stop the service and remove its directory."""
        if self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait(timeout=15)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_engine(timeout: float = 30.0) -> Engine:
    """Start ``podman system service`` on a socket in a new private directory (under
    ``/tmp``, so the socket's path stays short); the service dies with this process."""
    from rlm_core.environments.forkserver import die_with_starting_thread

    base = "/tmp" if os.path.isdir("/tmp") else None
    directory = Path(tempfile.mkdtemp(prefix="rlm-docker-engine-", dir=base))
    conf = containers_conf(directory / "containers.conf")
    socket = directory / "docker.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    log = open(directory / "service.log", "wb")  # noqa: SIM115 (the service writes it)
    with log:
        service = subprocess.Popen(
            [*die_with_starting_thread(), "podman", "system", "service", "--time=0",
             f"unix://{socket}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )  # fmt: skip
    engine = Engine(directory, service, socket)
    deadline = time.monotonic() + timeout
    while not _answers(engine):
        if service.poll() is not None or time.monotonic() > deadline:
            said = (directory / "service.log").read_text(errors="replace")
            engine.stop()
            raise RuntimeError(f"podman system service did not start:\n{said}")
        time.sleep(0.1)
    return engine


def _answers(engine: Engine) -> bool:
    if not engine.socket.exists():
        return False
    done = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, **engine.environ},
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


# -- the image -------------------------------------------------------------------------


def _interpreter() -> Path:
    """The real executable of the interpreter this environment was made from."""
    base = getattr(sys, "_base_executable", sys.executable)
    return Path(os.path.realpath(base))


def _site_packages() -> Path:
    import grpc

    return Path(grpc.__file__).resolve().parents[1]


def _stdlib_files(stdlib: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(stdlib):
        here = Path(root)
        if here == stdlib:
            dirs[:] = [d for d in dirs if d not in SKIPPED_STDLIB and not d.startswith("config-")]
        for name in files:
            if name.endswith((".opt-1.pyc", ".opt-2.pyc")):
                continue
            yield here / name


def _shared_libraries(objects: list[Path]) -> set[str]:
    """Every library ``ldd`` says ``objects`` load (the paths as the loader names them)."""
    found: set[str] = set()
    for start in range(0, len(objects), 50):
        chunk = [str(p) for p in objects[start : start + 50]]
        out = subprocess.run(["ldd", *chunk], capture_output=True, text=True).stdout
        for line in out.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                found.add(match.group(1))
    return found


def image_files() -> tuple[dict[str, Path], dict[str, str]]:
    """``(files, links)``: image path to host file, and image path to symlink target."""
    python = _interpreter()
    stdlib = Path(sysconfig.get_path("stdlib", vars={"base": sys.base_prefix}))
    target_site = Path(SITE_DIR)
    files: dict[str, Path] = {str(python): python}
    links: dict[str, str] = {}
    for path in _stdlib_files(stdlib):
        files[str(path)] = path
    site = _site_packages()
    for entry in SITE_PACKAGES:
        source = site / entry
        paths = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
        for path in paths:
            if path.exists() and ".opt-" not in path.name:
                files[str(target_site / path.relative_to(site))] = path
    objects = [python, *(p for p in files.values() if p.suffix == ".so")]
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("INSTSONAME")
    if libdir and library and (Path(libdir) / library).exists():
        objects.append(Path(libdir) / library)
    for name in _shared_libraries(objects):
        real = Path(os.path.realpath(name))
        files[str(real)] = real
        placed = Path(os.path.realpath(os.path.dirname(name))) / os.path.basename(name)
        if placed != real:
            links[str(placed)] = str(real)
    for top in ("bin", "lib", "lib64", "sbin"):
        host = Path("/") / top
        if host.is_symlink():
            links["/" + top] = os.readlink(host)
    links.setdefault("/usr/bin/python3", str(python))
    links.setdefault("/usr/local/bin/python3", str(python))
    return files, links


def _image_tar(files: dict[str, Path], links: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        made: set[str] = set()

        def directories(path: str) -> None:
            parts = Path(path).parent.parts[1:]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in made and "/" + folder not in links:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)

        for folder in ("tmp", "root", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
            made.add(folder)
        for path, target in sorted(links.items()):
            directories(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for path, source in sorted(files.items()):
            directories(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            data = source.read_bytes()
            info.size, info.mode = len(data), source.stat().st_mode & 0o777
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_tag(files: dict[str, Path], links: dict[str, str]) -> str:
    """The test image's tag: a digest of its configuration and of the paths, sizes and
    times that go into it."""
    digest = hashlib.sha256("\n".join(CHANGES).encode())
    for path, source in sorted(files.items()):
        stat = source.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for path, target in sorted(links.items()):
        digest.update(f"{path}\0->{target}\n".encode())
    return f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:16]}"


def build_image(environ: dict[str, str]) -> str:
    """The test image's tag, importing the image with podman unless it exists already."""
    env = {**os.environ, **environ}
    files, links = image_files()
    tag = image_tag(files, links)
    exists = subprocess.run(["podman", "image", "exists", tag], env=env, capture_output=True)
    if exists.returncode == 0:
        return tag
    done = subprocess.run(
        ["podman", "import", *(f"--change={change}" for change in CHANGES), "-", tag],
        input=_image_tar(files, links),
        env=env,
        capture_output=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"podman import failed: {done.stderr.decode(errors='replace')}")
    return tag


def main() -> int:
    """Prepare the engine and the image, print the timings, stop the engine."""
    reason = unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    began = time.monotonic()
    engine = start_engine()
    started = time.monotonic()
    try:
        tag = build_image(engine.environ)
        built = time.monotonic()
    finally:
        engine.stop()
    print(f"engine: {started - began:.2f}s, image {tag}: {built - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
