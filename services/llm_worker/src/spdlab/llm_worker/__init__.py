"""LLM worker shell (queue ``llm``)."""
