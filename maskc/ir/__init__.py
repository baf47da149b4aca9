"""The block-sparse IR and the layer around it.

- `record`: the IR itself, `BlockLayout` and `CompiledPattern`, plain records of arrays;
- `build`: laying a rule out on the tile grid (`build_layout`);
- `elements`: element-level algorithms on stored tiles (`to_dense`, `to_scipy`, counts, empty rows);
- `irfile`: the saved-IR file format.

`elements` and `irfile` read any object with the record's fields and sit below it; `build` makes
records and sits above it. Import the record from here: `from maskc.ir import CompiledPattern`.
"""

from maskc.ir.record import DENSE_LIMIT, BlockLayout, CompiledPattern

__all__ = ["DENSE_LIMIT", "BlockLayout", "CompiledPattern"]
