"""The training and promote flows' library: training set, scorers, evaluation, cards, gate."""
