"""GitHub: installation links (`links`, the storage id kept apart from GitHub's id) and the
GitHub App client. May import identity, storage, demand."""
