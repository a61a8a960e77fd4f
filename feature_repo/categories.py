"""Tip categories: the candidate vocabulary shared by features, simulator and service."""

TIP_CATEGORIES: tuple[str, ...] = ("focus", "planning", "wellbeing", "review")
