"""The simulated world the simulate flow writes into the event log."""
