"""The schema's one MetaData, apart so that the schema's modules can share it."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
