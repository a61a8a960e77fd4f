"""/generate: versioned prompts, the blocks they render, the LiteLLM gateway, LLM providers."""
