"""`python -m spdlab.cli`: the same as the `spdlab` script."""

from spdlab.cli.main import app

app(prog_name="spdlab")
