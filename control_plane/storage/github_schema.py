"""The GitHub tables (re-exported by ``db``): installation links and the repository of a
workspace, with what its task asked and what came back of it."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    false,
    func,
)

from control_plane.storage.meta import metadata

# Legacy rows hold the GitHub id in `installation_id`; new rows hold "{user_id}:{github_id}"
# there (the storage key other rows reference) and the GitHub id in `external_installation_id`.
github_installations = Table(
    "github_installations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("installation_id", String(255), nullable=False, unique=True),
    Column("external_installation_id", String(64), nullable=True),
    Column("user_id", String(128), nullable=False),
    Column("account_login", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # How the link was proven ("github-user", "admin"), by whom, when; NULL: not proven (0016)
    Column("proof", String(16), nullable=True),
    Column("proven_by", String(255), nullable=True),
    Column("proven_at", Float, nullable=True),
    Index("ix_github_installations_external_installation_id", "external_installation_id"),
    Index(
        "uq_github_installations_user_external",
        "user_id",
        "external_installation_id",
        unique=True,
    ),
)

# The repository a workspace was made for, and the user's proven link that grants it (0016).
workspace_repositories = Table(
    "workspace_repositories",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("repository", String(141), nullable=False),
    Column("installation_id", String(64), nullable=False),  # GitHub's (external) id
    Column("link_storage_id", String(255), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # The task's pull request, once opened: its branch, head commit, number and page.
    Column("branch", String(255), nullable=True),
    Column("base_branch", String(255), nullable=True),
    Column("head_commit", String(64), nullable=True),
    Column("pull_request_number", Integer, nullable=True),
    Column("pull_request_url", String(1024), nullable=True),
    # 0022: asked at submission (the task branch is `branch`, the asked base `base_branch`),
    # and the push at the task's end (pushed: NULL until recorded).
    Column("pull_request_wanted", Boolean, nullable=False, server_default=false()),
    Column("pushed", Boolean, nullable=True),
    Column("pushed_at", Float, nullable=True),
    Column("push_reason", Text, nullable=True),
)
