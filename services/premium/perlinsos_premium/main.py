"""FastStream entry point: `faststream run perlinsos_premium.main:app`."""

from perlinsos_premium.app import build

app = build().app
