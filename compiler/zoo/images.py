"""Inputs the zoo renders or resizes: text lines and pages drawn with Pillow's default font,
photo views, and a numpy bilinear resize. Pillow is needed only here (``pip install pillow``)."""

from __future__ import annotations

import io

import numpy as np

from ..errors import TvmqError

# Words the rendered lines and pages are made of (printable ASCII, all in the OCR dictionary).
WORDS = ("int8", "model", "tensor", "layer", "scale", "zero", "point", "graph", "kernel", "cache",
         "quantize", "compile", "Apache", "TVM", "Relax", "ONNX", "batch", "input", "output", "vector",
         "matrix", "channel", "weight", "bias", "filter", "stride", "page", "letter", "number", "river",
         "garden", "window", "paper", "orange", "silver", "morning", "Monday", "Friday", "2026", "42",
         "7.5", "100%", "A4", "No.", "(x)", "3.14", "hello", "world", "price", "total", "invoice", "date")


def pil():
    """The PIL modules ``(Image, ImageDraw, ImageFont)``, or a one-line TvmqError."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise TvmqError("the zoo's rendered and photo data need Pillow: pip install pillow") from None
    return Image, ImageDraw, ImageFont


def font(size: int):
    """Pillow's default font at ``size`` pixels (a FreeType font from Pillow 10.1 on)."""
    _, _, image_font = pil()
    return image_font.load_default(size=size)


def random_text(rng: np.random.Generator, words: tuple[int, int] = (2, 4)) -> str:
    """A line of ``words[0]..words[1]`` words drawn from :data:`WORDS`."""
    count = int(rng.integers(words[0], words[1] + 1))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), count))


def text_line(text: str, size: int = 32, margin: int = 4) -> np.ndarray:
    """Black ``text`` on white, cropped to its ink plus ``margin``: ``(H, W, 3)`` uint8."""
    image_cls, draw_mod, _ = pil()
    face = font(size)
    x0, y0, x1, y1 = face.getbbox(text)
    canvas = image_cls.new("RGB", (x1 - x0 + 2 * margin, y1 - y0 + 2 * margin), "white")
    draw_mod.Draw(canvas).text((margin - x0, margin - y0), text, fill="black", font=face)
    return np.asarray(canvas)


def page(lines: list[str], width: int, height: int, size: int, rng: np.random.Generator):
    """A white ``(height, width, 3)`` uint8 page with ``lines`` drawn at random indents, and the
    ``(N, 4)`` ink boxes ``x0, y0, x1, y1`` of the lines drawn (lines that do not fit are skipped)."""
    image_cls, draw_mod, _ = pil()
    face = font(size)
    canvas = image_cls.new("RGB", (width, height), "white")
    draw = draw_mod.Draw(canvas)
    boxes, y = [], int(rng.integers(4, size))
    for text in lines:
        x = int(rng.integers(4, max(5, width // 6)))
        box = draw.textbbox((x, y), text, font=face)
        if box[2] > width - 2 or box[3] > height - 2:
            break
        draw.text((x, y), text, fill="black", font=face)
        boxes.append(box)
        y = box[3] + int(rng.integers(size // 2, size + 1))
    return np.asarray(canvas), np.array(boxes, float).reshape(-1, 4)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W, C)`` uint8 resized bilinearly with Pillow (as cv2.resize's INTER_LINEAR)."""
    image_cls, _, _ = pil()
    return np.asarray(image_cls.fromarray(image).resize((width, height), resample=image_cls.BILINEAR))


def decode(encoded: bytes) -> np.ndarray:
    """An encoded photo as ``(H, W, 3)`` uint8 RGB."""
    image_cls, _, _ = pil()
    with image_cls.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"))


def views(image: np.ndarray) -> list[np.ndarray]:
    """Four views of one photo: whole, mirrored center crop, top-left and bottom-right crops."""
    h, w = image.shape[:2]
    return [image,
            image[h * 15 // 100:h * 85 // 100, w * 15 // 100:w * 85 // 100][:, ::-1],
            image[:h * 6 // 10, :w * 6 // 10],
            image[h * 4 // 10:, w * 4 // 10:][:, ::-1]]


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centers (OpenCV's INTER_LINEAR convention)."""
    h, w = img.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy
