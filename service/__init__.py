"""Online side of tipml: what the BentoML service and the event consumers need at run time."""
