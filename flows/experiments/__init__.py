"""Experiment analytics: rewards, statistics, reports, off-policy evaluation."""
