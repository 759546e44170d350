"""redline's gateway: an OpenAI-compatible proxy that inspects every prompt and response on the way through."""
