"""The MCP server over stdio, driven by the official SDK's own client, plus path confinement."""

from __future__ import annotations

import os
import sys

import anyio
import pytest

from codesift.index import IndexConfig, build_index

pytest.importorskip("mcp")


def test_mcp_stdio_round_trip_and_confinement(tmp_path, tiny_qwen_dir):
    from mcp import Client, StdioServerParameters

    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src/conf.py").write_text('def parse_config(path):\n    """Read a config file."""\n    return open(path).read()\n')
    (root / "src/stack.py").write_text("class Stack:\n    def push(self, item):\n        self.items.append(item)\n")
    (tmp_path / "secret.py").write_text("TOKEN = 'x'\n")
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=Embedder(str(tiny_qwen_dir)))

    params = StdioServerParameters(command=sys.executable, args=["-m", "codesift.cli", "mcp", str(root)],
                                   env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))

    async def session() -> None:
        async with Client(params, read_timeout_seconds=120) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"search_code", "find_similar", "index_status", "reindex"}

            res = await client.call_tool("search_code", {"query": "parse config", "limit": 5})
            assert not res.is_error
            hits = res.structured_content["results"]
            assert {h["path"] for h in hits} == {"src/conf.py", "src/stack.py"}
            assert set(hits[0]) == {"path", "start_line", "end_line", "symbol", "kind", "language", "score", "snippet"}

            res = await client.call_tool("search_code", {"query": "parse config", "path_glob": "!src/stack.py"})
            assert [h["path"] for h in res.structured_content["results"]] == ["src/conf.py"]

            res = await client.call_tool("search_code", {"query": "  "})
            assert res.is_error and "empty" in res.content[0].text

            res = await client.call_tool("find_similar", {"path": "src/conf.py", "line": 2})
            assert not res.is_error and [h["path"] for h in res.structured_content["results"]] == ["src/stack.py"]

            for outside in ("../secret.py", str(tmp_path / "secret.py"), "/etc/passwd"):
                res = await client.call_tool("find_similar", {"path": outside, "line": 1})
                assert res.is_error and "outside the indexed roots" in res.content[0].text

            status = (await client.call_tool("index_status", {})).structured_content["indexes"][0]
            assert status["files"] == 2 and status["staleness"]["stale"] is False

            (root / "src/new.py").write_text("def fresh_function():\n    return 1\n")
            report = (await client.call_tool("reindex", {})).structured_content["reports"][0]
            assert report["files_changed"] == 1 and report["chunks_embedded"] >= 1

    anyio.run(session)


def test_mcp_refuses_unindexed_root(tmp_path):
    from codesift.serve.mcp import build_server

    with pytest.raises(FileNotFoundError, match="codesift index"):
        build_server([tmp_path])
