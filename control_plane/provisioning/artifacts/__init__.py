"""The pinned, hash-checked artifacts a VM installs, built on the host (never at boot).

- `lockfile`: the VM's lock file (locks/vm-agent.txt), parsed;
- `wheelhouse`: the locked wheels plus the vm-agent wheel, for `pip --no-index --require-hashes`;
- `npm_bundle`: Node and the ACP adapters a node names, from agents/package-lock.json;
- `manifest`: what was built, with sizes and sha256 (what user-data refers to);
- `build`, `cli`: `python -m control_plane artifacts build --out DIR`.
"""
