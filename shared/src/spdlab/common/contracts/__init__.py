"""Pydantic request/result models shared by the API, the workers and the client."""
