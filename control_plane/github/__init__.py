"""GitHub: installation links (`links`: the storage id kept apart from GitHub's id, proven
by GitHub or an admin), the GitHub App client (`app`), the pure decisions (`rules`),
which repository a user's task may reach and what came back of it (`access`), pull
requests (`pulls`) and what nodes and the dispatcher are told of a task's repository
(`delivery`). May import settings, identity,
storage, demand."""
