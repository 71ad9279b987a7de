"""Header values the series reader reads, parsed straight from the raw element bytes.

Why hand-written: pydicom converts a raw element on its first access through its generic machinery (keyword
lookup, VR hooks, validation, MultiValue), about 10 us per element. The grouping and the planner read some 40
numeric and UID elements per file, so a 4-file series spent about 1 ms, a fifth of its whole load, in conversions
(cProfile, 2026-12-06). :func:`header_value` parses the few value representations these elements use (DS, IS, the
binary integers and floats, strings of the default repertoire: UI, CS, DA, TM, AS, AE, and single-valued ASCII
SH, LO and PN text) from the bytes pydicom kept; anything else (a converted element, another VR, several text values,
non-ASCII bytes, an ISO 2022 escape, an odd or invalid value) is left to pydicom's own ``Dataset.get``, so the result
is pydicom's. (pydicom's value-validation warnings, which the reader silences anyway, are not repeated here.)
DA and TM come back as the text in the file, as pydicom gives them unless ``pydicom.config.datetime_conversion`` is
on. ``tests/test_dicom_fast_paths.py`` compares both on every corpus file. One departure: a number pydicom's
conversion overflows on (IS ``1e999``) comes back as its text, as pydicom returns other numbers it cannot convert,
instead of pydicom's OverflowError (see :func:`_pydicom_value`).
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import Any

__all__ = ["header_path", "header_value", "value_text"]

#: string value representations in the default character repertoire whatever SpecificCharacterSet says (pydicom
#: decodes them as ISO 8859-1 and strips trailing spaces and NULs)
_STRINGS = {"UI", "CS", "DA", "TM", "AS", "AE"}
#: string value representations whose decoding depends on SpecificCharacterSet: parsed only when ASCII (see _parse)
_TEXT = {"SH", "LO", "PN"}
#: binary value representations: struct code and item size
_BINARY = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FL": ("f", 4), "FD": ("d", 8)}


@lru_cache(maxsize=256)
def _tag_and_vr(keyword: str) -> tuple[int, str] | None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword  # pydicom is imported when DICOM is read
    from pydicom.tag import BaseTag

    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return BaseTag(tag), dictionary_VR(tag)  # a BaseTag passes pydicom's Tag() at its first check
    except KeyError:
        return None


@lru_cache(maxsize=1)
def _raw_element_type() -> type:
    from pydicom.dataelem import RawDataElement

    return RawDataElement


def _parse(raw: Any, vr: str, as_text: bool = False) -> Any:
    """The value pydicom would return, or raise ValueError where this parser leaves it to pydicom."""
    data = raw.value
    if not isinstance(data, bytes):
        raise ValueError("deferred or unexpected value")
    if vr in _BINARY:
        code, size = _BINARY[vr]
        n, rest = divmod(len(data), size)
        if rest or n == 0:
            raise ValueError("odd length")
        values = struct.unpack(("<" if raw.is_little_endian else ">") + code * n, data)
        return values[0] if n == 1 else list(values)  # pydicom returns a list for several binary values
    text = data.decode("ascii").rstrip(" \0")  # non-ASCII: UnicodeDecodeError is a ValueError
    if not text:
        raise ValueError("empty: pydicom's own empty value")
    if vr in _STRINGS:
        if "\\" in text:
            if as_text:
                raise ValueError("several strings shown as text: pydicom's MultiValue formats them")
            return text.split("\\")  # as pydicom's multi_string splits them (a MultiValue of str)
        return text
    if vr in _TEXT:
        # Character-set-dependent VRs: ASCII bytes without an ISO 2022 escape (ESC) decode to the same text in
        # every character set DICOM names; pydicom strips trailing spaces and NULs from each value.
        if "\\" in text or "\x1b" in text:
            raise ValueError("several values or an ISO 2022 escape: pydicom decodes")
        if vr == "PN" and (not as_text or "=" in text):
            raise ValueError("pydicom returns a PersonName (whose text drops empty trailing '=' groups)")
        return text
    parts = [p.strip(" ") for p in text.split("\\")]
    if vr == "DS":
        values = [float(p) for p in parts if _plain_number(p)]
    elif vr == "IS":
        values = [int(p) for p in parts if p.lstrip("+-").isdigit()]
    else:
        raise ValueError(f"VR {vr} is not parsed here")
    if len(values) != len(parts):
        raise ValueError("a value pydicom must judge")
    return values[0] if len(values) == 1 else values


def _pydicom_value(ds: Any, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, but the text of a value whose conversion overflows instead of OverflowError.

    pydicom converts a DS or IS value it cannot parse (``"abc"``) by retrying the element as SH text, but only after
    a ValueError: IS ``"1e999"`` becomes ``float("inf")``, whose ``int()`` raises OverflowError, which escapes
    ``Dataset.get``. Its text is returned here as the retry would give it (a list for several values), so that the
    reader treats it like any other unparseable number.
    """
    try:
        return ds.get(keyword, default)
    except OverflowError:
        found = _tag_and_vr(keyword)
        raw = ds.get_item(found[0], keep_deferred=True) if found is not None else None
        data = getattr(raw, "value", None)
        if not isinstance(data, bytes):
            raise
        parts = data.decode("latin-1").rstrip(" \0").split("\\")
        return parts[0] if len(parts) == 1 else parts


def header_path(ds: Any) -> str:
    """File name a header was read from (``<unknown file>`` when it came from memory)."""
    name = getattr(ds, "filename", None)
    return str(name) if isinstance(name, str | os.PathLike) else "<unknown file>"


def value_text(value: Any, limit: int = 40) -> str:
    """A (damaged) header value for messages: as DICOM writes it (values joined by backslashes), printable, cut short.

    Only for non-identifying elements (geometry, spacing): never patient or study values.
    """
    if isinstance(value, str | int | float):
        text = str(value)
    else:
        text = "\\".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_number(text: str) -> bool:
    # float() also accepts "nan", "inf" and "1_0", which pydicom treats differently: leave those to it
    return bool(text) and not text.strip("0123456789+-.eE")


def header_value(ds: Any, keyword: str, *, text: bool = False, default: Any = None) -> Any:
    """``ds.get(keyword)``, parsed from the raw bytes where that is safe (see module docstring).

    Parameters
    ----------
    ds
        A pydicom ``Dataset`` (a file's header or a sequence item).
    keyword
        A standard DICOM keyword.
    text
        The value will be shown as text (``str(value)``): numbers are then pydicom's own (its DS and IS values
        print as written in the file, ``"070"`` rather than ``70``), only strings are parsed here.
    default
        What an absent element gives.

    Returns
    -------
    Any
        ``default`` when the element is absent; otherwise the value as pydicom returns it: a number, a string, or a list
        of numbers or strings where pydicom returns a ``MultiValue`` of them (equal element by element).
    """
    found = _tag_and_vr(keyword)
    get_item = getattr(ds, "get_item", None)
    if found is None or get_item is None:
        return _pydicom_value(ds, keyword, default)
    tag, dict_vr = found
    try:
        raw = get_item(tag, keep_deferred=True)
    except Exception:  # a damaged element: pydicom reports it
        return _pydicom_value(ds, keyword, default)
    if raw is None:
        return default
    if not isinstance(raw, _raw_element_type()):
        return _pydicom_value(ds, keyword)  # already converted (or a sequence)
    vr = raw.VR or dict_vr
    if vr != dict_vr:  # explicit VR that contradicts the dictionary (e.g. UN): pydicom's rules apply
        return _pydicom_value(ds, keyword)
    if text and vr not in _STRINGS and vr not in _TEXT:
        return _pydicom_value(ds, keyword)
    try:
        return _parse(raw, vr, text)
    except (ValueError, struct.error):
        return _pydicom_value(ds, keyword)
