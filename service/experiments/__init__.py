"""Prompt experiments: their configuration, the assignment of arms, the bandit state."""
