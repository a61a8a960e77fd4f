"""/score: online feature reads, model inputs, the registry's scorer, fast predict, shadow."""
