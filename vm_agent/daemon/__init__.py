"""The daemon as a whole: `assembly` turns settings into each part's configuration, `run`
starts them in one task group (`vm-agent serve`), `stopper` handles signals and shutdown.
May import every part of vm_agent but the CLI."""
