"""The `vm-agent` command and its sub-commands (serve, dev, attach, acp, prompt, agent-users).
Imports lazily, so each sub-command starts quickly; only `dev` reaches into control_plane."""
