"""Secrets the embedded stack makes for itself: created once, kept owner-only.

`perlinsos up`, the cohort run and the test stack create every password and signing key
they need under `<state>/secrets/` (directory 0700, files 0600) on first use and read
them back afterwards, so a state directory that is kept keeps its credentials and a
fresh one gets new ones. Nothing here is ever logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRETS_DIR = "secrets"


def secrets_dir(state_dir: Path) -> Path:
    path = Path(state_dir) / SECRETS_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def ensure_secret(path: Path, nbytes: int = 32) -> str:
    """The secret stored at `path`, created (random, URL-safe, mode 0600) if missing.

    Written to a private temporary file and linked into place, so two processes starting
    together agree on one value and neither reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def state_secret(state_dir: Path, name: str) -> str:
    """A named secret of this state directory (`<state>/secrets/<name>`)."""
    return ensure_secret(secrets_dir(state_dir) / name)
