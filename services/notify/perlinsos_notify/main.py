"""FastStream entry point: `faststream run perlinsos_notify.main:app`."""

from perlinsos_notify.app import build

app = build().app
