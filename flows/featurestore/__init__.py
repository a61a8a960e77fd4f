"""The features flow's library: event frames, the offline table, materialization."""
