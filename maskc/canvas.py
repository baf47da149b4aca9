"""The spec's `grid` field: the tokens form an image or a video, stored row-major or tile by tile.

The runtime form, the position → coordinate map, is `maskc.rules.canvas.Canvas`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from maskc.primitives.base import _fail
from maskc.rules.canvas import Canvas

#: Most tokens a grid may hold, as for seq_len (every index fits in int32).
MAX_TOKENS = 2**31 - 1


class TileOrder(BaseModel):
    """Tokens stored tile by tile: tiles row-major over the canvas, tokens row-major inside a tile."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tiles: list[PositiveInt]


class Grid(BaseModel):
    """The spec's `grid` field: the canvas shape, the storage order, and text tokens after the grid."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    shape: list[PositiveInt] = Field(min_length=2, max_length=3)
    order: Literal["row_major"] | TileOrder = "row_major"
    text: NonNegativeInt = 0

    @model_validator(mode="after")
    def _tiles_divide_canvas(self) -> Grid:
        if self.tokens > MAX_TOKENS:
            _fail(("shape",), "grid_size", f"the grid holds {self.tokens:,} tokens, over {MAX_TOKENS:,}", self.shape)
        if isinstance(self.order, TileOrder):
            tiles = self.order.tiles
            if len(tiles) != len(self.shape):
                _fail(
                    ("order", "tiles"),
                    "tile_rank",
                    f"order.tiles has {len(tiles)} sides but the grid has {len(self.shape)} axes {self.shape}",
                    tiles,
                )
            for axis, (size, tile) in enumerate(zip(self.shape, tiles)):
                if size % tile:
                    _fail(
                        ("order", "tiles", axis),
                        "tile_divides",
                        f"storage tile side {tile} does not divide the grid's axis {axis} of size {size}",
                        tile,
                    )
        return self

    @property
    def tokens(self) -> int:
        """Sequence length the grid defines: its cells plus the text tokens."""
        return math.prod(self.shape) + self.text

    def canvas(self) -> Canvas:
        tiles = tuple(self.order.tiles) if isinstance(self.order, TileOrder) else None
        return Canvas(shape=tuple(self.shape), tiles=tiles, text=self.text)
