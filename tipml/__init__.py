"""tipml: the command line over the feature platform, flows and service."""
