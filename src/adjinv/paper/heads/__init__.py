"""Heads trained on frozen features: the linear probe and the hybrid attention classifier."""
