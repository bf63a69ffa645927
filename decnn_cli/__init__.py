"""decnn: an experiment suite for Decodable Neural Networks (DecNN) and their recursive form (ReDecNN)."""

__version__ = "0.1.0"
