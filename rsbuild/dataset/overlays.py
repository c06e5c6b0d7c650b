"""Box overlays: the chip with one SFT row's boxes drawn in class colours and labelled.

Labels sit on a dark background box placed inside the image (above the box when there is room,
else just inside its top edge, always clamped to the image), so they stay readable at 224 px.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from rsbuild.dataset.sft import Box
from rsbuild.schemes import Scheme

RGB = tuple[int, int, int]
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
LABEL_BACKGROUND: RGB = (16, 16, 16)
LABEL_TEXT: RGB = (255, 255, 255)
LABEL_PADDING = 2
FONT_SIZE = 11


@dataclass(frozen=True)
class LabelPlacement:
    """Where a box's label went: its background rectangle [x1, y1, x2, y2] (inclusive) and text."""

    text: str
    rect: tuple[int, int, int, int]


def fallback_color(label: str) -> RGB:
    """A stable colour for a label the palette does not know (sha256 of the label)."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return 64 + digest[0] % 192, 64 + digest[1] % 192, 64 + digest[2] % 192


def palette_of(scheme: Scheme | None) -> dict[str, RGB]:
    """Class name → RGB display colour of the scheme's classes (empty without a scheme)."""
    if scheme is None:
        return {}
    return {info.name: info.color for info in scheme.classes}


def _font() -> Font:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: bitmap default font without a size
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Font, max_width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``max_width`` pixels."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…"


def _pixel_box(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised [x1, y1, x2, y2] → inclusive pixel rectangle inside the image."""
    x1, y1, x2, y2 = bbox
    left = min(max(int(x1 * width), 0), width - 1)
    top = min(max(int(y1 * height), 0), height - 1)
    right = min(max(math.ceil(x2 * width) - 1, left), width - 1)
    bottom = min(max(math.ceil(y2 * height) - 1, top), height - 1)
    return left, top, right, bottom


def _overlap_area(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    return max(w, 0) * max(h, 0)


def place_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    font: Font,
    taken: Sequence[tuple[int, int, int, int]] = (),
) -> LabelPlacement:
    """Put a label at a corner of its pixel box, always inside the image.

    Candidates in order: above the box, inside its top, below it, inside its bottom (left, then
    right aligned); the first that covers no ``taken`` label wins, else the least covering one.
    """
    width, height = size
    text = _fit_text(draw, text, font, width - 2 * LABEL_PADDING - 1)
    tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text, font=font)
    label_w = tx2 - min(tx1, 0) + 2 * LABEL_PADDING
    label_h = ty2 - min(ty1, 0) + 2 * LABEL_PADDING
    left, top, right, bottom = box
    candidates: list[tuple[int, int, int, int]] = []
    for y in (top - label_h, top, bottom + 1, bottom - label_h + 1):
        for x in (left, right - label_w + 1):
            x = int(min(max(x, 0), width - label_w))
            y = int(min(max(y, 0), height - label_h))
            candidates.append((x, y, int(x + label_w - 1), int(y + label_h - 1)))
    best = min(candidates, key=lambda rect: sum(_overlap_area(rect, other) for other in taken))  # min keeps the first of ties
    return LabelPlacement(text, best)


def render_overlay(
    image_png: bytes,
    boxes: Sequence[Box],
    palette: Mapping[str, RGB] | None = None,
    compress_level: int = 1,
) -> tuple[bytes, list[LabelPlacement]]:
    """PNG of the chip with ``boxes`` outlined in class colours and labelled; also the placements."""
    palette = palette or {}
    with Image.open(io.BytesIO(image_png)) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    font = _font()
    size = image.size
    line = max(1, min(size) // 112)
    pixel_boxes = [(_pixel_box(b.bbox, *size), palette.get(b.label) or fallback_color(b.label), b.label) for b in boxes]
    for rect, color, _label in pixel_boxes:
        draw.rectangle(rect, outline=color, width=line)
    placements: list[LabelPlacement] = []
    for rect, color, label in pixel_boxes:  # labels last so no outline crosses a label
        placement = place_label(draw, label, rect, size, font, [p.rect for p in placements])
        draw.rectangle(placement.rect, fill=LABEL_BACKGROUND, outline=color, width=1)
        draw.text((placement.rect[0] + LABEL_PADDING, placement.rect[1] + LABEL_PADDING), placement.text, fill=LABEL_TEXT, font=font)
        placements.append(placement)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue(), placements
