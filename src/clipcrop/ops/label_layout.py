"""Where the rank labels of an overlay go, so that every label stays readable.

Ranked crops often share a corner (several crops anchored on the same object), and a label drawn
at each box's top-left corner then covers the others: only "1" was readable. Labels are placed in
rank order (the best crop gets the first choice); each takes the first position, among those
below, that lies inside the image and overlaps no label placed before it:

1. inside its box, at the top-left, top-right, bottom-left and bottom-right corners;
2. just outside its box: above or below those corners, then left or right of the top corners;
3. along its box's top edge and down its left edge, one label-size step at a time;
4. anywhere in the image on a grid of label-size steps, nearest to the box's top-left corner first.

Only when no free position is left at all (more labels than the image can hold) does a label go
to its first choice anyway. Pure geometry: rectangles are ``(x0, y0, x1, y1)`` in pixels of the
picture drawn on, with x1/y1 exclusive, like boxes everywhere in ClipCrop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

Rect = tuple[int, int, int, int]


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two rectangles share any pixel (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clamp(x: float, y: float, w: int, h: int, size: tuple[int, int]) -> Rect:
    """The ``w x h`` rectangle at (x, y), shifted into the image (to its origin when too big)."""
    x = int(round(min(max(x, 0), max(size[0] - w, 0))))
    y = int(round(min(max(y, 0), max(size[1] - h, 0))))
    return (x, y, x + w, y + h)


def _candidates(box: Sequence[float], w: int, h: int, inset: int, size: tuple[int, int]) -> Iterator[Rect]:
    """Positions for a ``w x h`` label of ``box``, in order of preference (see the module docstring)."""
    x0, y0, x1, y1 = box
    left, top, right, bottom = x0 + inset, y0 + inset, x1 - inset - w, y1 - inset - h
    for x, y in ((left, top), (right, top), (left, bottom), (right, bottom)):
        yield _clamp(x, y, w, h, size)
    for x, y in ((x0, y0 - h), (x0, y1), (x1 - w, y0 - h), (x1 - w, y1), (x0 - w, y0), (x1, y0)):
        yield _clamp(x, y, w, h, size)
    steps_x = max(0, int((x1 - x0) // max(w, 1)))
    steps_y = max(0, int((y1 - y0) // max(h, 1)))
    for i in range(1, steps_x + 1):
        yield _clamp(left + i * w, top, w, h, size)
    for j in range(1, steps_y + 1):
        yield _clamp(left, top + j * h, w, h, size)
    grid = [
        (gx, gy)
        for gy in range(0, max(size[1] - h, 0) + 1, max(h, 1))
        for gx in range(0, max(size[0] - w, 0) + 1, max(w, 1))
    ]
    grid.sort(key=lambda p: (p[0] - x0) ** 2 + (p[1] - y0) ** 2)
    for gx, gy in grid:
        yield (gx, gy, gx + w, gy + h)


def layout_labels(
    boxes: Sequence[Sequence[float]],
    sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    inset: int = 0,
) -> list[Rect]:
    """One rectangle per label, in the order of ``boxes`` (rank order: earlier ones choose first).

    Args:
        boxes: xyxy boxes in pixels of the picture the labels are drawn on.
        sizes: (width, height) of each label, padding included.
        image_size: (width, height) of that picture.
        inset: distance of a label inside its box from the box's edges (the outline's width).

    Returns:
        rectangles inside the image (when a label fits in it at all) that overlap neither each
        other nor, while free space is left, any earlier label.
    """
    placed: list[Rect] = []
    for box, (w, h) in zip(boxes, sizes, strict=True):
        first = None
        chosen = None
        for rect in _candidates(box, w, h, inset, image_size):
            first = first or rect
            if not any(overlaps(rect, other) for other in placed):
                chosen = rect
                break
        placed.append(chosen or first or _clamp(box[0], box[1], w, h, image_size))
    return placed


__all__ = ["Rect", "layout_labels", "overlaps"]
