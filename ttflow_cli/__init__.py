"""ttflow: tensor-train base distributions with normalizing flows for unnormalized densities."""

__version__ = "0.1.0"
