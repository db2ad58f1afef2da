"""Reverse-KL fine-tuning of the flow on top of the base distribution."""

from ttflow_cli.train.reverse_kl import TrainResult, TrainSettings, train_reverse_kl

__all__ = ["TrainResult", "TrainSettings", "train_reverse_kl"]
