"""FastStream entry point: `faststream run perlinsos_registry.main:app`."""

from perlinsos_registry.app import build

app = build().app
