"""MCP over stdio answers every request (issue 14, finding 11): a line that is not JSON gets -32700,
arguments that are not valid Unicode get -32602, and the server keeps serving afterwards."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest

pytest.importorskip("mcp")


def test_guard_passes_good_messages_and_answers_bad_ones():
    from codesift.serve.mcp import guard_jsonrpc_line

    ok = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    assert guard_jsonrpc_line(ok) is True
    assert guard_jsonrpc_line("   \n") is False
    err = guard_jsonrpc_line("not json at all")
    assert err["id"] is None and err["error"]["code"] == -32700
    err = guard_jsonrpc_line('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"q":"\\ud800"}}}')
    assert err["id"] == 7 and err["error"]["code"] == -32602 and "params.arguments.q" in err["error"]["message"]
    err = guard_jsonrpc_line('{"jsonrpc":"2.0","id":"a","method":5}')
    assert err["id"] == "a" and err["error"]["code"] == -32600
    assert guard_jsonrpc_line('{"jsonrpc":"2.0","method":"notifications/x","params":{"v":"\\udfff"}}') is False
    json.dumps(guard_jsonrpc_line('{"id": 3, "params": {"\\ud800": 1}}'), ensure_ascii=False).encode("utf-8")


def test_guard_answers_deep_nesting_and_ids_of_the_wrong_type():
    """Issue 23: a 100,000-deep line killed the server; an id that is an object or a float was never answered."""
    from codesift.serve.mcp import guard_jsonrpc_line

    line = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":' + "[" * 100_000 + "]" * 100_000 + "}}"
    err = guard_jsonrpc_line(line)
    assert isinstance(err, dict) and err["error"]["code"] == -32700 and "deep" in err["error"]["message"], err
    for bad_id in ('{"a": 1}', "1.5", "true", "null"):
        err = guard_jsonrpc_line('{"jsonrpc":"2.0","id":' + bad_id + ',"method":"tools/list"}')
        assert isinstance(err, dict) and err["id"] is None and err["error"]["code"] == -32600, (bad_id, err)


def test_stdio_server_answers_every_request(tmp_path, tiny_qwen_dir):
    from codesift.index import IndexConfig, build_index
    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    root.mkdir()
    (root / "conf.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=Embedder(str(tiny_qwen_dir)))
    proc = subprocess.Popen([sys.executable, "-m", "codesift.cli", "mcp", str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))

    def send(line: str) -> None:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    def reply(timeout: float = 300) -> dict | None:  # generous: a busy machine imports slowly
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        return json.loads(proc.stdout.readline()) if ready else None

    try:
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        assert reply()["id"] == 1
        send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        send("this is not json")
        assert reply(20)["error"]["code"] == -32700
        send('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_code",'
             '"arguments":{"query":"\\ud800"}}}')
        answer = reply(20)
        assert answer["id"] == 2 and answer["error"]["code"] == -32602
        send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "search_code", "arguments": {"query": "parse config"}}}))
        answer = reply()
        assert answer["id"] == 3 and "conf.py" in json.dumps(answer["result"])
    finally:
        proc.kill()
        proc.wait(10)
