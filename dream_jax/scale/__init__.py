"""Large jobs: the batch streamer, sharing between machines, summaries and the Ray engine."""
