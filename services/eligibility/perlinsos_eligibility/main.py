"""FastStream entry point: `faststream run perlinsos_eligibility.main:app`."""

from perlinsos_eligibility.app import build

app = build().app
