"""Analysis of int8 graphs: blocks, per-layer memory (the paper's rule), MACs, weights."""
