"""Tensor-train engine: cross approximation of sqrt(p~) and the squared-TT density."""
