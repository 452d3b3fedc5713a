"""mailflow-sentiment: the customer's mood, found the same day."""
