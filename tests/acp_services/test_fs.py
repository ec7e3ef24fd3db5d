"""fs/read_text_file and fs/write_text_file against real files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vm_agent.acp.fs import FileSystemService, select_lines
from vm_agent.jsonrpc.errors import INVALID_PARAMS, RESOURCE_NOT_FOUND, JsonRpcError

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "project"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret.txt").write_text("secret\n")
    return o


def _read(path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"sessionId": "s1", "path": str(path), **extra}


def _write(path: Path | str, content: str) -> dict[str, Any]:
    return {"sessionId": "s1", "path": str(path), "content": content}


async def test_read_whole_file(root: Path) -> None:
    (root / "a.txt").write_text("one\ntwo\nthree\n")
    fs = FileSystemService(root)
    assert await fs.read_text_file(_read(root / "a.txt")) == {"content": "one\ntwo\nthree\n"}


async def test_read_line_and_limit(root: Path) -> None:
    (root / "a.txt").write_text("one\ntwo\nthree\nfour")
    fs = FileSystemService(root)
    assert (await fs.read_text_file(_read(root / "a.txt", line=2, limit=2)))["content"] == (
        "two\nthree\n"
    )
    assert (await fs.read_text_file(_read(root / "a.txt", line=3)))["content"] == "three\nfour"
    assert (await fs.read_text_file(_read(root / "a.txt", limit=1)))["content"] == "one\n"
    assert (await fs.read_text_file(_read(root / "a.txt", line=10)))["content"] == ""
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read(root / "a.txt", line=0))
    assert err.value.code == INVALID_PARAMS


def test_select_lines_splits_on_newline_only() -> None:
    assert select_lines("a\u2028b\nc", 2, 1) == "c"
    assert select_lines("a\r\nb\r\n", 2, None) == "b\r\n"


async def test_relative_path_refused(root: Path) -> None:
    fs = FileSystemService(root)
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read("a.txt"))
    assert err.value.code == INVALID_PARAMS
    assert "absolute" in err.value.message


async def test_dotdot_escape_refused(root: Path, outside: Path) -> None:
    fs = FileSystemService(root)
    sneaky = f"{root}/../outside/secret.txt"
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read(sneaky))
    assert err.value.code == INVALID_PARAMS
    assert "outside the allowed" in err.value.message
    with pytest.raises(JsonRpcError):
        await fs.write_text_file(_write(sneaky, "pwned"))
    assert (outside / "secret.txt").read_text() == "secret\n"


async def test_symlink_escape_refused(root: Path, outside: Path) -> None:
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    fs = FileSystemService(root)
    for path in (root / "link.txt", root / "dirlink" / "secret.txt"):
        with pytest.raises(JsonRpcError) as err:
            await fs.read_text_file(_read(path))
        assert err.value.code == INVALID_PARAMS
        with pytest.raises(JsonRpcError):
            await fs.write_text_file(_write(path, "pwned"))
    with pytest.raises(JsonRpcError):
        await fs.write_text_file(_write(root / "dirlink" / "new.txt", "pwned"))
    assert (outside / "secret.txt").read_text() == "secret\n"
    assert not (outside / "new.txt").exists()


async def test_extra_allowed_directory(root: Path, outside: Path) -> None:
    fs = FileSystemService(root, extra_allowed=[outside])
    assert (await fs.read_text_file(_read(outside / "secret.txt")))["content"] == "secret\n"


async def test_a_symlink_inside_the_root_is_not_followed_either(root: Path) -> None:
    # No link at any component (issue 14): one that points inside is refused too, and a
    # write does not replace it.
    (root / "real.txt").write_text("real\n")
    (root / "alias.txt").symlink_to(root / "real.txt")
    (root / "sub").mkdir()
    (root / "subalias").symlink_to(root / "sub")
    fs = FileSystemService(root)
    for path in (root / "alias.txt", root / "subalias" / "x.txt"):
        with pytest.raises(JsonRpcError) as err:
            await fs.read_text_file(_read(path))
        assert "symbolic link" in err.value.message
        with pytest.raises(JsonRpcError) as err:
            await fs.write_text_file(_write(path, "changed\n"))
        assert "symbolic link" in err.value.message
    assert (root / "alias.txt").is_symlink()
    assert (root / "real.txt").read_text() == "real\n"
    assert list((root / "sub").iterdir()) == []


async def test_missing_file_is_resource_not_found(root: Path) -> None:
    fs = FileSystemService(root)
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read(root / "nope.txt"))
    assert err.value.code == RESOURCE_NOT_FOUND
    # ACP's own wording: gemini-cli reads a file before it writes it and takes only a
    # "Resource not found" (or ENOENT) message as "the file does not exist yet".
    assert err.value.message == f"Resource not found: {root / 'nope.txt'}"


async def test_size_bounds(root: Path) -> None:
    (root / "big.txt").write_text("x" * 101)
    fs = FileSystemService(root, max_read_bytes=100, max_write_bytes=10)
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read(root / "big.txt"))
    assert err.value.code == INVALID_PARAMS
    assert "read limit" in err.value.message
    with pytest.raises(JsonRpcError) as err:
        await fs.write_text_file(_write(root / "w.txt", "é" * 6))  # 12 bytes in UTF-8
    assert "write limit" in err.value.message
    assert not (root / "w.txt").exists()


async def test_non_utf8_refused(root: Path) -> None:
    (root / "bin.dat").write_bytes(b"ok\xff\xfe")
    fs = FileSystemService(root)
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file(_read(root / "bin.dat"))
    assert err.value.code == INVALID_PARAMS
    assert "not UTF-8" in err.value.message
    assert "offset 2" in err.value.message


async def test_directory_and_fifo_refused(root: Path) -> None:
    os.mkfifo(root / "pipe")
    fs = FileSystemService(root)
    for path in (root, root / "pipe"):
        with pytest.raises(JsonRpcError) as err:
            await fs.read_text_file(_read(path))
        assert err.value.code == INVALID_PARAMS


async def test_write_creates_file_and_parents(root: Path) -> None:
    fs = FileSystemService(root)
    target = root / "new" / "deep" / "file.txt"
    assert await fs.write_text_file(_write(target, "héllo\n")) == {}
    assert target.read_text(encoding="utf-8") == "héllo\n"


async def test_write_is_atomic_and_keeps_mode(root: Path) -> None:
    target = root / "script.sh"
    target.write_text("old\n")
    target.chmod(0o751)
    old_inode = target.stat().st_ino
    (root / "hardlink").hardlink_to(target)
    fs = FileSystemService(root)
    await fs.write_text_file(_write(target, "new\n"))
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o7777 == 0o751
    # Replaced by rename, not rewritten in place: the old inode still holds the old text.
    assert target.stat().st_ino != old_inode
    assert (root / "hardlink").read_text() == "old\n"
    assert sorted(p.name for p in root.iterdir()) == ["hardlink", "script.sh"]


async def test_bad_params(root: Path) -> None:
    fs = FileSystemService(root)
    with pytest.raises(JsonRpcError) as err:
        await fs.read_text_file({"sessionId": "s1"})
    assert err.value.code == INVALID_PARAMS
    assert "path" in err.value.message
    with pytest.raises(JsonRpcError) as err:
        await fs.write_text_file({"sessionId": "s1", "path": str(root / "x")})
    assert "content" in err.value.message
