"""The HTML reports' building blocks: plots as PNG, thumbnails, galleries and the page.

Pages are self-contained: images are embedded as base64. `evaluate` and `audit` build their pages
from these; this module knows nothing of either.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from edge.image import open_rgb

GALLERY_IMAGES = 100  # misclassified (or suspect) thumbnails shown at most, worst first
THUMBNAIL_SIZE = 160  # px, longest side
THUMBNAIL_QUALITY = 85  # JPEG
PLOT_DPI = 100
ANNOTATED_CLASSES = 25  # up to this many classes, confusion matrix cells show their counts


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def figure():
    """A matplotlib Figure that renders with Agg, without pyplot's global state or a display."""
    from matplotlib.figure import Figure

    return Figure(dpi=PLOT_DPI, layout="constrained")


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_matrix_png(confusion: np.ndarray, labels: list[str]) -> bytes:
    """The matrix coloured by share of each true class (row), with counts in the cells."""
    class_count = len(labels)
    side = min(4 + 0.45 * class_count, 30)  # inches
    fig = figure()
    fig.set_size_inches(side + 1, side)
    axes = fig.add_subplot()
    row_totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, row_totals, out=np.zeros(confusion.shape), where=row_totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    axes.set_xticks(range(class_count), labels, rotation=45, ha="right")
    axes.set_yticks(range(class_count), labels)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    if class_count <= ANNOTATED_CLASSES:
        for (row, column), count in np.ndenumerate(confusion):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if shares[row, column] > 0.5 else "black")
    return figure_png(fig)


def training_curves_png(history: list[dict]) -> bytes:
    """Accuracy and cross entropy over steps, training batch and validation, from run.json."""
    fig = figure()
    fig.set_size_inches(10, 4)
    steps = [record["step"] for record in history]
    for axes, (train_key, validation_key, title) in zip(fig.subplots(1, 2), (
            ("train_accuracy", "validation_accuracy", "accuracy"),
            ("cross_entropy", "validation_cross_entropy", "cross entropy"))):
        axes.plot(steps, [record[train_key] for record in history], label="training batch")
        validation = [(record["step"], record[validation_key]) for record in history if validation_key in record]
        if validation:
            axes.plot(*zip(*validation), label="validation")
        axes.set_title(title)
        if title == "accuracy":
            axes.set_ylim(0, 1.02)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend()
    return figure_png(fig)


def precision_coverage_png(rows: list) -> bytes:
    """Precision and coverage against --threshold: rows are trainer.calibration.ThresholdRow."""
    fig = figure()
    fig.set_size_inches(6, 4)
    axes = fig.add_subplot()
    thresholds = [row.threshold for row in rows]
    axes.plot(thresholds, [row.precision for row in rows], label="precision (answers kept that are right)")
    axes.plot(thresholds, [row.coverage for row in rows], label="coverage (images kept)")
    axes.set_xlabel("--threshold")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    return figure_png(fig)


def png_tag(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}">'


def thumbnail_card(path: Path, title: str, caption_html: str) -> str:
    """A figure with the image at THUMBNAIL_SIZE (embedded JPEG), its path and a caption."""
    image = open_rgb(path, draft_size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    source = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure><img src="data:image/jpeg;base64,{source}" alt="{html.escape(title)}">'
            f"<figcaption>{caption_html}<br><small>{html.escape(title)}</small></figcaption></figure>")


def gallery(cards: list[str], total: int) -> str:
    more = f"<p>{total - len(cards)} more not shown.</p>" if total > len(cards) else ""
    return f'<div class="gallery">{"".join(cards)}</div>{more}'


def html_page(title: str, sections: list[str]) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}.gallery{display:flex;flex-wrap:wrap;gap:1em}"
             f".gallery figure{{margin:0;width:{THUMBNAIL_SIZE}px;font-size:small;overflow-wrap:anywhere}}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(sections) + "\n</body></html>\n")
