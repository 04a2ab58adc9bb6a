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
            assert names == {"search_code", "find_similar", "explain_code", "answer_question", "index_status", "reindex"}

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

            res = await client.call_tool("find_similar", {"code": "def pop(self):\n    return self.items.pop()\n"})
            assert not res.is_error and res.structured_content["results"]
            res = await client.call_tool("find_similar", {"path": "src/conf.py"})
            assert res.is_error and "path and line" in res.content[0].text

            files = (await client.call_tool("search_code", {"query": "parse_config", "files": True})).structured_content
            assert files["results"][0]["path"] == "src/conf.py" and files["results"][0]["chunks"]
            assert len({h["path"] for h in files["results"]}) == len(files["results"])

            long_query = "Traceback (most recent call last):\n" + "  File \"src/conf.py\", in parse_config\n" * 400
            res = await client.call_tool("search_code", {"query": long_query, "limit": 3})
            assert not res.is_error and res.structured_content["results"][0]["path"] == "src/conf.py"

            res = await client.call_tool("search_code", {"query": "parse config", "budget": 5})
            hits = res.structured_content["results"]
            assert len(hits) == 1 and len(hits[0]["snippet"].split()) <= 5

            res = await client.call_tool("explain_code", {"path": "src/conf.py", "line": 1})
            assert not res.is_error and all(h["path"] != "src/conf.py" for h in res.structured_content["results"])
            res = await client.call_tool("explain_code", {"code": "self.items.append(item)", "limit": 1})
            assert not res.is_error and len(res.structured_content["results"]) == 1
            res = await client.call_tool("answer_question", {"question": "how is a config file read?", "limit": 2})
            assert not res.is_error and 1 <= len(res.structured_content["results"]) <= 2
            res = await client.call_tool("answer_question", {"question": " "})
            assert res.is_error and "empty" in res.content[0].text

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
