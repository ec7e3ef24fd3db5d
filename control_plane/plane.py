"""The control plane's state: settings, database, signing keys and ledger, secrets."""

from __future__ import annotations

import functools
import time

from sqlalchemy import Engine

from control_plane.identity.keys import Clock
from control_plane.identity.node_ca import NodeCA
from control_plane.identity.sealing import Sealer, load_key_file
from control_plane.identity.secrets import FileSecretStore
from control_plane.identity.tokens import TokenIssuer
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import make_engine, sqlite_url
from control_plane.storage.migrate import upgrade


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
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
