"""git's command lines and environment for looking at a workspace. Pure.

A workspace's repository is the agent's, so hostile: its config may name programs (a
filter's ``clean``, a diff driver's ``textconv`` or ``command``, ``core.fsmonitor``,
``gpg.program`` behind ``log.showSignature``, a pager, hooks, a transport). Looking must
run none of them, as nobody. So git gets the repository's directory and work tree
explicitly (``GIT_DIR``/``GIT_WORK_TREE``, ``GIT_CEILING_DIRECTORIES`` above it: no
discovery out of the workspace), no system or global config, no protocol at all (no lazy
fetch), no optional locks (``status`` writes no index, so no index hook), and ``-c``
overrides (which win over the repository's config) for every setting that names a program:
the fixed ones here, and each driver the repository's config defines (``driver_overrides``
over ``git config --list --name-only``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# The empty tree: the base of a repository with no commit yet.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_FIXED = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "diff.external=",
    "log.showSignature=false",
    "gpg.program=/bin/false",
    "gpg.ssh.program=/bin/false",
    "gpg.x509.program=/bin/false",
    "core.sshCommand=/bin/false",
    "credential.helper=",
    "protocol.allow=never",
    "color.ui=false",
    "core.quotePath=false",
)
# Keys naming a program, by the driver the repository's .gitattributes chooses.
_DRIVER_KEY = re.compile(
    r"^(filter\.(?P<f>.+)\.(clean|smudge|process|required)"
    r"|diff\.(?P<d>.+)\.(textconv|command)"
    r"|merge\.(?P<m>.+)\.driver"
    r"|protocol\.(?P<p>.+)\.allow)$",
    re.IGNORECASE,
)
_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}~^:+-]{0,199}$")


def driver_overrides(config_names: Iterable[str]) -> list[str]:
    """``-c`` values emptying every program-naming key the repository's config has."""
    out: list[str] = []
    for name in config_names:
        match = _DRIVER_KEY.match(name)
        if match is None:
            continue
        if name.lower().endswith(".required"):
            out.append(f"{name}=false")  # an emptied filter must not then fail the command
        elif name.lower().endswith(".allow"):
            out.append(f"{name}=never")
        else:
            out.append(f"{name}=")
    return out


def git_argv(root: str, overrides: Sequence[str], args: Sequence[str]) -> list[str]:
    argv = ["git", "--no-pager", "--no-replace-objects", "-c", f"safe.directory={root}"]
    for setting in (*_FIXED, *overrides):
        argv += ["-c", setting]
    return [*argv, *args]


def git_env(base: Mapping[str, str], root: str, parent: str) -> dict[str, str]:
    """The environment of a looking git: the agent user's HOME and PATH, nothing else of it."""
    env = {k: v for k, v in base.items() if k in ("PATH", "HOME", "USER", "LOGNAME")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "GIT_DIR": f"{root}/.git",
            "GIT_WORK_TREE": root,
            "GIT_CEILING_DIRECTORIES": parent,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_ALLOW_PROTOCOL": "",  # set and empty: no transport at all
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_NO_LAZY_FETCH": "1",
        }
    )
    return env


def check_ref(ref: str) -> str:
    """A ``base`` a viewer may name: a ref or commit, never an option; ``ValueError`` else."""
    if not _SAFE_REF.match(ref) or ".." in ref:
        raise ValueError(f"base {ref!r} is not a ref or commit name")
    return ref


# The subcommands, with what keeps each from running a program or leaving the workspace.
NO_PROGRAMS = ("--no-ext-diff", "--no-textconv", "--ignore-submodules=all", "--no-color")


def status_args() -> list[str]:
    return [
        "status",
        "--porcelain=v1",
        "-z",
        "--branch",
        "--untracked-files=all",
        "--ignore-submodules=all",
        "--no-renames",
    ]


def diff_args(base: str, *, stat: bool) -> list[str]:
    shape = ["--numstat"] if stat else ["--patch", "--no-renames"]
    return ["diff", *NO_PROGRAMS, *shape, "--end-of-options", base, "--"]


LOG_FIELDS = ("commit", "parents", "author", "email", "time", "subject")


def log_args(range_: str, max_count: int) -> list[str]:
    return [
        "log",
        "--no-color",
        "--no-show-signature",
        "--no-decorate",
        f"--max-count={max_count}",
        "-z",
        "--format=%H%x1f%P%x1f%an%x1f%ae%x1f%at%x1f%s",
        "--end-of-options",
        range_,
        "--",
    ]


def parse_status(out: bytes) -> dict[str, object]:
    """``status --porcelain=v1 -z --branch`` into the branch line and the entries."""
    fields = out.decode("utf-8", "replace").split("\0")
    branch = ""
    entries: list[dict[str, str]] = []
    for field in fields:
        if not field:
            continue
        if field.startswith("## "):
            branch = field[3:]
            continue
        entries.append({"index": field[0], "worktree": field[1], "path": field[3:]})
    return {"branch": branch, "entries": entries}


def parse_log(out: bytes) -> list[dict[str, object]]:
    commits: list[dict[str, object]] = []
    for raw in out.decode("utf-8", "replace").split("\0"):
        record = raw.strip("\n")
        if not record:
            continue
        values = record.split("\x1f")
        if len(values) != len(LOG_FIELDS):
            continue
        row: dict[str, object] = dict(zip(LOG_FIELDS, values, strict=True))
        row["parents"] = values[1].split()
        row["time"] = int(values[4]) if values[4].isdigit() else None
        commits.append(row)
    return commits


def parse_numstat(out: bytes) -> list[dict[str, object]]:
    files: list[dict[str, object]] = []
    for line in out.decode("utf-8", "replace").splitlines():
        added, _, rest = line.partition("\t")
        deleted, _, path = rest.partition("\t")
        files.append(
            {
                "path": path,
                "added": int(added) if added.isdigit() else None,  # None: binary
                "deleted": int(deleted) if deleted.isdigit() else None,
            }
        )
    return files
