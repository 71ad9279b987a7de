"""The output checks of the one-scan commands (``convert``, ``degrade``, ``upscale``, ``synthesize``), run before
anything is loaded or computed.

:func:`check_inputs` first refuses an input that does not exist (before an existing output is named: with IN and
OUT swapped, "OUT exists; pass --overwrite" invited the user to overwrite their scan).

:func:`check_outputs` refuses, with one line that names the file (a :class:`~medgan.errors.MedganError`, exit 1):

- an output whose folder does not exist, is a file, or cannot be written to (tried with a hidden temporary file,
  as :mod:`medgan.io.atomic` names them: permission bits alone do not say whether root, a read-only mount or an
  immutable folder lets us write);
- an existing NIfTI output file, or a non-empty DICOM output folder, unless ``--overwrite`` is given; so is a NIfTI
  name whose JSON sidecar (``out.json``) exists: the sidecar of its ``.nii`` / ``.nii.gz`` twin, which would lose
  its provenance, or any other file of that name, which the sidecar would replace;
- always, whatever ``--overwrite`` says: an output that is one of the input's files (the scan itself or its
  sidecar), a DICOM output folder that is or holds the input, and two outputs of one run that are the same file.

``medgan.save_scan`` replaces an existing NIfTI file (the library's contract); these checks are the command line's.

:func:`terminal_text` is what the commands print of text they did not write themselves (a DICOM header's
Modality, a checkpoint's metadata, file names found in a tree): control characters shown escaped, so that such a
field cannot clear the screen, retitle the window or hide a line.

:func:`reproduction_records` is what ``upscale`` and ``synthesize`` record of their input and command line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["DETAIL", "EscapingFormatter", "check_inputs", "check_outputs", "terminal_text", "written_text"]

#: what a terminal acts on instead of showing: C0 controls (ESC starts a CSI / OSC sequence, CR rewrites the
#: line, BS erases), DEL, C1 controls (U+009B is a one-character CSI), and the bidirectional embeddings, overrides
#: and isolates, which reorder the text shown after them (the "Trojan Source" trick)
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNSAFE_LINE = re.compile(f"[{_CONTROL}\t\n]")  # a table cell, a one-line message: newline and tab too
_UNSAFE_TEXT = re.compile(f"[{_CONTROL}]")  # a multi-line text (a model card): newline and tab are its layout


#: a log record flag (``extra={DETAIL: True}``) for a message whose format ends with ``"\n%s"``: its last argument
#: is a block of lines (a failed scan's traceback, already redacted, logged at DEBUG) that
#: :class:`EscapingFormatter` keeps on lines of its own, as a traceback. The block is in the message itself, so
#: every formatter shows it (``logging.basicConfig``, pytest's ``caplog``, a Dask worker's log): in an attribute
#: only this formatter printed, they showed "scan X failed; traceback:" and nothing after it.
DETAIL = "medgan_detail"


class EscapingFormatter(logging.Formatter):
    """Log lines with control characters shown escaped (``\\x1b``), as :func:`terminal_text` prints them: log
    messages quote file names and DICOM header values, where an escape sequence would drive the terminal of whoever
    reads the line, on the terminal itself or later with ``cat medgan.log``.

    The message is one line: a newline or tab in it is escaped too. A folder named ``a\\nINFO medgan.batch: scan
    9/9 ...`` split the batch's ``done`` line in two, the second a forged log line. Only the exception and stack
    text of a record (``exc_info``, ``stack_info``) and the last argument of a :data:`DETAIL` message keep their
    lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info, record.msg, record.args
        detail = _detail_of(record)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if detail is not None:  # the message without its block: the scan id in it stays escaped as one line
            record.msg, record.args = record.msg[: -len(_DETAIL_END)], record.args[:-1]
        try:
            line = terminal_text(super().format(record))  # the message and the format's fields, no traceback
        finally:
            record.exc_info, record.exc_text, record.stack_info, record.msg, record.args = saved
            if detail is not None:
                record.message = record.getMessage()  # as another handler's formatter sets it: the whole message
        blocks = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            blocks.append(record.exc_text)
        if detail:
            blocks.append(detail)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        return "\n".join([line, *(terminal_text(block.rstrip("\n"), multiline=True) for block in blocks)])


#: how a :data:`DETAIL` message's format ends: its last argument on lines of its own
_DETAIL_END = "\n%s"


def _detail_of(record: logging.LogRecord) -> str | None:
    """The block of a :data:`DETAIL` record (its message's last argument), else ``None``."""
    if not getattr(record, DETAIL, False):
        return None
    if not (isinstance(record.msg, str) and record.msg.endswith(_DETAIL_END)):
        return None
    if not isinstance(record.args, tuple) or not record.args:
        return None
    return str(record.args[-1])


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str, stream: TextIO | None = None, *, multiline: bool = False) -> str:
    """``text`` safe to print to a terminal: every control character shown as a visible escape (``\\x1b``).

    Parameters
    ----------
    text
        Text that holds fields the command did not write (header values, checkpoint metadata, file names).
    stream
        Where it will be printed: ``text`` is then also made encodable in its encoding. A file name that is not
        valid UTF-8 reaches Python as lone surrogates, which a strict UTF-8 stdout (any UTF-8 locale but C)
        refuses with a traceback; they are shown escaped instead.
    multiline
        Keep newlines and tabs (a model card's lines); otherwise they are escaped too (a table cell or a
        one-line message stays one line).

    Returns
    -------
    str
        ``text`` with C0 controls, DEL, C1 controls and bidirectional overrides replaced by ``\\xNN`` /
        ``\\uNNNN``.
    """
    text = (_UNSAFE_TEXT if multiline else _UNSAFE_LINE).sub(_escape, text)
    if stream is None:
        return text
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding, getattr(stream, "errors", None) or "strict")
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    return text


def _files_of(path: Path, fmt: str) -> list[Path]:
    """The files a NIfTI output or input ``path`` consists of (the image and its JSON sidecar); ``[path]`` else."""
    from medgan.io.nifti import is_nifti_path, nifti_sidecar_path

    return [path, nifti_sidecar_path(path)] if fmt == "nifti" or is_nifti_path(path) else [path]


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same resolved path, or (both existing) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == top or top in real.parents


def _check_folder(path: Path) -> None:
    """``path``'s parent exists, is a folder and takes a new file (created and removed again)."""
    from medgan.errors import MedganError
    from medgan.io.atomic import os_error_reason, parent_problem, temp_sibling

    parent = path.parent
    if not parent.is_dir():
        raise MedganError(f"{path}: the parent folder {parent} {parent_problem(path)}")
    probe = temp_sibling(path)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise MedganError(f"{path}: cannot write to the folder {parent} ({os_error_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def check_inputs(inputs: Iterable[str | os.PathLike[str]], *, outputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse an input that does not exist, before :func:`check_outputs` looks at the outputs.

    With input and output swapped (``medgan degrade --factor 2 missing_lr.nii.gz existing_scan.nii``) the output
    check came first and answered "existing_scan.nii: exists; ... pass --overwrite", inviting the user to overwrite
    their scan with the degraded version of a file that is not there. When an output exists the message adds
    "(IN comes before OUT)".

    Parameters
    ----------
    inputs
        The paths the command reads (IN).
    outputs
        The paths it writes (OUT), only to word the message.

    Raises
    ------
    medgan.errors.MedganError
        An input does not exist (or is a broken link: :func:`medgan.io.discover.missing_reason` says so).
    """
    from medgan.errors import MedganError
    from medgan.io.discover import missing_reason

    for source in inputs:
        path = Path(source)
        if path.exists():
            continue
        swapped = any(Path(o).exists() for o in outputs)
        raise MedganError(f"{path}: {missing_reason(path)}{' (IN comes before OUT)' if swapped else ''}")


#: the name of a slice file of a DICOM series medgan writes (as medgan.io.dicom_write names them)
_SLICE_FILE = re.compile(r"IM[0-9]{4,}\.dcm")


def written_text(path: Path) -> str:
    """How a command's "wrote ..." line names an output it wrote: ``path`` for a NIfTI file, ``a DICOM series (N
    files) into folder X/`` for a DICOM series. "wrote lr.nii.gzz" did not say that ``lr.nii.gzz`` was a folder."""
    if not path.is_dir():
        return str(path)
    # the slice files medgan.io.dicom_write names IM0001.dcm, ...; other files a replaced folder kept are not counted
    count = sum(1 for entry in path.iterdir() if _SLICE_FILE.fullmatch(entry.name) and entry.is_file())
    return f"a DICOM series ({count} file{'s' if count != 1 else ''}) into folder {path}{os.sep}"


def check_outputs(
    outputs: Sequence[str | os.PathLike[str]],
    *,
    inputs: Iterable[str | os.PathLike[str]],
    overwrite: bool,
    fmt: str | None = None,
) -> list[Path]:
    """Refuse outputs that cannot or must not be written, before any work; see the module docstring.

    Parameters
    ----------
    outputs
        The paths the command will write: NIfTI file names, or DICOM series folders.
    inputs
        The paths it reads (a scan file, a DICOM series folder, a label map).
    overwrite
        ``--overwrite``: an existing output file (or non-empty DICOM output folder) may be replaced.
    fmt
        ``--format`` (``None``: from each output's name).

    Returns
    -------
    list of pathlib.Path
        ``outputs`` as paths.

    Raises
    ------
    medgan.errors.MedganError
        The output's folder is missing, a file, or not writable; the output or its sidecar exists (without
        ``overwrite``); it is one of the input's files (or, for DICOM, holds the input); two outputs are the same
        file; ``fmt`` disagrees with the output's name.
    """
    from medgan.errors import MedganError
    from medgan.io.atomic import check_target_dir
    from medgan.io.nifti import nifti_sidecar_path, sidecar_taken_by
    from medgan.io.save import output_kind

    paths = [Path(o) for o in outputs]
    sources = [Path(i) for i in inputs]
    claimed: list[tuple[Path, Path]] = []  # (file, the output it belongs to)
    for path in paths:
        kind = output_kind(path, fmt)  # save_scan's own name rules, before any work
        for source in sources:  # always refused: --overwrite would destroy the input
            source_files = _files_of(source, "file") if source.is_file() else [source]
            for mine in _files_of(path, kind):
                # the input's sidecar counts only when it exists: `convert a.nii.gz a.nii` loses nothing without one
                hit = next((f for f in source_files if _same(mine, f) and (f == source or f.exists())), None)
                if hit is not None:
                    what = (
                        f"is the input {source} itself"
                        if hit == source
                        else f"its sidecar would replace {hit}, the input's"
                    )
                    raise MedganError(f"{path}: {what}; choose another output name (--overwrite never allows this)")
            if kind == "dicom" and _inside(source, path):
                raise MedganError(
                    f"{path}: the output folder is or holds the input {source}; choose another output folder "
                    "(--overwrite never allows this)"
                )
        for mine in _files_of(path, kind):
            other = next((owner for f, owner in claimed if _same(mine, f)), None)
            if other is not None:
                raise MedganError(f"{path}: this output and {other} would be written to the same file {mine}")
            claimed.append((mine, path))
        _check_folder(path)
        if kind == "nifti":
            if path.is_dir():
                raise MedganError(f"{path}: is a folder; a NIfTI output must be a file name")
            if not overwrite:
                if path.exists() or path.is_symlink():
                    raise MedganError(f"{path}: exists; choose another output name or pass --overwrite to replace it")
                twin, sidecar = sidecar_taken_by(path), nifti_sidecar_path(path)
                if twin is not None:
                    raise MedganError(
                        f"{path}: its sidecar {sidecar.name} is that of {twin}, which would lose its provenance; "
                        "choose another output name or pass --overwrite"
                    )
                if sidecar.exists() or sidecar.is_symlink():
                    # any other file of that name (a user's notes, another tool's c.json): save_scan replaces it
                    # with the provenance, which --overwrite's help promises only for "an existing output file
                    # (and its sidecar)"
                    raise MedganError(
                        f"{path}: its sidecar {sidecar} exists; choose another output name or pass --overwrite "
                        "to replace it"
                    )
        else:
            from medgan.io.dicom_write import foreign_entries

            # the DICOM writer's own rule, before any work (it applies it again when it starts writing)
            check_target_dir(path, overwrite, replaceable=foreign_entries)
    return paths


def reproduction_records(argv: Sequence[str] | None, typed: str | os.PathLike[str], source: Any, scan: Any) -> dict:
    """What a one-scan command's output records to be reproduced (``meta["medgan"]``, run-only for the DICOM
    SeriesNumber): ``input_file`` (:func:`medgan.io.save.input_file_record` of ``source``, the ``scan`` read from
    it) and, when ``argv`` is known, ``command`` (:func:`recorded_command`, the input argument ``typed`` written as
    ``input_file``'s cleaned name)."""
    from medgan.io.save import input_file_record

    input_file = input_file_record(source, scan)
    records: dict[str, Any] = {"input_file": input_file}
    command = recorded_command(argv, {str(typed): input_file["name"]}, _source_identifiers(source))
    if command is not None:
        records["command"] = command
    return records


def _source_identifiers(source: Any) -> dict[str, list[tuple[str, ...]]]:
    """The patient identifiers in the header of the DICOM input ``source`` (a path or a ScanRef; none for NIfTI)."""
    from medgan.data.patches import source_identifiers

    try:
        return source_identifiers(source)
    except Exception:  # noqa: BLE001 - a header that cannot be read now was read by load_scan: nothing to cut then
        return {}


def recorded_command(
    argv: Sequence[str] | None, names: Mapping[str, str], identifiers: Mapping[str, Any] | None = None
) -> str | None:
    """The command line as an output records it: each path argument as its file name only, never its folders.

    Parameters
    ----------
    argv
        The command as typed (``args.argv``, set by :func:`pipelines.cli.main`); ``None``: not known.
    names
        Arguments to write as given names (the input path as :func:`medgan.io.save.input_file_record`'s cleaned
        ``name``).
    identifiers
        Patient identifiers (:func:`medgan.io.identifiers.identifying_words`) cut out of every argument.

    Returns
    -------
    str or None
        The shell-quoted command, or ``None`` without ``argv``.

    Notes
    -----
    Why file names only: folders are often named after the patient (``/data/SMITH_JOHN/``), and a NIfTI input has no
    header to clean them with; the file names and the options are what rerunning the command needs.
    """
    import os
    import shlex
    from pathlib import Path

    from medgan.io.identifiers import remove_identifiers

    if not argv:
        return None
    ids = identifiers or {}

    def word(token: str) -> str:
        if token in names:
            return names[token]
        if os.sep in token or (os.altsep and os.altsep in token) or os.path.exists(token):
            token = Path(token).name  # a path (an output, a checkpoint): its name only
        return remove_identifiers(token, ids) if ids else token

    out = [str(argv[0])]
    for token in map(str, argv[1:]):
        key, eq, value = token.partition("=")
        out.append(key + eq + word(value) if eq and key.startswith("-") else word(token))
    return shlex.join(out)
