"""Atomic writes: a file or a folder appears complete under its final name, or not at all.

Everything is first written under a hidden temporary name *in the same folder* as
the target (so the final ``os.replace`` / ``os.rename`` is a same-filesystem
rename, which POSIX makes atomic) and only renamed into place once fully written
and flushed. On any failure, ``KeyboardInterrupt`` included, the temporary file or
folder is removed. Temporary names start with ``.`` and end with ``.tmp`` so that
folder walkers never mistake them for scans.

The standard library has no atomic-write helper and neither do our dependencies,
hence these few lines.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from medgan.errors import MedganError

logger = logging.getLogger(__name__)

__all__ = [
    "exception_chain",
    "os_error_reason",
    "check_target_dir",
    "parent_problem",
    "temp_sibling",
    "is_temp_name",
    "temp_sibling_of",
    "atomic_file",
    "atomic_path",
    "atomic_paths",
    "atomic_directory",
    "write_bytes_atomic",
    "write_text_atomic",
    "utf8_bytes",
    "json_ready",
    "open_append",
]


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then the exception it was raised from or while handling (``__cause__``, else ``__context__``), and
    so on: the chain a traceback prints, each once (a chain can loop back on itself).

    Parameters
    ----------
    exc
        The exception caught.

    Yields
    ------
    BaseException
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def os_error_reason(exc: BaseException) -> str:
    """Why an I/O operation failed, in a few words for a one-line message: ``"No space left on device"``.

    The ``strerror`` of ``exc`` or, when it has none, of the first :class:`OSError` among its causes and contexts
    (``__cause__`` / ``__context__``, followed in turn). A library that re-raises an I/O error as
    ``type(exc)(message) from exc`` (pydicom writing pixel data does, its message a whole formatted traceback)
    leaves no ``strerror`` on the error it raises, and ``str(exc)`` put that traceback, install paths and
    newlines included, into the error line, ``manifest.csv`` and ``medgan.log``. Without any ``strerror``: the first
    non-empty line of ``str(exc)``, else the exception's type name.

    Parameters
    ----------
    exc
        The exception caught.

    Returns
    -------
    str
        One line.
    """
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.strerror:
            return " ".join(str(link.strerror).split())
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return first or type(exc).__name__


def parent_problem(path: str | os.PathLike[str]) -> str:
    """Why ``path``'s parent folder cannot hold it, for an error message: ``"is a file, not a folder"``,
    ``"does not exist"``, or ``"does not exist (F is a file, not a folder)"`` when a folder above it is a file."""
    parent = Path(path).parent
    if parent.exists() and not parent.is_dir():
        return "is a file, not a folder"
    ancestor = next((p for p in parent.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        return f"does not exist ({ancestor} is a file, not a folder)"
    return "does not exist" + unexpanded_home_hint(path)


#: said of a path that starts with ``~`` and does not exist (:func:`unexpanded_home_hint`)
_TILDE_HINT = " (a path starting with ~ is not expanded inside quotes: write $HOME/... or leave the ~ unquoted)"


def unexpanded_home_hint(path: str | os.PathLike[str]) -> str:
    """``" (a path starting with ~ is not expanded ...)"`` for a path whose first component starts with ``~``, else
    ``""``: a quoted ``'~/scans/t1.nii'`` reaches medgan as it is, and "the parent folder ~ does not exist" did not
    say why (``medgan run`` specs expand ``~``; the command line leaves it to the shell)."""
    return _TILDE_HINT if Path(path).parts[:1] and Path(path).parts[0].startswith("~") else ""


#: the longest file name (bytes) that ext4, XFS, Btrfs, APFS and others take (NAME_MAX)
_NAME_MAX = 255
#: hex digits of the random part of a temporary name
_TEMP_HEX = 12
#: a temporary name split into the (possibly cut) final name and the rest: ``.<name>.<12 hex>.tmp[suffixes]`` or
#: ``.<name>.<12 hex>.old`` (:func:`temp_sibling`; ``atomic_path(keep_suffix=True)`` adds the suffixes)
_TEMP_PARTS = re.compile(rf"^\.(?P<name>.+)(?P<tail>\.[0-9a-f]{{{_TEMP_HEX}}}\.(?:tmp|old)(?:\..*)?)$")


def _fit_name(name: str, tail: str) -> str:
    """``name`` cut short (by character, so a multi-byte UTF-8 character is never cut in half) where ``.<name><tail>``
    would pass NAME_MAX."""
    room = _NAME_MAX - 1 - len(os.fsencode(tail))  # 1: the leading dot
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return name


def temp_sibling(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to ``path`` (``.<name>.<random><suffix>``); nothing is created.

    ``<name>`` is ``path``'s name cut short where the whole would pass NAME_MAX (255 bytes): a final name that fits
    must get a temporary name too (the 18 characters added made a 240-character output name "File name too
    long"). The random part alone keeps it unique. :func:`is_temp_name` / :func:`temp_sibling_of` recognise the
    names it makes.
    """
    path = Path(path)
    tail = f".{uuid.uuid4().hex[:_TEMP_HEX]}{suffix}"
    return path.with_name(f".{_fit_name(path.name, tail)}{tail}")


def is_temp_name(name: str) -> bool:
    """Whether the file or folder name ``name`` is one :func:`temp_sibling` makes (a write in progress, or left by
    a killed one)."""
    return _TEMP_PARTS.match(name) is not None


def temp_sibling_of(name: str, finals: Iterable[str]) -> str | None:
    """The name among ``finals`` that the temporary name ``name`` was made for by :func:`temp_sibling` (its cut to
    255 bytes included); ``None`` when it is none of theirs, or no temporary name at all.

    Parameters
    ----------
    name
        A file or folder name (no folder part).
    finals
        Final names (no folder part) in the same folder.

    Returns
    -------
    str or None
    """
    m = _TEMP_PARTS.match(name)
    if m is None:
        return None
    base, tail = m["name"], m["tail"]
    for final in finals:
        if _fit_name(final, tail) == base:
            return final
    return None


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself (directory entry); best effort, not all platforms allow it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary file path; on success it is renamed onto ``path``.

    Use it with libraries that want a file name (``torch.save``, ``savefig``).

    Parameters
    ----------
    path
        Final file name. Its folder must exist.
    keep_suffix
        End the temporary name with ``path``'s suffixes (``.png``, ``.nii.gz``) for
        libraries that pick a format from the name; the name stays hidden (leading dot).

    Yields
    ------
    pathlib.Path
        Where to write. Removed if the block raises.
    """
    path = Path(path)
    suffix = "".join(path.suffixes) if keep_suffix else ".tmp"
    tmp = temp_sibling(path, suffix=".tmp" + suffix if keep_suffix else suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise MedganError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        _raise_as_final(exc, {tmp: path})
        raise
    _fsync_dir(path.parent)


def _raise_as_final(exc: BaseException, finals: Mapping[Path, Path]) -> None:
    """Raise ``exc`` again naming the final path when it is an :class:`OSError` about one of the temporary paths in
    ``finals`` (temporary -> final); return otherwise.

    A user knows ``report.html``, not ``.report.html.1f6f0c2a9e3b.tmp`` (gone by the time the message is read):
    the error line named the temporary file. The new error is the same :class:`OSError` subclass (errno decides).
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return
    for name in (exc.filename, exc.filename2):
        if name is None:
            continue
        final = finals.get(Path(os.fsdecode(name)))
        if final is not None:
            raise OSError(exc.errno, exc.strerror, os.fspath(final)) from exc


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Yield temporary paths for files that must change together; on success they are renamed into place, in order.

    Use it for a file and its companion (a NIfTI image and its JSON sidecar): the caller writes every temporary
    file, flushed and fsynced, inside the block, and nothing is renamed until the block ends without error. The
    renames then run in the order of ``paths``. If one of them fails, those already done are undone (a replaced
    file is put back from a hard link, or a copy, kept for the purpose; a file that did not exist is removed), so a
    failed write leaves every path as it was. Only a crash (power loss) between two renames can leave a prefix of
    them done: order ``paths`` so that such a prefix is the least harmful state.

    Parameters
    ----------
    *paths
        Final file names, in rename order. Their folders must exist.

    Yields
    ------
    list of pathlib.Path
        One temporary sibling per path, in the same order. All are removed if the block or a rename fails.

    Raises
    ------
    MedganError
        A temporary file was not written.
    OSError
        A temporary file could not be written, or a rename failed (after the earlier ones were undone); it names
        the final path, never the temporary one.
    """
    finals = [Path(p) for p in paths]
    temps = [temp_sibling(p) for p in finals]
    done: list[tuple[Path, Path | None]] = []  # (final name, backup of the file it replaced)
    try:
        yield temps
        for tmp, final in zip(temps, finals, strict=True):
            if not tmp.exists():
                raise MedganError(f"{final}: nothing was written")
        for i, (tmp, final) in enumerate(zip(temps, finals, strict=True)):
            # The last rename needs no backup: nothing after it can fail and leave it to be undone.
            backup = _keep_old(final) if i < len(finals) - 1 and final.is_file() else None
            try:
                os.replace(tmp, final)
            except BaseException:
                if backup is not None:
                    _remove(backup)
                raise
            done.append((final, backup))
    except BaseException as exc:
        for final, backup in reversed(done):
            with contextlib.suppress(OSError):  # best effort: the original error is the one to report
                if backup is not None:
                    os.replace(backup, final)
                else:
                    final.unlink()
        for tmp in temps:
            _remove(tmp)
        _raise_as_final(exc, dict(zip(temps, finals, strict=True)))
        raise
    for _, backup in done:
        if backup is not None:
            _remove(backup)
    for folder in dict.fromkeys(final.parent for final in finals):
        _fsync_dir(folder)


def _keep_old(path: Path) -> Path:
    """A hidden hard link to (or, where links are not allowed, a copy of) the file ``path`` before it is replaced."""
    backup = temp_sibling(path, suffix=".old")
    try:
        os.link(path, backup)
    except OSError:
        try:
            shutil.copy2(path, backup)
        except BaseException:
            _remove(backup)
            raise
    return backup


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    Parameters
    ----------
    path
        Final file name. Its folder must exist.
    mode
        ``"wb"`` or ``"w"`` (text; pass ``encoding=`` in ``open_kwargs``).
    **open_kwargs
        Passed to :func:`open` for the temporary file: ``encoding``, ``errors``, ``newline`` (text modes) or
        ``buffering``.

    Yields
    ------
    file object
        Flushed and fsynced before the rename. Removed if the block raises.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_file needs a write mode, got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", errors: str = "strict"
) -> Path:
    """Write ``text`` to ``path`` atomically and return ``path`` (``errors``: as for :func:`open`)."""
    with atomic_file(path, "w", encoding=encoding, errors=errors, newline="") as fh:
        fh.write(text)
    return Path(path)


def utf8_bytes(text: str) -> bytes:
    """``text`` as UTF-8, a character UTF-8 cannot hold written as its escape (``\\udcff``) instead of raising.

    A Linux file name (or command-line argument) that is not valid UTF-8 reaches Python with each bad byte as a lone
    surrogate (``b"\\xff"`` -> ``"\\udcff"``), which strict UTF-8 refuses: a report or manifest holding such a
    path crashed at its end with a ``UnicodeEncodeError`` and was not written. Escaped, the file stays valid UTF-8
    (readable by any editor, browser or spreadsheet) and still shows which byte it was. The one rule for every text
    output that holds paths (evaluation report, batch manifest); JSON needs none (``json.dumps`` escapes it).

    Parameters
    ----------
    text
        Text to write.

    Returns
    -------
    bytes

    Examples
    --------
    >>> utf8_bytes("scan\\udcff.nii")
    b'scan\\\\udcff.nii'
    """
    return text.encode("utf-8", "backslashreplace")


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], list[str]] | None = None,
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it is renamed to ``path``.

    Parameters
    ----------
    path
        Final folder. Its parent must exist. An existing empty folder is replaced.
    overwrite
        Replace an existing non-empty folder that ``replaceable`` vouches for (see :func:`check_target_dir`): it is
        moved aside and its files deleted only after the new one is in place. A folder holding anything else is
        refused, with or without it, before anything is written: :class:`~medgan.errors.MedganError`.
    replaceable
        The writer's rule for what it may replace: given the existing folder, the names of its entries the writer
        did not write (empty: all are the writer's). ``None``: a non-empty folder is never replaced.

    Yields
    ------
    pathlib.Path
        An empty folder to fill. Removed if the block raises.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MedganError(f"{path}: the parent folder {path.parent} {parent_problem(path)}")
    verified = check_target_dir(path, overwrite, replaceable=replaceable)
    tmp = temp_sibling(path)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        # It may have appeared, been filled or become a link meanwhile. Names only: ``replaceable`` vouched for the
        # files under these names at the start (re-reading them, a DICOM header per slice say, cost as much again).
        replaced = _recheck_target_dir(path, verified)
        if replaced:
            old = temp_sibling(path, suffix=".old")
            os.rename(path, old)
        elif path.is_dir():
            path.rmdir()
        os.rename(tmp, path)
    except BaseException:
        if old is not None and not path.exists():  # the new folder did not go in: put the old one back
            with contextlib.suppress(OSError):
                os.rename(old, path)
        _remove(tmp)
        raise
    if old is not None:
        _remove_replaced(old, replaced, path)
    _fsync_dir(path.parent)


def json_ready(value: Any, *, infinite_as_text: bool = True) -> Any:
    """``value`` made fit for ``json.dumps(..., allow_nan=False)``: the one rule of medgan's JSON outputs.

    Mappings become dicts with string keys, lists and tuples lists, paths POSIX text, NumPy and torch scalars Python
    numbers; NaN (a score that could not be computed) becomes ``null``, and an infinity ``"inf"`` / ``"-inf"`` (a
    perfect scan's PSNR), or ``null`` with ``infinite_as_text=False``. A bare ``NaN`` / ``Infinity``, which
    ``json.dumps`` writes by default, is refused by strict readers (``jq``, JavaScript, most non-Python tools). The
    evaluation report, the batch manifest and the training logs write through it.

    Examples
    --------
    >>> json_ready({"psnr": float("inf"), "ssim": float("nan"), 1: (2, 3)})
    {'psnr': 'inf', 'ssim': None, '1': [2, 3]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_ready(v, infinite_as_text=infinite_as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, infinite_as_text=infinite_as_text) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value) or not infinite_as_text:
            return None
        return "inf" if value > 0 else "-inf"
    return value


def _remove_replaced(old: Path, names: set[str], path: Path) -> None:
    """Delete the files ``names`` of the replaced output folder ``old`` (moved aside from ``path``), then ``old``.

    Only the files checked to be medgan's are deleted, never a tree: anything else found there (put in after the
    check) is kept, with ``old``, and a warning says where. No ``rmtree``: it would delete whatever it found.
    """
    for name in names:
        entry = old / name
        if entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    try:
        old.rmdir()
    except OSError:
        logger.warning(
            "%s: the replaced output folder held files added while the new series was written; they are kept in %s",
            path,
            old,
        )


def _printable(name: str) -> str:
    # a file name can hold a newline or an escape sequence; the error stays one plain line
    return "".join(c if c.isprintable() else "?" for c in name)


def _refuse_link_or_file(path: Path) -> None:
    """Refuse an output folder path that is a link (even to a folder) or an existing non-folder."""
    if path.is_symlink():
        raise MedganError(
            f"{path}: is a symbolic link; medgan does not write an output folder through a link: choose another "
            "output path or remove the link"
        )
    if path.exists() and not path.is_dir():
        raise MedganError(f"{path}: exists and is not a folder; choose another output path")


def _entry_names(path: Path) -> set[str]:
    """The names in folder ``path``; empty when it is not (or no longer) a folder."""
    try:
        return {p.name for p in path.iterdir()} if path.is_dir() else set()
    except FileNotFoundError:  # removed meanwhile
        return set()


def _shown(names: list[str]) -> str:
    """Up to three ``names``, printable, for a one-line message."""
    return ", ".join(_printable(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")


def check_target_dir(
    path: str | os.PathLike[str],
    overwrite: bool,
    *,
    replaceable: Callable[[Path], list[str]] | None = None,
) -> frozenset[str]:
    """Refuse an output folder path that is a link, a file, a folder holding files its writer did not write, or a
    previous output without ``overwrite``.

    A link is refused even to a folder: the output would be written, or with ``overwrite`` replaced, wherever the
    link points (an empty linked folder failed with a misleading "Not a directory", a replaced one left the link
    behind under a hidden name).

    ``overwrite`` replaces the whole folder, so it is allowed only for a folder ``replaceable`` vouches for (for a
    DICOM series, :func:`medgan.io.dicom_write.foreign_entries`: a flat folder of slice files medgan wrote). It
    deleted any folder given, another patient's series and the user's notes included. An empty folder is always
    fine.

    Parameters
    ----------
    path
        The output folder.
    overwrite
        Whether a previous output may be replaced.
    replaceable
        Given the existing non-empty folder, the names of its entries the writer did not write (a few are enough to
        name; empty: the writer wrote them all). ``None``: no non-empty folder is replaceable.

    Returns
    -------
    frozenset of str
        The names of the entries vouched for (listed before ``replaceable`` looked at them, so anything put in
        after that is not among them); empty when ``path`` is missing or empty. :func:`atomic_directory` replaces
        the folder only if it then holds no other name.

    Raises
    ------
    MedganError
        Any of the refusals above, in one line naming a few of the foreign entries.
    """
    path = Path(path)
    _refuse_link_or_file(path)
    names = frozenset(_entry_names(path))
    if not names:
        return names
    foreign = replaceable(path) if replaceable is not None else None
    if foreign is None:
        raise MedganError(f"{path}: folder exists and is not empty; choose an empty or new output folder")
    if foreign:
        raise MedganError(
            f"{path}: folder is not empty and holds files medgan did not write ({_shown(foreign)}); choose an empty "
            "or new output folder (--overwrite replaces only a previous medgan output)"
        )
    if not overwrite:
        raise MedganError(
            f"{path}: folder exists and is not empty; choose another output path, or replace it with --overwrite (Python: overwrite=True)"
        )
    return names


def _recheck_target_dir(path: Path, verified: frozenset[str]) -> set[str]:
    """The names in output folder ``path`` at commit time, all among ``verified`` (what :func:`check_target_dir`
    vouched for); anything put in meanwhile, or ``path`` turned into a link or a file, is refused."""
    _refuse_link_or_file(path)
    names = _entry_names(path)
    added = sorted(names - verified)
    if added:
        raise MedganError(
            f"{path}: files were put in the output folder while the new one was written ({_shown(added)}); nothing "
            "was replaced: choose an empty or new output folder"
        )
    return names


def open_append(path: str | os.PathLike[str], mode: str = "ab", **open_kwargs: Any) -> IO:
    """Open ``path`` for appending (created if missing), never through a symbolic link.

    For the files a run keeps open and appends to (its log, its manifest, its lock), which cannot be written
    atomically: a link planted at that name made the run append to, and read resume state from, a file elsewhere.

    Parameters
    ----------
    path
        The file.
    mode
        ``"ab"`` or ``"a"`` (text; pass ``encoding=`` / ``errors=`` in ``open_kwargs``).
    **open_kwargs
        Passed to :func:`os.fdopen` (as to :func:`open`): ``encoding``, ``errors``, ``newline`` (text modes) or
        ``buffering``.

    Returns
    -------
    file object

    Raises
    ------
    MedganError
        ``path`` is a symbolic link (dangling or not).
    OSError
        Any other reason it cannot be opened (no permission, ...).
    """
    if "a" not in mode:
        raise ValueError(f"open_append needs an append mode, got {mode!r}")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)  # 0o666: the umask applies, as for open()
    except OSError as exc:
        if exc.errno == errno.ELOOP or Path(path).is_symlink():
            raise MedganError(
                f"{path}: is a symbolic link; medgan writes this file only as a plain file in the output folder: "
                "remove the link"
            ) from None
        raise
    try:
        return os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        raise
