"""llm_worker."""
