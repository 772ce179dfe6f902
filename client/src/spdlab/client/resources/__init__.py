"""Resource groups of the API, one module each."""
