"""Report figures (matplotlib, "Agg" backend): montages, metric plots, paired plots.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot's global
state (safe in threads and batch workers); :func:`figure_to_png` turns it into PNG
bytes for embedding. Figures carry scan ids and method names only, never header
fields; a name that is not valid UTF-8 (a ``--method`` or file name with a byte such as ``\xff``, which reaches
Python as a lone surrogate) is shown escaped (``SR\udcff``), as the report's text files write it
(:func:`medgan.io.atomic.utf8_bytes`).
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medgan.io.scan import spacing_from_affine

__all__ = [
    "DPI",
    "figure_to_png",
    "orthogonal_slices",
    "orientation_letters",
    "montage",
    "metric_plot",
    "paired_plot",
    "metric_label",
]

#: name and unit of each metric in figure titles (the direction comes from ``stats.HIGHER_IS_BETTER``)
_METRIC_NAMES = {
    "psnr": ("PSNR", "dB"),
    "ssim": ("SSIM", None),
    "nrmse": ("NRMSE", None),
    "mae": ("MAE", "intensity units"),
    "hfen": ("HFEN", None),
    "psnr_full": ("PSNR, whole image", "dB"),
    "ssim_full": ("SSIM, whole image", None),
    "nrmse_full": ("NRMSE, whole image", None),
    "mae_full": ("MAE, whole image", "intensity units"),
    "hfen_full": ("HFEN, whole image", None),
    "lr_consistency_psnr": ("LR consistency PSNR", "dB"),
}


def metric_label(metric: str) -> str:
    """A metric's title with its unit and direction, e.g. ``"PSNR (dB, higher is better)"``; unknown names as given.

    >>> metric_label("nrmse")
    'NRMSE (lower is better)'
    """
    from medgan.eval.stats import HIGHER_IS_BETTER

    if metric not in HIGHER_IS_BETTER:
        return metric
    name, unit = _METRIC_NAMES.get(metric, (metric, None))
    direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
    return f"{name} ({unit + ', ' if unit else ''}{direction})"


#: resolution of embedded figures (small files, fast reports)
DPI = 80
#: paired plots name their points by scan id up to this many scans
MAX_POINT_LABELS = 12
#: planes narrower than this (voxels) are left out of montages when another plane is wider
MIN_PLANE_VOXELS = 8


def _plain_text(fn: Callable) -> Callable:
    """Build (or render) a figure with mathtext off: scan ids and method names label the figures, and a "$" in one
    is text (mathtext rendered it wrongly or raised). Rendering needs it too: tick labels are made at draw time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper


def _shown(text: Any) -> str:
    """``text`` as a figure can draw it: a lone surrogate (a byte of a name that is not UTF-8) written as its escape.

    matplotlib's text layout refuses such a string with a ``TypeError`` at render time, after every scan was scored,
    and no report was written; the report's text files escape it the same way (:func:`medgan.io.atomic.utf8_bytes`).
    """
    from medgan.io.atomic import utf8_bytes

    return utf8_bytes(str(text)).decode("utf-8")


def _new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


@_plain_text
def figure_to_png(fig: Any, *, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes (no metadata beyond matplotlib's Software tag)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _numpy(x: Any) -> np.ndarray:
    from medgan.io.scan import scan_array

    return np.asarray(scan_array(x), dtype=np.float32)  # a tensor on any device, bfloat16 included


def orthogonal_slices(volume: Any, affine: np.ndarray | None = None) -> list[tuple[str, np.ndarray, float]]:
    """Central axial, coronal and sagittal slices of a channel-first scan (first channel).

    The array is reoriented to the closest canonical RAS+ axes first (axis flips and
    permutations only, no resampling), so the planes are anatomical when ``affine`` is known.

    Returns
    -------
    list of (plane name, 2-D image ready for ``imshow(origin="lower")``, pixel aspect)
        Planes less than :data:`MIN_PLANE_VOXELS` wide are dropped unless all are.
    """
    import nibabel as nib

    a = _numpy(volume)[0]
    two_d = a.ndim == 2
    if two_d:
        if affine is None:
            return [("slice", a.T, 1.0)]
        a = a[:, :, None]  # a 2-D scan's affine is 4x4 too: reorient it like a one-slice volume
    spacing = np.ones(3)
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        if two_d and not np.linalg.norm(aff[:3, 2]) > 0:  # no slice normal recorded: the in-plane normal
            aff = aff.copy()
            aff[:3, 2] = np.cross(aff[:3, 0], aff[:3, 1])
        ornt = nib.orientations.io_orientation(aff)
        a = nib.orientations.apply_orientation(a, ornt)
        zooms = np.asarray(spacing_from_affine(aff))
        spacing = zooms[ornt[:, 0].astype(int).argsort()]
    cx, cy, cz = (s // 2 for s in a.shape)
    sx, sy, sz = spacing
    planes = [
        ("axial", a[:, :, cz].T, sy / sx),
        ("coronal", a[:, cy, :].T, sz / sx),
        ("sagittal", a[cx, :, :].T, sz / sy),
    ]
    if two_d:  # the plane that leaves out the (reoriented) one-voxel axis: 2 axial, 1 coronal, 0 sagittal
        k = int(ornt[2, 0])
        return [("slice", planes[2 - k][1], planes[2 - k][2])]
    # a thin slab (a few thick slices) shows only its in-plane view(s); strips of 4 voxels say nothing
    wide = [p for p in planes if min(p[1].shape) >= MIN_PLANE_VOXELS]
    return wide or planes


#: viewer-right / viewer-up RAS+ axes (0 x, 1 y, 2 z) of each plane :func:`orthogonal_slices` returns
_PLANE_AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
#: the opposite of each orientation letter (nibabel's default labels)
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def orientation_letters(plane: str, affine: np.ndarray | None) -> dict[str, str] | None:
    """Patient directions at the ``left`` / ``right`` / ``top`` / ``bottom`` edges of a plane from
    :func:`orthogonal_slices`, or None when they are unknown (no affine, or a 2-D ``"slice"``).

    The letters come from the axis codes (:func:`nibabel.orientations.aff2axcodes`) of the grid that
    :func:`orthogonal_slices` shows: ``affine`` reoriented to its closest canonical axes. That grid is RAS+, so the
    views are in neurological convention: the patient's right is on the viewer's right.

    >>> orientation_letters("axial", np.eye(4))
    {'left': 'L', 'right': 'R', 'top': 'A', 'bottom': 'P'}
    """
    import nibabel as nib

    if affine is None or plane not in _PLANE_AXES:
        return None
    aff = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(aff)
    # the affine of the reoriented array (the shape only moves the origin, which the axis codes ignore)
    shown = aff @ nib.orientations.inv_ornt_aff(ornt, (2, 2, 2))
    codes = nib.orientations.aff2axcodes(shown)
    h, v = (codes[k] for k in _PLANE_AXES[plane])
    return {"left": _OPPOSITE[h], "right": h, "top": v, "bottom": _OPPOSITE[v]}


def _square_pixels(img: np.ndarray, aspect: float, scale: int) -> np.ndarray:
    """Stretch rows so that pixels are square (linear), then enlarge small images by ``scale`` (nearest)."""
    from scipy import ndimage

    if abs(aspect - 1.0) > 1e-3:
        img = ndimage.zoom(img, (aspect, 1.0), order=1)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    return img[::-1]  # row 0 at the bottom, as imshow(origin="lower") would show it


@_plain_text
def montage(
    panels: Mapping[str, Any],
    *,
    reference: str = "reference",
    affine: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    error_of: str | None = None,
    title: str | None = None,
    cell: int = 160,
):
    """Per-scan montage: one column per panel plus an absolute-error column, one row per plane.

    The panels are composed into one RGB mosaic (one ``imshow``) because a grid of a dozen
    matplotlib axes takes seconds per scan to draw.

    Parameters
    ----------
    panels
        Ordered ``{label: channel-first scan}`` on one grid, e.g. ``{"LR cubic": ..., "SR": ...,
        "reference": ...}``.
    reference
        Label of the reference panel.
    affine
        Grid affine (for anatomical planes and square pixels).
    window
        Intensity window ``(low, high)`` shared by every image panel; default: 0.1th-99.9th
        percentile of the reference.
    error_of
        Panel whose ``|panel - reference|`` is shown last (with a colour bar); default: the
        first panel that is not the reference.
    title
        Figure title (a scan id; never header fields).
    cell
        Approximate size in pixels of the longest side of one panel.

    Notes
    -----
    With an ``affine``, the planes are shown in neurological convention (the patient's right on the viewer's right;
    :func:`orthogonal_slices` reorients to RAS+) and each image carries its orientation letters (R/L, A/P, S/I) at
    its edges (:func:`orientation_letters`). The error column's colour bar is in the scans' intensity units.
    """
    import matplotlib

    labels = list(panels)
    ref = _numpy(panels[reference])
    if window is None:
        lo, hi = np.percentile(ref[np.isfinite(ref)], [0.1, 99.9])
        window = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
    error_of = error_of or next(k for k in labels if k != reference)
    error = np.abs(_numpy(panels[error_of]) - ref)
    finite_error = error[np.isfinite(error)]  # one NaN voxel must not blank the whole error panel
    emax = (float(np.percentile(finite_error, 99.9)) if finite_error.size else 0.0) or 1.0
    columns = [orthogonal_slices(panels[k], affine) for k in labels] + [orthogonal_slices(error, affine)]
    longest = max(max(img.shape[0] * max(asp, 1.0), img.shape[1]) for img, asp in ((i, a) for _, i, a in columns[0]))
    scale = max(1, int(round(cell / longest)))
    gray, magma = matplotlib.colormaps["gray"], matplotlib.colormaps["magma"]
    tiles = []
    for j, slices in enumerate(columns):
        col = []
        for _, img, aspect in slices:
            img = _square_pixels(np.nan_to_num(img), aspect, scale)
            if j < len(labels):
                rgb = gray(np.clip((img - window[0]) / (window[1] - window[0]), 0, 1))[..., :3]
            else:
                rgb = magma(np.clip(img / emax, 0, 1))[..., :3]
            col.append(rgb)
        tiles.append(col)
    nrows, ncols, gap = len(tiles[0]), len(tiles), 4
    heights = [max(tiles[j][i].shape[0] for j in range(ncols)) for i in range(nrows)]
    widths = [max(tiles[j][i].shape[1] for i in range(nrows)) for j in range(ncols)]
    mosaic = np.ones((sum(heights) + gap * (nrows - 1), sum(widths) + gap * (ncols - 1), 3))
    y = 0
    for i in range(nrows):
        x = 0
        for j in range(ncols):
            t = tiles[j][i]
            mosaic[y : y + t.shape[0], x : x + t.shape[1]] = t
            x += widths[j] + gap
        y += heights[i] + gap
    h_px, w_px = mosaic.shape[:2]
    planes = [plane for plane, _, _ in columns[0]]
    # a row label turned on its side needs the row to be as tall as the text (about 6 px a character at 9 pt);
    # a thin volume's sagittal row is not, so that label is written across and the margin widened for it
    upright = [heights[i] >= 6 * len(p) + 4 for i, p in enumerate(planes)]
    left = (
        40 if all(upright) else max(40, 6 * max(len(p) for p, up in zip(planes, upright, strict=True) if not up) + 10)
    )
    right, top, bottom = 90, 40 if title else 22, 6
    fig = _new_figure((w_px + left + right) / DPI, (h_px + top + bottom) / DPI)
    W, H = w_px + left + right, h_px + top + bottom
    ax = fig.add_axes((left / W, bottom / H, w_px / W, h_px / H))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    x = 0
    # the labels are keys of ``panels`` (method names, as --method gave them): shown escaped, looked up as given
    for j, label in enumerate([*labels, f"|{error_of} - {reference}|"]):
        ax.text(x + widths[j] / 2, -4, _shown(label), ha="center", va="bottom", fontsize=9)
        x += widths[j] + gap
    y = 0
    for i, plane in enumerate(planes):
        ax.text(-4, y + heights[i] / 2, plane, ha="right", va="center", rotation=90 if upright[i] else 0, fontsize=9)
        y += heights[i] + gap
    # orientation letters at the edges of every image (a mirror-reversed reading of an unlabelled view is easy)
    letter = {"fontsize": 7, "color": "yellow", "fontweight": "bold"}
    y = 0
    for i, plane in enumerate(planes):
        edges = orientation_letters(plane, affine)
        x = 0
        for j in range(ncols):
            th, tw = tiles[j][i].shape[:2]
            if edges is not None and min(th, tw) >= 24:  # no room on a tiny tile
                ax.text(x + 2, y + th / 2, edges["left"], ha="left", va="center", **letter)
                ax.text(x + tw - 2, y + th / 2, edges["right"], ha="right", va="center", **letter)
                ax.text(x + tw / 2, y + 1, edges["top"], ha="center", va="top", **letter)
                ax.text(x + tw / 2, y + th - 1, edges["bottom"], ha="center", va="bottom", **letter)
            x += widths[j] + gap
        y += heights[i] + gap
    cax = fig.add_axes(((left + w_px + 10) / W, bottom / H, 12 / W, h_px / H))
    sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, emax), cmap=magma)
    cbar = fig.colorbar(sm, cax=cax)
    cbar.set_label("absolute error (intensity units)", fontsize=8)
    cax.tick_params(labelsize=8)
    if title:
        fig.suptitle(f"{_shown(title)}  (window {window[0]:.4g} to {window[1]:.4g})", fontsize=9, y=1 - 4 / H, va="top")
    return fig


@_plain_text
def metric_plot(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    methods: Sequence[str] | None = None,
):
    """Box plot with the per-scan points overlaid (strip), one panel per metric, one box per method."""
    methods = list(methods or dict.fromkeys(str(r["method"]) for r in rows))
    metrics = list(metrics)
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = _new_figure(max(2.6 * ncols, 3.0), 2.6 * nrows)
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(metrics) :]:
        ax.set_visible(False)
    rng = np.random.default_rng(0)  # jitter only
    for ax, metric in zip(grid[: len(metrics)], metrics, strict=True):
        data = [
            [
                float(r[metric])
                for r in rows
                if r["method"] == m and isinstance(r.get(metric), int | float) and np.isfinite(r[metric])
            ]
            for m in methods
        ]
        ax.boxplot([d if d else [np.nan] for d in data], showfliers=False)
        for k, d in enumerate(data, start=1):
            ax.plot(k + rng.uniform(-0.12, 0.12, len(d)), d, "o", ms=3, alpha=0.7, color="tab:blue")
        # the rows are matched by the method names as given; the tick labels show them escaped
        ax.set_xticks(range(1, len(methods) + 1), [_shown(m) for m in methods], rotation=30, fontsize=8)
        # wrapped at draw time to stay inside the figure: a long label ("LR consistency PSNR (dB, higher is
        # better)") was clipped at the edge of the last column (the title text itself stays one line)
        ax.set_title(_shown(metric_label(metric)), fontsize=9, wrap=True)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


@_plain_text
def paired_plot(
    rows: Sequence[Mapping[str, Any]],
    *,
    method: str,
    baseline: str,
    metrics: Sequence[str] = ("psnr", "ssim"),
):
    """Per-scan ``method`` against ``baseline`` (one point per scan, labelled with its scan id when there are at most
    :data:`MAX_POINT_LABELS`) with the identity line; each title gives the metric's unit and direction."""
    from medgan.eval.stats import metric_values

    metrics = list(metrics)
    fig = _new_figure(2.9 * len(metrics), 2.9)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        va, vb = metric_values(rows, method, metric), metric_values(rows, baseline, metric)
        common = [s for s in va if s in vb]
        x = np.array([vb[s] for s in common])
        y = np.array([va[s] for s in common])
        ax.plot(x, y, "o", ms=4)
        if len(common) <= MAX_POINT_LABELS:
            for sid, xi, yi in zip(common, x, y, strict=True):
                ax.annotate(_shown(sid), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6)
        if common:
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="gray", lw=1)
        ax.set_xlabel(_shown(baseline), fontsize=8)
        ax.set_ylabel(_shown(method), fontsize=8)
        # above the dashed line: the method scored higher than the baseline (better or worse by the title)
        ax.set_title(textwrap.fill(_shown(metric_label(metric)), 34), fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig
