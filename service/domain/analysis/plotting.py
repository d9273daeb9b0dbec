"""Pictures of models and data: covariance ellipses, PCA projections, PNG/SVG figures.

Never ``matplotlib.pyplot``: pyplot keeps a process-wide current figure and backend
that every request thread would share. Each picture here is its own ``Figure`` on an
Agg canvas, saved into a ``BytesIO``. matplotlib documents itself as not thread-safe
beyond that (caches inside text layout and artists), so drawing also holds a lock: a
plot takes tens of milliseconds, and serialising them is cheaper than a subtle race.
Every picture the service draws goes through ``draw``, which holds that lock from the
new figure to the saved bytes.

The ellipses, projections and components drawn come from ``geometry``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.domain.analysis.geometry import (
    N_SIGMAS,
    Components,
    Projection,
    SigmaEllipse,
    ellipse_axes,
    model_components,
    projection_for,
    subsample,
)
from service.domain.training import estimators
from service.domain.training.warnings_capture import capture_warnings
from service.errors import InvalidInput, UnsupportedOperation
from service.schemas.data import GaussianMixtureSpec, GeneratorSpec

if TYPE_CHECKING:  # matplotlib itself is imported by the first plot (see _mpl)
    from matplotlib.figure import Figure

PlotFormat = Literal["png", "svg"]

#: Scatter plots with more points than this are rasterised inside an SVG, which
#: would otherwise hold one XML element per point.
SVG_RASTER_POINTS = 5_000

MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}

_DRAW_LOCK = threading.Lock()
#: Legends sit right of the axes (constrained layout makes room) so they hide no points.
_LEGEND: dict[str, Any] = {
    "loc": "upper left",
    "bbox_to_anchor": (1.01, 1.0),
    "fontsize": "small",
    "frameon": False,
}


# -- drawing ----------------------------------------------------------------------
@dataclass(frozen=True)
class FigureSize:
    """Picture size in pixels, and its resolution in dots per inch.

    A PNG is exactly ``width x height`` pixels, whatever ``dpi``. ``dpi`` sets how
    large text, lines and markers are against the picture: the figure is
    ``width / dpi x height / dpi`` inches, and matplotlib sizes fonts in points
    (1/72 inch). An SVG is that many inches (``72 * width / dpi`` points wide), with
    ``dpi`` also the resolution of scatter points rasterised inside it.
    """

    width: int = 640
    height: int = 480
    dpi: int = 100

    def inches(self) -> tuple[float, float]:
        """matplotlib's ``figsize``, each side nudged up so that Agg, which truncates
        ``inches * dpi`` to an integer, makes exactly ``width x height`` pixels."""
        return _inches(self.width, self.dpi), _inches(self.height, self.dpi)


def _inches(pixels: int, dpi: int) -> float:
    inches = pixels / dpi
    while inches * dpi < pixels:  # 333 / 100 * 100 == 332.99999999999994
        inches = math.nextafter(inches, math.inf)
    return inches


def _mpl() -> Any:
    """matplotlib, imported by the first plot rather than at start-up.

    It is the slowest import of the service (about half a second), and most
    processes never draw: a worker that only fits and predicts answers ``/healthz``
    sooner for not loading it.
    """
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    import matplotlib.lines
    import matplotlib.patches

    return matplotlib


def _colors(k: int) -> np.ndarray:
    """(k, 3) RGB: qualitative palettes while they last, then evenly spaced turbo."""
    if k <= 10:
        return np.asarray(_mpl().colormaps["tab10"].colors)[:k]  # type: ignore[attr-defined]
    if k <= 20:
        return np.asarray(_mpl().colormaps["tab20"].colors)[:k]  # type: ignore[attr-defined]
    cmap = _mpl().colormaps["turbo"]
    return np.asarray(cmap(np.linspace(0.05, 0.95, k)))[:, :3]


def draw(size: FigureSize, fmt: PlotFormat, paint: Callable[[Figure], None]) -> bytes:
    """The bytes of a new figure of ``size`` once ``paint`` has drawn on it.

    The one way the service makes a picture: the draw lock is held from the new
    figure to the saved bytes, so no two pictures are ever drawn at once.
    """
    with _DRAW_LOCK:
        mpl = _mpl()
        fig = mpl.figure.Figure(figsize=size.inches(), dpi=size.dpi, layout="constrained")
        mpl.backends.backend_agg.FigureCanvasAgg(fig)
        paint(fig)
        buf = io.BytesIO()
        # No dates or version stamps: the same model gives the same bytes (PNG).
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        # Layout warnings ("constrained_layout not applied" on a tiny figure) are
        # cosmetic: the figure falls back to default margins. Collected, then dropped.
        with capture_warnings():
            fig.savefig(buf, format=fmt, dpi=size.dpi, metadata=metadata)
        return buf.getvalue()


def _marker_size(n: int) -> float:
    """Points shrink as they multiply, so clusters stay readable."""
    return float(np.clip(8000.0 / max(n, 1), 1.5, 25.0))


def _scatter_axes(
    fig: Figure,
    *,
    points: np.ndarray,
    labels: np.ndarray,
    n_colors: int,
    means: np.ndarray | None,
    ellipses: list[list[SigmaEllipse]] | None,
    ids: np.ndarray,
    legend: list[tuple[int, str]],
    xlabel: str,
    ylabel: str,
    fmt: PlotFormat,
) -> None:
    colors = _colors(n_colors)
    ax = fig.add_subplot()
    labels = np.asarray(labels, dtype=np.int64)
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=colors[np.clip(labels, 0, n_colors - 1)],
        s=_marker_size(len(points)),
        alpha=0.75 if len(points) <= 2000 else 0.5,
        linewidths=0,
        rasterized=fmt == "svg" and len(points) > SVG_RASTER_POINTS,
        zorder=2,
    )
    if ellipses is not None and means is not None:
        alphas = {1: 0.95, 2: 0.65, 3: 0.4}
        for i, mean, sigmas in zip(ids, means, ellipses, strict=True):
            for s in sigmas:
                ax.add_patch(
                    _mpl().patches.Ellipse(
                        (float(mean[0]), float(mean[1])),
                        s.width,
                        s.height,
                        angle=s.angle,
                        fill=False,
                        edgecolor=colors[i % n_colors],
                        linewidth=1.6,
                        alpha=alphas.get(s.n_sigma, 0.3),
                        zorder=3,
                    )
                )
    if means is not None:
        # A white cross under a black one stays visible on any cluster colour.
        for colour, width, size in (("white", 4.0, 110.0), ("black", 2.0, 80.0)):
            ax.scatter(
                means[:, 0], means[:, 1], marker="x", c=colour, s=size, linewidths=width, zorder=5
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.25)
    ax.autoscale_view()
    xr, yr = np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())
    # Equal scales keep ellipse angles true to the eye, unless they would flatten the data.
    if xr > 0 and yr > 0 and max(xr / yr, yr / xr) <= 5:
        ax.set_aspect("equal", adjustable="datalim")
    if 0 < len(legend) <= 12:
        handles: list[Any] = [
            _mpl().lines.Line2D([], [], marker="o", linestyle="", color=colors[i], label=name)
            for i, name in legend
        ]
        if means is not None:
            handles.append(
                _mpl().lines.Line2D(
                    [], [], marker="x", linestyle="", color="black", label="mean", mew=2
                )
            )
        if ellipses is not None:
            sigma = "\N{GREEK SMALL LETTER SIGMA}"
            label = ", ".join(f"{n}{sigma}" for n in N_SIGMAS)
            handles.append(_mpl().lines.Line2D([], [], color="grey", label=label))
        ax.legend(handles=handles, **_LEGEND)


def _histogram_axes(
    fig: Figure,
    *,
    x: np.ndarray,
    labels: np.ndarray,
    n_colors: int,
    components: Components | None,
    n_total: int,
    legend: list[tuple[int, str]],
) -> None:
    """One feature: a stacked histogram by label, and each component's weighted density."""
    colors = _colors(n_colors)
    ax = fig.add_subplot()
    labels = np.asarray(labels, dtype=np.int64)
    groups = [x[labels == i] for i in range(n_colors)]
    lo, hi = float(np.min(x)), float(np.max(x))
    if components is not None and components.covariances is not None:
        sd = np.sqrt(np.maximum(components.covariances[:, 0, 0], 0.0))
        lo = min(lo, float(np.min(components.means[:, 0] - 3 * sd)))
        hi = max(hi, float(np.max(components.means[:, 0] + 3 * sd)))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, int(np.clip(np.sqrt(len(x)), 10, 80)) + 1)
    ax.hist(groups, bins=bins, stacked=True, color=list(colors), alpha=0.75, zorder=2)
    if components is not None:
        ids = components.drawn_indices()
        means = components.means[ids, 0]
        if components.covariances is not None and components.weights is not None:
            # Expected counts per bin: n * bin width * w * N(x | mean, var).
            grid = np.linspace(lo, hi, 400)
            scale = len(x) * (bins[1] - bins[0])
            for i in ids:
                var = float(components.covariances[i, 0, 0])
                if var <= 0:
                    continue
                mu = float(components.means[i, 0])
                pdf = np.exp(-0.5 * (grid - mu) ** 2 / var) / math.sqrt(2 * math.pi * var)
                ax.plot(grid, scale * components.weights[i] * pdf, color=colors[i], lw=1.8)
        ax.scatter(means, np.zeros_like(means), marker="x", c="black", s=80, linewidths=2, zorder=5)
    ax.set_xlabel("feature 0")
    ax.set_ylabel("points per bin" + (" (subsample)" if len(x) < n_total else ""))
    ax.grid(True, alpha=0.25)
    if 0 < len(legend) <= 12:
        handles = [
            _mpl().lines.Line2D([], [], marker="s", linestyle="", color=colors[i], label=name)
            for i, name in legend
        ]
        ax.legend(handles=handles, **_LEGEND)


#: matplotlib's axis-limit and aspect arithmetic overflows near 1e306; keep far from it.
MAX_PLOT_COORDINATE = 1e300


def _check_drawable(X: np.ndarray, components: Components | None) -> None:
    """422 for coordinates matplotlib cannot lay out, rather than its ValueError (a 500)."""
    parts = [np.asarray(X, dtype=np.float64)]
    if components is not None:
        parts.append(np.asarray(components.means, dtype=np.float64))
    largest = max((float(np.abs(p).max()) for p in parts if p.size), default=0.0)
    if not largest <= MAX_PLOT_COORDINATE:
        raise InvalidInput(
            f"the points reach {largest:.3g}; coordinates beyond +-{MAX_PLOT_COORDINATE:g} "
            "cannot be drawn. Rescale the data to plot it."
        )


def scatter_figure(
    *,
    X: np.ndarray,
    labels: np.ndarray,
    projection: Projection,
    title: str,
    size: FigureSize,
    fmt: PlotFormat,
    components: Components | None = None,
    legend_names: list[str] | None = None,
) -> bytes:
    """Points coloured by label; means and n-sigma ellipses when ``components`` has them.

    ``X`` (n, d) is projected with ``projection``; more than ``MAX_PLOT_POINTS`` rows
    are subsampled (and the title says so). One feature is drawn as a histogram.
    """
    _check_drawable(X, components)
    n_total = len(X)
    idx = subsample(n_total)
    if idx is not None:
        X, labels = X[idx], np.asarray(labels)[idx]
    n_colors = max(
        int(np.max(labels)) + 1 if len(labels) else 1,
        len(components.means) if components is not None else 0,
        len(legend_names) if legend_names is not None else 0,
    )
    lines = [title]
    if projection.kind == "pca":
        lines.append(projection.describe())
    if idx is not None:
        lines.append(f"{len(idx):,} of {n_total:,} points shown (fixed random subsample)")
    ids = components.drawn_indices() if components is not None else np.arange(0)
    # The legend names the components drawn and the labels present, in index order.
    shown = set(ids.tolist()) | set(np.unique(labels).tolist())
    legend = [(i, name) for i, name in enumerate(legend_names or []) if i in shown]
    if projection.n_features == 1:
        lines[0] += " (1 feature: histogram)"

    def paint(fig: Figure) -> None:
        if projection.n_features == 1:
            _histogram_axes(
                fig,
                x=np.asarray(X)[:, 0],
                labels=labels,
                n_colors=n_colors,
                components=components,
                n_total=n_total,
                legend=legend,
            )
        else:
            means = ellipses = None
            if components is not None:
                means = projection.points(components.means[ids])
                if components.covariances is not None:
                    covs = projection.covariances(components.covariances[ids])
                    ellipses = [ellipse_axes(c) for c in covs]
            xlabel, ylabel = projection.axis_labels()
            _scatter_axes(
                fig,
                points=projection.points(X),
                labels=labels,
                n_colors=n_colors,
                means=means,
                ellipses=ellipses,
                ids=ids,
                legend=legend,
                xlabel=xlabel,
                ylabel=ylabel,
                fmt=fmt,
            )
        fig.suptitle("\n".join(lines), fontsize="medium")

    return draw(size, fmt, paint)


def model_plot(
    resource: dict[str, Any], bundle: dict[str, Any], *, fmt: PlotFormat, size: FigureSize
) -> bytes:
    """``GET /v1/models/{id}/plot``: the training points by label, means, ellipses."""
    X = bundle.get("X")
    what = f"Model {resource['id']}"
    if X is None:
        raise UnsupportedOperation(
            f"{what} was imported: the service holds no training points to plot. "
            "GET /v1/models/{id}/ellipses describes its components without them."
        )
    algorithm = resource["algorithm"]
    components = model_components(algorithm, bundle["estimator"])
    k = len(components.means)
    noun = "component" if components.covariances is not None else "cluster"
    head = f"{resource.get('name') or algorithm}: {k} {noun}{'s' if k != 1 else ''}"
    if resource.get("covariance_type"):
        head += f", {resource['covariance_type']} covariance"
    if components.weights is not None:
        names = [f"{noun} {i} (w={w:.2f})" for i, w in enumerate(components.weights)]
    else:
        names = [f"{noun} {i}" for i in range(k)]
    threshold = resource.get("effective_weight_threshold")
    if algorithm == "bayesian_gaussian_mixture" and threshold is not None:
        assert components.weights is not None
        drawn = components.weights > threshold
        if not drawn.all():
            components = dataclasses.replace(components, drawn=drawn)
            hidden = int(k - drawn.sum())
            head += (
                f"\n{hidden} component{'s' if hidden != 1 else ''} with weight <= {threshold:g} "
                "(effective_weight_threshold) not drawn"
            )
    return scatter_figure(
        X=X,
        labels=np.asarray(bundle["labels"]),
        projection=projection_for(X, int(resource["n_features"]), what=what),
        title=head,
        size=size,
        fmt=fmt,
        components=components,
        legend_names=names,
    )


def convergence_plot(
    resource: dict[str, Any], bundle: dict[str, Any], *, fmt: PlotFormat, size: FigureSize
) -> bytes:
    """``GET /v1/models/{id}/plot?kind=convergence``: the EM lower bound after each
    iteration of the best init (sklearn's ``lower_bounds_``), the stopping tolerance
    in the title. A flat tail means converged; a line still climbing at ``max_iter``
    means more iterations (or a looser ``tol``) are needed.
    """
    what = f"Model {resource['id']}"
    algorithm = resource["algorithm"]
    if not estimators.is_mixture(algorithm):
        raise UnsupportedOperation(
            f"{what} is {algorithm}: k-means has no lower bound, so there is no "
            "convergence trace to plot (its n_iter and inertia are in the resource)."
        )
    trace = getattr(bundle["estimator"], "lower_bounds_", None)
    if trace is None:
        trace = [np.nan if v is None else v for v in resource.get("lower_bounds") or []]
    values = np.asarray(trace, dtype=np.float64)
    if values.size == 0:
        raise UnsupportedOperation(
            f"{what} has no convergence trace: it ran no EM iteration (max_iter=0), or "
            "was stored or imported without one."
        )
    params = resource.get("params") or {}
    head = (
        f"{resource.get('name') or algorithm}: "
        f"{'converged' if resource.get('converged') else 'did not converge'} after "
        f"{len(values)} iteration{'s' if len(values) != 1 else ''}"
    )
    if params.get("n_init", 1) != 1:
        head += f"\nbest of n_init={params['n_init']} inits"
    tol = params.get("tol")
    if tol is not None:
        head += f" (tol={tol:g})"

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        iterations = np.arange(1, len(values) + 1)
        ax.plot(iterations, values, marker="o" if len(values) <= 60 else None, color="C0")
        ax.set_xlabel("EM iteration")
        per_sample = " (per sample)" if algorithm == "gaussian_mixture" else ""
        ax.set_ylabel("lower bound" + per_sample)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(head, fontsize="medium")

    return draw(size, fmt, paint)


def dataset_plot(
    X: np.ndarray,
    y: np.ndarray,
    *,
    kind: str,
    fmt: PlotFormat,
    size: FigureSize,
    true_components: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """``POST /v1/datasets/plot``: generated points coloured by their true labels.

    ``true_components`` (means (k, d), covariances (k, d, d)) adds the generator's
    own means and n-sigma ellipses (the ``gaussian_mixture`` kind knows them).
    """
    components = None
    if true_components is not None:
        components = Components(true_components[0], true_components[1], None)
    n_labels = int(np.max(y)) + 1 if len(y) else 1
    if components is not None:
        n_labels = max(n_labels, len(components.means))
    return scatter_figure(
        X=X,
        labels=y,
        projection=projection_for(X, X.shape[1], what="The dataset"),
        title=f"generated {kind} data: {len(X):,} points by true label",
        size=size,
        fmt=fmt,
        components=components,
        legend_names=[f"label {i}" for i in range(n_labels)],
    )


def generated_plot(spec: GeneratorSpec, X: np.ndarray, y: np.ndarray, **kw: Any) -> bytes:
    """``dataset_plot`` for what ``spec`` generated; a ``gaussian_mixture`` spec's own
    components are drawn too (its means and covariances are the truth the points
    were drawn from)."""
    true_components = None
    if isinstance(spec, GaussianMixtureSpec):
        true_components = (
            np.array([c.mean for c in spec.components], dtype=np.float64),
            np.array([c.cov for c in spec.components], dtype=np.float64),
        )
    return dataset_plot(X, y, kind=spec.kind, true_components=true_components, **kw)
