"""One module per front door; each exposes setup(app) that adds its routes."""
