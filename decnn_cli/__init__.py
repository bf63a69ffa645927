"""decnn: an experiment suite for Decodable Neural Networks (DecNN) and their recursive form (ReDecNN)."""

import os

__version__ = "0.1.0"

# oneDNN (bf16 matmuls and all convolutions on CPU) keeps one compiled primitive, about 2 MB, per input shape, up
# to 1,024 of them. Samplers call f and g on many row counts (chunks, distinct paths, rows that stop at a layer),
# which filled that cache with 0.5-1 GB during one bf16 evaluation; 128 primitives cost nothing measurable in speed.
# Read when oneDNN first runs, so set before torch computes anything; a value set by the user is kept.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
