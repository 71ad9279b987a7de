"""Patient identifiers typed into free text (a SeriesDescription, a DICOM file name): found and cut out.

Discovery names a scan (:attr:`medgan.io.discover.ScanRef.id`, which names output files, manifests and logs) after
its SeriesDescription, where sites type the patient's name or record number; DICOM PS3.15 Annex E cleans that
attribute. No library cleans free text against a header's own values (pydicom's and dicognito's de-identification
replace whole attributes), hence this module: it cuts, as whole words, the values of the series' own identifying
attributes, and leaves any other text unchanged, so ids made from clean descriptions do not change.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from medgan.io.dicom_values import header_value

__all__ = [
    "REMOVED",
    "file_identifiers",
    "read_file_identifiers",
    "identifying_words",
    "merge_identifiers",
    "remove_identifiers",
    "remove_identifiers_from_path",
]

#: Header attributes whose values are cut, whole token, out of a series' description and out of the file name its id
#: falls back to (DICOM PS3.15 Annex E cleans SeriesDescription: sites type the patient's name or record number there,
#: and the id names output files, manifests and logs). Person names are matched word by word (any order, so "DOE
#: JOHN" and "John Doe" both go), identifiers and the birth date as a whole value in any separator spelling.
_NAME_ATTRIBUTES = ("PatientName", "OtherPatientNames")
_ID_ATTRIBUTES = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber")
#: a word: a run of letters and digits; everything else (``^ _ - . , /``, spaces, brackets) separates words
_WORD = re.compile(r"[^\W_]+")
#: separators dropped where a removed value began or ended the text
_EDGE_SEPARATORS = " _-.,^;:=+"
#: identifiers (IDs, accession numbers, digit-only name parts) shorter than this are not cut: "01" or "MR" would take
#: ordinary words out of descriptions ("Series 01", "MR Brain") and identify no one
_MIN_ID_CHARS = 3
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}|<\s*>")
#: what a path component that spelled identifiers only becomes (:func:`remove_identifiers_from_path`): a marker rather
#: than nothing, so that what is left names no other folder (``in/DOE_JOHN/T1`` must not read ``in/T1``)
REMOVED = "<removed>"
#: what separates the components of a path (either separator: a Windows path typed on another machine)
_PATH_SEPARATORS = re.compile(r"([/\\])")


def _fold(word: str) -> str:
    """A word compared without case or accents (``Müller`` matches ``MULLER``, as the id's ASCII slug shows it)."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _readable_texts(ds: Any, keyword: str) -> list[str]:
    """The text values of ``keyword`` in ``ds``; none when the element cannot be read (garbage values)."""
    try:
        return _header_texts(ds, keyword)
    except Exception:
        return []


def _header_texts(ds: Any, keyword: str) -> list[str]:
    value = header_value(ds, keyword, text=True)
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # several values (a MultiValue)
        return [str(v) for v in value if v is not None]
    return [str(value)]


def identifying_words(ds: Any) -> dict[str, list[tuple[str, ...]]]:
    """The word sequences of a DICOM header's patient-identifying values, to cut out of its description.

    Parameters
    ----------
    ds : pydicom.Dataset
        A file's header, as discovery read it (every element but the pixel data is there: no extra read).

    Returns
    -------
    dict
        Folded first word (:func:`_fold`) -> the folded word sequences starting with it, longest first. Each word
        with a letter and 2 or more characters of the family, given and middle names of PatientName and
        OtherPatientNames (all three representations), and each such component whole (``sub-01``); each whole
        value of PatientID, OtherPatientIDs (and the PatientID of each OtherPatientIDsSequence item),
        IssuerOfPatientID and AccessionNumber of 3 or more characters; the
        PatientBirthDate as ``YYYYMMDD``, ``DDMMYYYY``, and year, month, day (or day, month, year; month, day,
        year) separated by anything. An attribute whose value cannot be read gives nothing; the others still do.
    """
    sequences: set[tuple[str, ...]] = set()
    # each attribute on its own: one garbage value (a wrong VR, an undecodable string) must not drop the identifiers
    # the other attributes give (one try around all of them returned none, and the name reached the id)
    for keyword in _NAME_ATTRIBUTES:
        for name in _readable_texts(ds, keyword):
            for group in name.split("="):  # alphabetic, ideographic and phonetic representations
                for component in group.split("^")[:3]:  # family, given, middle; not prefix or suffix
                    words = [_fold(w) for w in _WORD.findall(component)]
                    # a word with a letter on its own (any order: "John Doe"); digits only with their component
                    # ("sub-01" as a whole: "01" alone would cut "Series 01")
                    sequences.update((w,) for w in words if len(w) >= 2 and not w.isdigit())
                    if len(words) > 1 and sum(len(w) for w in words) >= _MIN_ID_CHARS:
                        sequences.add(tuple(words))
    values = [v for keyword in _ID_ATTRIBUTES for v in _readable_texts(ds, keyword)]
    with contextlib.suppress(Exception):  # a sequence element in another VR, a damaged item
        for item in ds.get("OtherPatientIDsSequence") or ():
            if isinstance(item, Dataset):
                values.extend(_readable_texts(item, "PatientID"))
    for value in values:
        words = tuple(_fold(w) for w in _WORD.findall(value))
        if sum(len(w) for w in words) >= _MIN_ID_CHARS:  # a short ID ("1", "01", "MR") would cut ordinary words
            sequences.add(words)
    for birth in _readable_texts(ds, "PatientBirthDate"):
        birth = birth.strip()
        if re.fullmatch(r"\d{8}", birth):
            y, m, d = birth[:4], birth[4:6], birth[6:]
            sequences.update({(birth,), (d + m + y,), (y, m, d), (d, m, y), (m, d, y)})
    index: dict[str, list[tuple[str, ...]]] = {}
    for words in sorted(sequences, key=len, reverse=True):
        if words:
            index.setdefault(words[0], []).append(words)
    return index


def _tidy_gap(gap: str, start: bool, end: bool) -> str:
    """The separators left where removed words were: no empty brackets, no doubled separator, none at an edge."""
    previous = None
    while previous != gap:
        previous, gap = gap, _EMPTY_BRACKETS.sub(" ", gap)
    gap = re.sub(r"([^\w]|_)\1+", r"\1", gap)  # "T1__FLAIR" -> "T1_FLAIR"
    parts = gap.split()
    if len(parts) > 1 and len(set(parts)) == 1:  # "T1 - DOE - FLAIR" -> "T1 - FLAIR"
        gap = (" " if gap[0].isspace() else "") + parts[0] + (" " if gap[-1].isspace() else "")
    if start:
        gap = gap.lstrip(_EDGE_SEPARATORS)
    if end:
        gap = gap.rstrip(_EDGE_SEPARATORS)
    return gap if gap or start or end else " "


def remove_identifiers(text: str, identifiers: Mapping[str, Sequence[tuple[str, ...]]]) -> str:
    """``text`` without the words that spell one of ``identifiers`` (from :func:`identifying_words`).

    A value is removed only as whole words (``MRN123456`` is not cut out of ``XMRN123456``), case- and
    accent-insensitively, whatever separates its words in ``text``. Text that holds none is returned unchanged
    (so are the ids made from it); otherwise the separators around a removed value are tidied.

    Parameters
    ----------
    text
        A series description or file stem.
    identifiers
        Folded first word -> word sequences, longest first.

    Returns
    -------
    str
        The text left, possibly empty. (Nothing is logged: the removed values are what must not be shown.)
    """
    given = text
    # composed first: in NFD ("Mu" + U+0308 + "ller", as macOS HFS+ names files) the combining mark is no word
    # character, so "Müller" was two words, matched no name, and reached the id as "Muller"
    text = unicodedata.normalize("NFC", text)
    words = list(_WORD.finditer(text)) if identifiers else []
    folded = tuple(_fold(m.group()) for m in words)
    removed = [False] * len(words)
    i = 0
    while i < len(words):
        hit = next((s for s in identifiers.get(folded[i], ()) if folded[i : i + len(s)] == s), None)
        step = len(hit) if hit else 1
        if hit:
            removed[i : i + step] = [True] * step
        i += step
    if not any(removed):
        return given  # unchanged, in its own normal form
    # the separators between words; a run of removed words takes its inner separators (DOE^JOHN, 1970-01-02) along,
    # and the ones on either side of it are joined and tidied
    seps = [text[: words[0].start()]]
    seps += [text[words[k - 1].end() : words[k].start()] for k in range(1, len(words))]
    seps.append(text[words[-1].end() :])
    out = [seps[0]]
    k = 0
    while k < len(words):
        if not removed[k]:
            out += [words[k].group(), seps[k + 1]]
            k += 1
            continue
        end = k
        while end < len(words) and removed[end]:
            end += 1
        out.append(_tidy_gap(out.pop() + seps[end], start=k == 0, end=end == len(words)))
        k = end
    return "".join(out)


def merge_identifiers(*indexes: Mapping[str, Sequence[tuple[str, ...]]]) -> dict[str, list[tuple[str, ...]]]:
    """The union of several :func:`identifying_words` indexes (the series of one run: every scan's patient).

    Parameters
    ----------
    *indexes
        Folded first word -> word sequences.

    Returns
    -------
    dict
        Folded first word -> the word sequences of every index starting with it, longest first (then sorted, so
        that the same indexes give the same dict).
    """
    sequences = {tuple(s) for index in indexes for seqs in index.values() for s in seqs if s}
    out: dict[str, list[tuple[str, ...]]] = {}
    for words in sorted(sequences, key=lambda w: (-len(w), w)):
        out.setdefault(words[0], []).append(words)
    return out


def file_identifiers(path: Any) -> dict[str, list[tuple[str, ...]]]:
    """:func:`identifying_words` of a DICOM file's header (read without its pixel data).

    Parameters
    ----------
    path
        A file.

    Returns
    -------
    dict
        The index; empty for a file that is no DICOM file (a NIfTI header holds no patient identifier) or that
        cannot be read. Read by :func:`medgan.io.dicom_read.read_dicom_header`, as the scan itself is read: a file
        without the 128-byte preamble and ``DICM`` (older scanners and PACS exports write them) is DICOM too, and
        ``dcmread`` without ``force`` refused it, so its patient's identifiers were not known. pydicom's warnings,
        which may quote header values, are silenced while reading.
    """
    return read_file_identifiers(path) or {}


def read_file_identifiers(path: Any) -> dict[str, list[tuple[str, ...]]] | None:
    """:func:`file_identifiers`, telling a header without identifiers (an anonymised file: ``{}``) from a file with
    no header that can be read at all (``None``): a batch run cleans the path of the latter with its neighbours'
    identifiers, never the path of the former."""
    import pydicom

    # imports this module's neighbours: not at import time
    from medgan.io.dicom_frames import quiet_pydicom
    from medgan.io.dicom_read import read_dicom_header

    try:
        ds = read_dicom_header(path)
    except Exception:  # not DICOM (ScanReadError), missing; or damaged, which the header may still name
        try:
            # a file cut short in its pixel data: its header, which holds the identifiers, is whole
            with quiet_pydicom():
                ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # not DICOM (InvalidDicomError), missing, damaged: no identifier known from it
            return None
    return identifying_words(ds)


def remove_identifiers_from_path(path: str, identifiers: Mapping[str, Sequence[tuple[str, ...]]]) -> str:
    """``path`` with each component cleaned by :func:`remove_identifiers`; a component left without a word is
    :data:`REMOVED`.

    Folders are named after patients (``SMITH_JOHN_123456/ACC789_T1``); each component is cleaned on its own, so no
    removal joins two components (``in/SMITH_JOHN/T1`` becomes ``in/<removed>/T1``, not ``in/T1``, a path that may
    name another folder).

    Parameters
    ----------
    path
        A path (either separator), absolute or relative, or any other text.
    identifiers
        Folded first word -> word sequences (:func:`identifying_words`, :func:`merge_identifiers`).

    Returns
    -------
    str
        ``path`` itself when it holds no identifier; otherwise the cleaned path, its separators as they were.
    """
    if not identifiers:
        return path
    out = []
    for part in _PATH_SEPARATORS.split(path):
        if not part or _PATH_SEPARATORS.fullmatch(part):
            out.append(part)
            continue
        cleaned = remove_identifiers(part, identifiers)
        out.append(cleaned if cleaned == part or _WORD.search(cleaned) else REMOVED)
    return "".join(out)
