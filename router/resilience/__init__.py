"""What the attempt loop consults about a provider: circuit breakers, rate limits, timeouts."""
