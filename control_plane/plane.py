"""The control plane's state: settings, database, signing keys and ledger, secrets.

The state directory is the control plane's alone: made 0700, and an existing one that
group or others may enter is set to 0700 (and the fix logged); one owned by another user is
refused, since its owner could open it again. A secrets file others may read is refused at
start (and at each lookup), as the daemon refuses its token file.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import time
from pathlib import Path

from sqlalchemy import Engine

from control_plane.identity.keys import Clock
from control_plane.identity.node_ca import NodeCA
from control_plane.identity.sealing import Sealer, load_key_file
from control_plane.identity.secrets import FileSecretStore, SecretStoreError
from control_plane.identity.tokens import TokenIssuer
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import make_engine, sqlite_url
from control_plane.storage.migrate import upgrade

log = logging.getLogger(__name__)

STATE_DIR_MODE = 0o700


class UnsafeState(RuntimeError):
    """The state directory or the secrets file is open to others (one line for a person)."""


class ControlPlane:
    def __init__(
        self,
        settings: ControlPlaneSettings,
        engine: Engine,
        tokens: TokenIssuer,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.tokens = tokens
        self.clock = clock
        self.secrets = FileSecretStore(settings.secrets_file, settings.agent_secrets)

    @classmethod
    def open(cls, settings: ControlPlaneSettings, *, clock: Clock = time.time) -> ControlPlane:
        """Create the state dir, migrate the database to head, load or create the keys."""
        private_state_dir(settings.state_dir)
        try:
            FileSecretStore(settings.secrets_file).check()
        except SecretStoreError as exc:
            raise UnsafeState(str(exc)) from None
        engine = make_engine(settings.database_url or sqlite_url(settings.state_dir))
        try:
            upgrade(engine)
            tokens = TokenIssuer.from_settings(settings, engine, clock=clock)
        except BaseException:
            engine.dispose()
            raise
        return cls(settings, engine, tokens, clock)

    @functools.cached_property
    def node_ca(self) -> NodeCA:
        """Signs nodes' TLS certificates; in the database, made (or imported from the state
        directory, where it was kept before) on first use."""
        return NodeCA.open(
            self.engine, self.settings.node_domain, self.clock, legacy_dir=self.settings.state_dir
        )

    @functools.cached_property
    def sealer(self) -> Sealer:
        """Seals what the control plane keeps for others (control_plane/identity/sealing.py)."""
        given = self.settings.secrets_key_file
        path = given or self.settings.state_dir / "secrets.key"
        return Sealer(load_key_file(path, create=given is None))

    def close(self) -> None:
        self.engine.dispose()


def private_state_dir(path: Path) -> None:
    """Makes `path` (0700), or sets an existing one that group or others may enter to 0700;
    raises `UnsafeState` if it is not a directory of this process's user."""
    path.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeState(f"state directory {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeState(
            f"state directory {path} belongs to uid {info.st_uid}, not to this process's "
            f"({os.geteuid()}): its owner could open it to others; chown it"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode == STATE_DIR_MODE:
        return
    os.chmod(path, STATE_DIR_MODE)
    if mode & 0o077:
        log.warning(
            "state directory %s had mode %04o (group or others could enter it); set it to 0700",
            path,
            mode,
        )
