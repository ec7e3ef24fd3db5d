"""GitHub: installation links (`links`: the storage id kept apart from GitHub's id, proven
by GitHub or an admin), the GitHub App client (`app`), the pure decisions (`rules`) and
which repository a user's task may reach (`access`). May import settings, identity,
storage, demand."""
