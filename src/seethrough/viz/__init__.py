"""Figures (matplotlib ``Figure`` objects, no pyplot state) for the report and notebooks."""
