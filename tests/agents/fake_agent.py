"""A stand-in agent CLI speaking Claude-compatible stream-json, for the executor's own tests
(the real CLIs are driven in test_*_offline.py and test_agent_fleet.py).

Usage: fake_agent.py PROMPT [--resume SESSION]. FAKE_AGENT_MODE picks what it does: ``ok``
(writes FAKE_AGENT_FILE, default ``out.txt``, with the prompt, then a result), ``hang`` (prints
the init event, then nothing), ``write-then-hang``, ``no-result``, ``rate-limit``, ``auth``,
``crash`` (SIGKILLs itself), ``lost-session`` (a resume fails the way Claude Code's does).
"""

import json
import os
import sys
import time
import uuid


def emit(event):
    print(json.dumps(event), flush=True)


def main():
    args = sys.argv[1:]
    prompt = args[0] if args else ""
    resume = args[args.index("--resume") + 1] if "--resume" in args else None
    mode = os.environ.get("FAKE_AGENT_MODE", "ok")
    if resume and mode == "lost-session":
        print(f"No conversation found with session ID: {resume}", file=sys.stderr, flush=True)
        return 1
    session = resume or str(uuid.uuid4())
    emit({"type": "system", "subtype": "init", "session_id": session, "model": "fake"})
    emit({"type": "future_event_kind", "payload": [1, 2, 3]})
    if mode == "hang":
        time.sleep(3600)
    if mode == "write-then-hang":
        with open(os.environ.get("FAKE_AGENT_FILE", "out.txt"), "w", encoding="utf-8") as handle:
            handle.write("half done\n")
        time.sleep(3600)
    if mode == "crash":
        os.kill(os.getpid(), 9)
    if mode == "rate-limit":
        emit({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
              "resetsAt": int(time.time()) + 120}, "session_id": session})  # fmt: skip
        emit({"type": "result", "subtype": "success", "is_error": True, "session_id": session,
              "result": "API Error: 429 rate limit", "total_cost_usd": 0.01})  # fmt: skip
        return 1
    if mode == "auth":
        emit({"type": "result", "subtype": "success", "is_error": True, "session_id": session,
              "result": "Invalid API key · Please run /login", "total_cost_usd": 0})  # fmt: skip
        return 1
    target = os.environ.get("FAKE_AGENT_FILE", "out.txt")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(("resumed\n" if resume else "") + prompt + "\n")
    emit({"type": "assistant", "session_id": session, "message": {"content": [
        {"type": "tool_use", "name": "Write", "input": {"file_path": target}}]}})  # fmt: skip
    emit({"type": "assistant", "session_id": session, "message": {"content": [
        {"type": "text", "text": f"Wrote {target}."}]}})  # fmt: skip
    if mode == "no-result":
        return 0
    emit({"type": "result", "subtype": "success", "is_error": False, "session_id": session,
          "result": f"Wrote {target}.", "total_cost_usd": 0.05, "num_turns": 2,
          "usage": {"input_tokens": 120, "output_tokens": 30}})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
