"""Reachability through a stack of sparse-attention layers: the layer model, two exact engines,
the walk through the schedule, witness paths and the report that `maskc.verify` returns."""
