"""The control plane's state: settings, database, signing keys, secrets, fault knobs."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from control_plane.db import make_engine, sqlite_url
from control_plane.keys import Clock
from control_plane.migrate import upgrade
from control_plane.node_ca import NodeCA
from control_plane.secrets import FileSecretStore
from control_plane.settings import ControlPlaneSettings
from control_plane.tokens import TokenIssuer


@dataclass
class FaultInjection:
    """FAULT INJECTION, for tests only; everything is off by default.

    `fail_every_other_events_batch`: the 1st, 3rd, 5th... events batch after it is
    switched on gets a 500. With `store_before_failing` the failing batch is stored
    first (the acknowledgement is lost), otherwise nothing of it is stored.
    """

    fail_every_other_events_batch: bool = False
    store_before_failing: bool = False
    _batches_seen: int = field(default=0, repr=False)

    def next_events_batch_fails(self) -> bool:
        if not self.fail_every_other_events_batch:
            return False
        self._batches_seen += 1
        return self._batches_seen % 2 == 1


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
        self.faults = FaultInjection(
            fail_every_other_events_batch=settings.fault_fail_every_other_events_batch,
            store_before_failing=settings.fault_store_before_failing,
        )

    @classmethod
    def open(cls, settings: ControlPlaneSettings, *, clock: Clock = time.time) -> ControlPlane:
        """Create the state dir, migrate the database to head, load or create the keys."""
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = make_engine(settings.database_url or sqlite_url(settings.state_dir))
        upgrade(engine)
        return cls(settings, engine, TokenIssuer.from_settings(settings, clock=clock), clock)

    @functools.cached_property
    def node_ca(self) -> NodeCA:
        """Signs nodes' TLS certificates; made on first use (its key 0600 in the state dir)."""
        return NodeCA.open(self.settings.state_dir, self.settings.node_domain, self.clock)

    def close(self) -> None:
        self.engine.dispose()
