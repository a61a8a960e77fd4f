"""The HTTP contract with the recommender: request context, ids, prompt version names, bodies."""
