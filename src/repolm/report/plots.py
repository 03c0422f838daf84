"""The report's figures: numbers in, one inline `<svg>` string out.

Figures are drawn on a bare `matplotlib.figure.Figure` (no pyplot, so no global backend or
state is touched) and saved as SVG with text as paths: no fonts, links or scripts to load.
Each SVG's ids get a prefix of their own, since several figures share one HTML page and
matplotlib names the same glyph or clip path alike in every figure.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

Points = Sequence[tuple[float, float]]

MAX_POINTS = 1500  # per line: a long run's every step would only make the SVG heavy
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04")
BASELINE = "#6b7280"
SPLIT_COLORS = {"train": "#2563eb", "val": "#ea580c", "test": "#dc2626"}
RC = {
    "svg.fonttype": "path",  # glyphs as paths: the page needs no font
    "svg.hashsalt": "repolm",  # the same figure gives the same bytes
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 7.5,
}
_META = {"Date": None, "Creator": None, "Format": None, "Type": None}


@contextmanager
def _figure(
    width: float = 8.6, height: float = 2.7, ncols: int = 1, nrows: int = 1
) -> Iterator[Any]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        fig.subplots(nrows, ncols, squeeze=False)
        yield fig


def to_svg(fig: Any) -> str:
    """The figure as an `<svg>` element for inline HTML: no XML prolog, comments, namespaces
    or metadata; ids prefixed by a hash of the drawing, so two figures' ids never clash (the
    report's figures all differ: each is titled with its model or split)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_META)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    prefix = "f" + hashlib.blake2b(svg.encode(), digest_size=4).hexdigest() + "-"

    def rename(m: re.Match[str]) -> str:
        return m.group(1) + prefix + m.group(2) if m.group(2) in ids else m.group(0)

    svg = re.sub(r'(\bid="|#)([^"\s)#;]+)(?=["\)])', rename, svg)
    return svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip()


def thin(points: Points, n: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about `n` of the points, evenly spaced, always with the last one."""
    pts = list(points)
    if len(pts) <= n:
        return pts
    stride = -(-len(pts) // n)
    out = pts[::stride]
    return out if out[-1] == pts[-1] else [*out, pts[-1]]


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _xy(points: Points) -> tuple[list[float], list[float]]:
    pts = thin(points)
    return [p[0] for p in pts], [p[1] for p in pts]


def _marker(xs: Sequence[float]) -> dict[str, Any]:
    """Dots on a line of few points (one point draws no line at all)."""
    return {"marker": "o", "markersize": 3} if len(xs) <= 20 else {}


def _steps(*axes: Any) -> None:
    """Whole steps on the x axis."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        lo, hi = ax.get_xlim()
        if hi - lo < 2:  # one step: widen, or the locator falls back to fractions
            mid = (lo + hi) / 2
            ax.set_xlim(mid - 1.5, mid + 1.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _hline(ax: Any, y: float, label: str, color: str = BASELINE, style: str = "--") -> None:
    ax.axhline(y, color=color, linestyle=style, linewidth=1.0, label=label)


def loss_plot(
    loss: Sequence[float],
    validation: Points = (),
    unigram: float | None = None,
    title: str = "loss",
) -> str:
    """Training loss per step (raw and smoothed), validation loss at each evaluation and the
    unigram model's validation loss: the line a model must get under to have learnt more
    than token frequencies."""
    with _figure() as fig:
        ax = fig.axes[0]
        steps = list(range(1, len(loss) + 1))
        if loss:
            window = max(1, len(loss) // 50)
            xs, ys = _xy(list(zip(steps, loss, strict=True)))
            smooth = window > 1
            ax.plot(
                xs,
                ys,
                color=COLORS[0],
                linewidth=0.7,
                alpha=0.35 if smooth else 1.0,
                **_marker(xs),
                label="train loss" if not smooth else "train loss (each step)",
            )
            if smooth:
                xs, ys = _xy(list(zip(steps, moving_average(loss, window), strict=True)))
                ax.plot(
                    xs, ys, color=COLORS[0], linewidth=1.4, label=f"train loss ({window}-step mean)"
                )
        if validation:
            xs, ys = _xy(validation)
            ax.plot(
                xs,
                ys,
                "o-",
                color=COLORS[1],
                markersize=3.5,
                linewidth=1.2,
                label="validation loss",
            )
        if unigram is not None:
            _hline(ax, unigram, f"unigram baseline ({unigram:.3f})")
        ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
        _steps(ax)
        ax.legend(loc="best")
        return to_svg(fig)


def series_plot(
    points: Points,
    ylabel: str,
    title: str,
    baselines: Mapping[str, float] | None = None,
    log_y: bool = False,
    xlabel: str = "step",
) -> str:
    """One series over steps, with optional horizontal reference lines."""
    with _figure(height=2.3) as fig:
        ax = fig.axes[0]
        xs, ys = _xy(points)
        ax.plot(xs, ys, color=COLORS[0], linewidth=1.1, **_marker(xs))
        for i, (label, y) in enumerate((baselines or {}).items()):
            _hline(ax, y, label, color=COLORS[(i + 1) % len(COLORS)] if i else BASELINE)
        if log_y and ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if xlabel == "step":
            _steps(ax)
        if baselines:
            ax.legend(loc="lower right")
        return to_svg(fig)


def hardware_plot(series: Mapping[str, Points], title: str = "hardware") -> str:
    """Utilisation (percent) and memory (GiB) over the run, side by side, from the hardware
    monitor's samples: `cpu_percent` (100 = one core), `system_cpu_percent`,
    `system_memory_percent`, `gpuN_util`, `rss_bytes`, `gpuN_memory_bytes`."""
    with _figure(height=2.6, ncols=2) as fig:
        util, mem = fig.axes
        n = 0
        for key, pts in series.items():
            if key.endswith(("_percent", "_util")):
                xs, ys = _xy(pts)
                util.plot(
                    xs,
                    ys,
                    linewidth=1.0,
                    color=COLORS[n % len(COLORS)],
                    **_marker(xs),
                    label=key.replace("_", " "),
                )
                n += 1
        for key, pts in series.items():
            if key.endswith("_bytes") and not key.endswith("_total_bytes"):
                xs, ys = _xy(pts)
                mem.plot(
                    xs,
                    [y / 2**30 for y in ys],
                    linewidth=1.0,
                    **_marker(xs),
                    color=COLORS[n % len(COLORS)],
                    label=key.replace("_", " "),
                )
                n += 1
        for key, pts in series.items():
            if key.endswith("_memory_total_bytes") and pts:
                _hline(mem, pts[-1][1] / 2**30, key.replace("_", " "))
        util.set(xlabel="step", ylabel="percent", title=f"{title}: utilisation")
        mem.set(xlabel="step", ylabel="GiB", title=f"{title}: memory")
        _steps(util, mem)
        for ax in (util, mem):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
        return to_svg(fig)


def bits_plot(
    bars: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, tuple[float, float | None]]],
) -> str:
    """Bits per byte on each future split (one panel each): a bar per model (and base model);
    each compressor (name: (alone, conditioned on the training text)) as horizontal lines,
    dashed alone, dotted conditioned. Lower is better."""
    splits = list(bars) or list(baselines)
    n = max(1, len(splits))
    with _figure(height=3.0, ncols=n, width=min(8.6, 4.3 * n)) as fig:
        for ax, split in zip(fig.axes, splits, strict=False):
            names = list(bars.get(split, {}))
            values = [bars[split][m] for m in names]
            ax.grid(axis="x", visible=False)
            ax.set_axisbelow(True)
            ax.bar(
                range(len(names)),
                values,
                width=0.55,
                color=[COLORS[i % len(COLORS)] for i in range(len(names))],
            )
            for i, v in enumerate(values):  # inside the bar's top: clear of the baselines
                ax.annotate(
                    f"{v:.3f}",
                    (i, v),
                    ha="center",
                    va="top",
                    fontsize=7.5,
                    color="white",
                    xytext=(0, -3),
                    textcoords="offset points",
                )
            ax.set_xticks(range(len(names)), names)
            ax.set_xlim(-0.8, max(len(names), 1) - 0.2)
            tops = list(values)
            for i, (label, (alone, conditioned)) in enumerate(baselines.get(split, {}).items()):
                color = (BASELINE, "#b45309", "#0f766e")[i % 3]
                _hline(ax, alone, f"{label} {alone:.3f}", color=color)
                tops.append(alone)
                if conditioned is not None:
                    _hline(
                        ax,
                        conditioned,
                        f"{label} conditioned {conditioned:.3f}",
                        color=color,
                        style=":",
                    )
            ax.set(ylabel="bits per byte", title=f"{split} (lower is better)")
            ax.set_ylim(0, max([*tops, 0.1]) * 1.15)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=6.5)
        return to_svg(fig)


# a panel of versus_plot: (title, [(figure, [(series, value)])]), one group of bars a figure
Panel = tuple[str, Sequence[tuple[str, Sequence[tuple[str, float]]]]]
BASE_COLOR = "#f59e0b"
BASELINE_COLORS = ("#6b7280", "#9ca3af", "#374151", "#b45309", "#0f766e", "#d1d5db")


def versus_plot(title: str, model: str, base: str, panels: Sequence[Panel]) -> str:
    """A fine-tuned model next to its base on every figure: a panel a kind of figure (bits
    per byte, a task, the suites), in each a group of bars a figure: the model (series
    `model`), its base (`base`), then the baselines. A series keeps its colour throughout."""
    series = list(dict.fromkeys(s for _, groups in panels for _, bars in groups for s, _ in bars))
    others = [s for s in series if s not in (model, base)]
    colors = {s: BASELINE_COLORS[i % len(BASELINE_COLORS)] for i, s in enumerate(others)}
    colors.update({model: COLORS[0], base: BASE_COLOR})
    n = max(1, len(panels))
    with _figure(height=2.2 * n + 0.3, nrows=n) as fig:
        for ax, (name, groups) in zip(fig.axes, panels, strict=False):
            ax.grid(axis="x", visible=False)
            ax.set_axisbelow(True)
            for g, (_, bars) in enumerate(groups):
                width = 0.8 / max(1, len(bars))
                for i, (label, value) in enumerate(bars):
                    x = g - 0.4 + width * (i + 0.5)
                    ax.bar(x, value, width=width * 0.92, color=colors[label], label=label)
                    ax.annotate(
                        f"{value:.3g}",
                        (x, value),
                        ha="center",
                        va="bottom",
                        fontsize=5.5,
                        xytext=(0, 1),
                        textcoords="offset points",
                    )
            ax.set_xticks(range(len(groups)), [f for f, _ in groups])
            ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
            top = max((v for _, bars in groups for _, v in bars), default=0.0)
            ax.set_ylim(0, max(top, 0.1) * 1.18)
            ax.set_title(f"{title}: {name}", fontsize=8.5)
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))  # one entry a series
            if unique:
                ax.legend(
                    unique.values(),
                    unique.keys(),
                    loc="upper left",
                    bbox_to_anchor=(1.0, 1.0),
                    fontsize=6.5,
                )
        return to_svg(fig)


def commits_plot(
    times: Sequence[float],
    splits: Sequence[str | None],
    marks: Mapping[str, float] | None = None,
) -> str:
    """Commits over time, stacked by split (train, val, test), with the cutoff and the end of
    the validation period as vertical lines: how much future the evaluation has."""
    import matplotlib.dates as mdates

    with _figure(height=2.3) as fig:
        ax = fig.axes[0]
        ax.grid(axis="x", visible=False)
        ax.set_axisbelow(True)
        days = [mdates.date2num(datetime.fromtimestamp(t, timezone.utc)) for t in times]
        if days:
            span = max(days) - min(days)
            bins = max(1, min(60, len(days) // 2 or 1)) if span else 1
            groups = [s for s in ("train", "val", "test") if s in splits] or [None]
            data = [
                [d for d, s in zip(days, splits, strict=True) if s == g or g is None]
                for g in groups
            ]
            ax.hist(
                data,
                bins=bins,
                stacked=True,
                color=[SPLIT_COLORS.get(g or "train", COLORS[0]) for g in groups],
                label=[g or "commits" for g in groups],
            )
        for i, (label, t) in enumerate((marks or {}).items()):
            x = mdates.date2num(datetime.fromtimestamp(t, timezone.utc))
            ax.axvline(
                x, color=(BASELINE, "#111827")[i % 2], linestyle="--", linewidth=1.0, label=label
            )
        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set(xlabel="commit time (UTC)", ylabel="commits", title="history")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig)
