"""Publishing a run: staged folders committed together or not at all, a lock per month, leftovers of killed runs.

A run writes its folder and the published copy of its models into staging folders beside their targets
(``.<name>.partial-<pid>``), flushes them to disk, then renames them into place one after the other; if a rename
fails, the ones already made are undone, so a run and its models appear together or not at all. A lock per month
(``.<as_of>.lock`` in the runs root and in the models folder) keeps two runs of the same month apart; the kernel
releases it when its process ends, so the lock of a killed run is taken over without any clean-up.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from forecast.errors import OutputError

#: Seconds to sleep with every output staged, just before the commit renames (tests kill the run there).
PAUSE_BEFORE_COMMIT_ENV = "CLV_FORECAST_PAUSE_BEFORE_COMMIT"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")
_RUN_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOCK_NAME = re.compile(r"^\.\d{4}-\d{2}-\d{2}\.lock$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(parent: Path, name: str | None = None) -> None:
    """Remove staging folders that killed runs left in ``parent``, and restore a replaced folder if needed.

    ``.<name>.partial-<pid>`` folders of dead processes are deleted. ``.<name>.old-<pid>`` is the
    previous ``<name>`` moved aside during a commit; if the run died between the two renames and
    ``<name>`` is missing, it is moved back, otherwise deleted. Only run folders (named YYYY-MM-DD)
    and ``name`` are considered, so other programs' files in a shared parent are never touched.
    """
    if not parent.is_dir():
        return
    for leftover in sorted(parent.iterdir()):
        if _LOCK_NAME.match(leftover.name):
            _remove_if_unlocked(leftover)
            continue
        match = _LEFTOVER.match(leftover.name)
        if match is None or _process_alive(int(match["pid"])):
            continue
        if match["name"] != name and not _RUN_NAME.match(match["name"]):
            continue
        original = parent / match["name"]
        if match["kind"] == "old" and not original.exists():
            leftover.rename(original)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def sync_to_disk(path: Path) -> None:
    """Flush one file or folder entry to disk (folders only where the OS can open them: not on Windows)."""
    if path.is_dir() and os.name == "nt":
        return
    handle = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _lock(handle: IO[str], path: Path) -> bool:
    """Take the lock of the open file ``handle`` if no process holds it and ``path`` still names that file.

    A holder removes its lock file when done: between our open and our lock it may have removed the file we opened.
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _remove_if_unlocked(path: Path) -> None:
    """Remove a month's lock file that no process holds (its run was killed); leave a held one alone."""
    try:
        with open(path, "a+", encoding="utf-8") as handle:
            if _lock(handle, path):
                path.unlink()
    except OSError:  # already gone
        pass


def _sync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, so a rename never publishes unwritten data."""
    for path in [*sorted(folder.rglob("*"), reverse=True), folder]:
        sync_to_disk(path)


def _staging_folder(target: Path) -> Path:
    """A new, empty staging folder beside ``target`` (leftovers of killed runs there are cleaned first)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(target.parent, target.name)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {target}: {exc}. Choose a writable --output (or models_dir)."
        ) from None
    return staging


def _commit(targets: list[Path], stagings: list[Path]) -> None:
    """Rename each staging folder onto its target; if one rename fails, undo the ones made and re-raise."""
    done: list[tuple[Path, Path, bool]] = []  # (target, retired, whether a previous target was moved aside)
    try:
        for target, staging in zip(targets, stagings, strict=True):
            retired = target.parent / f".{target.name}.old-{os.getpid()}"
            existed = target.exists()
            if existed:
                target.rename(retired)
            done.append((target, retired, existed))
            staging.rename(target)
            sync_to_disk(target.parent)
    except OSError:
        for target, retired, existed in reversed(done):
            if target.exists() and (not existed or retired.exists()):
                shutil.rmtree(target, ignore_errors=True)
            if existed and retired.exists():
                retired.rename(target)
        raise
    for _, retired, _ in done:
        shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def atomic_folders(*targets: Path, before_commit: Callable[[], None] | None = None) -> Iterator[list[Path]]:
    """Yield a staging folder for each target; on success all of them replace their targets, or none does.

    On any failure the staging folders are removed and every target is left as it was. Staged files are
    flushed to disk, then ``before_commit`` (a last check that may raise) is called, then the folders are renamed.

    Raises
    ------
    OutputError
        A staging folder cannot be created, or writing or committing failed (disk full, not writable).
    """
    resolved = [target.resolve() for target in targets]
    stagings: list[Path] = []
    try:
        for target in resolved:
            stagings.append(_staging_folder(target))
        yield stagings
        for staging in stagings:
            _sync_tree(staging)
        pause = os.environ.get(PAUSE_BEFORE_COMMIT_ENV)
        if pause:
            time.sleep(float(pause))
        if before_commit is not None:
            before_commit()
        _commit(resolved, stagings)
    except OSError as exc:
        raise OutputError(
            f"Writing the outputs to {', '.join(map(str, resolved))} failed: {exc}. Free disk space or choose "
            "another --output (or models_dir); nothing was published."
        ) from None
    finally:
        for staging in stagings:
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """``atomic_folders`` of one target: yield its staging folder, which replaces ``target`` on success."""
    with atomic_folders(target) as (staging,):
        yield staging


@contextmanager
def month_lock(*folders: Path, as_of_name: str) -> Iterator[None]:
    """Hold the lock of one month in each folder (``.<as_of>.lock``) while the block runs, then remove it.

    The lock is the kernel's (``flock``): it goes with its process, so a killed run's lock file is simply taken
    over. A lock file is removed only by its holder, and a lock is held only on the file its path still names.

    Raises
    ------
    OutputError
        Another process holds a lock (its process id is named), or a lock file cannot be created.
    """
    with ExitStack() as locks:
        for folder in folders:
            locks.enter_context(_locked(folder / f".{as_of_name}.lock", as_of_name))
        yield


@contextmanager
def _locked(path: Path, as_of_name: str) -> Iterator[None]:
    """Hold the month's lock file ``path`` while the block runs: create it, lock it, write the holder into it; then
    remove it, and the folders made for it when nothing else was put in them.

    Raises
    ------
    OutputError
        Another process holds the lock, or the lock file cannot be created or written (it is then removed).
    """
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while locked)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {path.parent} (for the month's lock {path.name}): {exc}. Choose a "
            "writable --output, output and models_dir."
        ) from None
    with handle:
        if not _lock(handle, path):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputError(
                f"The run as of {as_of_name} is being written by {holder} (lock {path}). Wait for it to finish, "
                "then run again; two runs of the same month never write at once."
            )
        try:
            _write_holder(handle)
        except OSError as exc:
            _release(path, created)
            raise OutputError(
                f"Writing the month's lock {path} failed: {exc}. Free disk space or choose another output folder "
                "(--output, output and models_dir); nothing was written."
            ) from None
        try:
            yield
        finally:
            _release(path, created)


def _write_holder(handle: IO[str]) -> None:
    """Write this process into the lock file it holds, so that a run refused by the lock can name its holder.

    Written unbuffered: bytes a full disk refused would otherwise stay in the handle's buffer and fail its close.
    """
    descriptor = handle.fileno()
    os.ftruncate(descriptor, 0)
    text = f"process {os.getpid()}".encode()
    while text:  # a write may take part of the text (a file-size limit): the next one says why not the rest
        text = text[os.write(descriptor, text) :]


def _release(path: Path, created: list[Path]) -> None:
    """Remove the lock file this process holds, then the ``created`` folders (innermost first) left empty."""
    path.unlink(missing_ok=True)
    for folder in created:  # folders made only for the lock, if the run left nothing in them
        try:
            folder.rmdir()
        except OSError:
            break
