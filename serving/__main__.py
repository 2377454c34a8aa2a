"""`python -m edgewave.serving --site ID`: how the serving image starts a site."""

from edgewave.serving.cli import app

app(prog_name="edgewave-site")
