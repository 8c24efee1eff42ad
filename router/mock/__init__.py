"""The fake upstreams: OpenAI, Anthropic, Gemini and Ollama on one server, with faults to inject."""
