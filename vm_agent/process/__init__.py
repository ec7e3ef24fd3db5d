"""An agent's process: the catalog of agents (`catalog`), the environment an agent gets
(`agent_env`), launching and stopping its process group (`launch`, `procgroup`,
`agent_process`), its stderr tail and OOM report. May import common, core, jsonrpc."""
