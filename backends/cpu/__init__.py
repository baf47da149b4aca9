"""CPU reference backend (scipy.sparse)."""
