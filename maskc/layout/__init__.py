"""Layouts: building a `BlockLayout` from a rule (`build`), element-level algorithms on its
stored tiles (`elements`), and the saved-IR file format (`irfile`).

`elements` and `irfile` sit below the record `maskc.ir` (they read any object with its fields);
`build` sits above it (it makes records).
"""
