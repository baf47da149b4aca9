"""Pictures for the page: colour-table images as PNG data URLs."""

from __future__ import annotations

import base64
import io

import numpy as np


def png_data_url(index: np.ndarray, table: np.ndarray) -> str:
    """An image of colour-table indices as a palette PNG data URL (one byte a cell, fast compression:
    the page redraws often). `table` holds RGB rows in [0, 1], at most 256."""
    from PIL import Image

    image = Image.fromarray(index.astype(np.uint8), "P")
    image.putpalette(np.round(table * 255).astype(np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
