"""Loads the Lua scripts in ``shim_core/lua`` once per client and calls them by SHA.

A file ``<verb>-<n>.lua`` takes exactly ``n`` keys; a header line naming ``KEYS[m...]`` marks the
keys from ``m`` on as variadic. The part of ``_lib.lua`` a script uses (its top-level definitions
the body names, and theirs in turn) is prepended to it: Redis runs that prelude on every call, and
the whole library would cost about 15 µs a call. The body runs as a protected function followed by
the library's ``flush()``, which sends the writes the body gathered (counts, events, ...) in as
few commands as possible. redis-py's
``register_script`` runs EVALSHA and reloads on NOSCRIPT (after a Redis restart), and a script can
be queued on a pipeline.

With ``functions=True`` (the ``redis_functions`` setting, Redis 7) the same scripts are loaded
once per server as a function library (:func:`function_library`, ``FUNCTION LOAD``): the
library's definitions are made once, not on every call, and a call (``FCALL``) costs 8-15 µs
less server time. It is opt-in because a library is server-wide and replaceable by name by
any user allowed ``function|load``, where an EVALSHA runs exactly the code its hash names.
Direct calls use it where the server has it; anything else (Redis 6, a user without the
permissions, a server that lost its functions in a restart or refuses a call up front for
lack of memory or replicas, pipelines, clusters, the embedded store) runs the scripts by
EVALSHA, with the same behaviour.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, NoReturn

import attrs
import hiredis
import redis
from redis.commands.core import Script
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoPermissionError, OutOfMemoryError

log = logging.getLogger(__name__)
_FILE = re.compile(r"^(?P<verb>[a-z_]+)-(?P<nkeys>\d+)\.lua$")
#: A top-level definition of the library: ``local function name(`` or ``local a, b = ...``.
_DEFINITION = re.compile(r"^local (?:function (\w+)|([\w, ]+?) =)", re.M)
_WORD = re.compile(r"[A-Za-z_]\w*")
#: What is not code when names are matched: a comment (dropped: one that mentions a function
#: must not pull it into every script), long (``--[[ ]]``, ``--[==[ ]==]``) or to the end of the
#: line; or a string (kept, group 2), long (``[[ ]]``) or quoted (escapes and ``\``-newlines
#: included). Strings are matched too so that a ``--`` inside one starts no comment.
_COMMENT = re.compile(
    r"--\[(=*)\[.*?\]\1\]"
    r"|--[^\n]*"
    r"|(\[(=*)\[.*?\]\3\]|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")",
    re.S,
)
_VARIADIC = re.compile(r"KEYS\[(\d+)\.\.\.\]")
#: After the body: send what it gathered (also when the body raised: Redis keeps the writes a
#: failed script made, and the gathered ones belong with them), then return its reply.
_EPILOGUE = (
    "local ok, reply = pcall(main)\nflush()\nif not ok then error(reply, 0) end\nreturn reply\n"
)


@attrs.frozen
class LuaSource:
    verb: str
    nkeys: int
    variadic: bool
    source: str
    body: str = ""


@attrs.frozen
class FunctionLibrary:
    """Every script as one Redis function library: ``code`` for ``FUNCTION LOAD``, named
    ``name`` after its content (two SHIM versions on one server never replace each other's),
    and the function of each verb."""

    name: str
    code: str
    functions: dict[str, str]


@cache
def sources() -> dict[str, LuaSource]:
    """Every script of the package, by verb, with the shared library prepended."""
    folder = resources.files("shim_core") / "lua"
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    found: dict[str, LuaSource] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        body = entry.read_text(encoding="utf-8")
        nkeys = int(match["nkeys"])
        variadic = _VARIADIC.search(body)
        if variadic and int(variadic[1]) != nkeys + 1:
            raise RuntimeError(f"{entry.name}: variadic keys must start at KEYS[{nkeys + 1}]")
        prelude = library_for(lib, body + _EPILOGUE)
        source = f"{prelude}\nlocal function main()\n{body}\nend\n{_EPILOGUE}"
        found[match["verb"]] = LuaSource(match["verb"], nkeys, variadic is not None, source, body)
    return found


@cache
def function_library() -> FunctionLibrary:
    """The scripts as one function library: the whole ``_lib.lua`` once, then per verb its body
    as a function of ``KEYS`` and ``ARGV`` and a registered function that starts from a fresh
    ``acc`` (the library's locals outlive a call) and ends with ``flush()``, as a script does.
    ``rcall`` is bound at each call too: ``redis.call`` does not exist while a library loads."""
    folder = resources.files("shim_core") / "lua"
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    # redis.call exists only while a function runs, not while the library loads.
    head = "local rcall = redis.call\n"
    if head not in lib:
        raise RuntimeError("_lib.lua must bind rcall with: local rcall = redis.call")
    scripts = sorted(sources().items())
    if any(_NAME in text for text in (lib, *(src.body for _, src in scripts))):
        raise RuntimeError(f"{_NAME!r} may not appear in the Lua sources")
    parts = [f"#!lua name={_NAME}\n", lib.replace(head, "local rcall\n", 1)]
    functions: dict[str, str] = {}
    for verb, src in scripts:
        functions[verb] = f"{_NAME}_{verb}"
        parts.append(
            f"\nlocal function main_{verb}(KEYS, ARGV)\n{src.body}\nend\n"
            f"redis.register_function('{functions[verb]}', function(keys, args)\n"
            f"  rcall, acc = redis.call, new_acc()\n"
            f"  local ok, reply = pcall(main_{verb}, keys, args)\n"
            f"  flush()\n"
            f"  if not ok then error(reply, 0) end\n"
            f"  return reply\n"
            f"end)\n"
        )
    code = "".join(parts)  # named after all of it: a changed wrapper is a new library too
    name = f"shim_{hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()[:16]}"
    return FunctionLibrary(
        name,
        code.replace(_NAME, name),
        {verb: function.replace(_NAME, name) for verb, function in functions.items()},
    )


#: Stands for the library's name until the code it is named after is complete.
_NAME = "shim_library_name"


def library_for(lib: str, code: str) -> str:
    """The top-level definitions of ``lib`` that ``code`` needs, transitively, in their order.

    A definition runs from its ``local`` line at the start of a line to the next one. Names are
    matched as words outside comments, strings included: a false match only keeps a definition
    that was not needed, never drops one that was."""
    head, chunks, defines, uses = _definitions(lib)
    needed: set[int] = set()
    todo = [defines[word] for word in _names(code) if word in defines]
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(uses[n])
    return head + "".join(chunks[n] for n in sorted(needed))


@cache
def _definitions(
    lib: str,
) -> tuple[str, tuple[str, ...], dict[str, int], tuple[frozenset[int], ...]]:
    """``lib`` cut once (not once per script: a process starts faster) into the text before its
    first definition, its definitions, the definition of each name, and the definitions each
    definition names."""
    starts = [m.start() for m in _DEFINITION.finditer(lib)]
    chunks = tuple(lib[a:b] for a, b in zip(starts, [*starts[1:], len(lib)], strict=True))
    defines: dict[str, int] = {}
    for n, chunk in enumerate(chunks):
        match = _DEFINITION.match(chunk)
        assert match is not None
        for name in (match[1] or match[2]).split(","):
            defines[name.strip()] = n
    uses = tuple(
        frozenset(defines[word] for word in _names(chunk) if word in defines) for chunk in chunks
    )
    return lib[: starts[0]], chunks, defines, uses


def _names(code: str) -> set[str]:
    """The words of Lua ``code`` outside its comments (strings included)."""
    return set(_WORD.findall(_COMMENT.sub(lambda m: m[2] or "", code)))


class Scripts:
    """The registered scripts of one client: ``scripts.call("claim", keys, args)``.

    A call goes straight to the calling thread's connection (EVALSHA, one reply; see
    :class:`HeldConnections`): redis-py's command layer (retries, instrumentation) costs about
    as much as the round trip itself on loopback. On a connection error or an unknown script it
    falls back to that layer, which reconnects, retries and loads the script."""

    def __init__(self, client: redis.Redis, *, functions: bool = False) -> None:
        self._client = client
        # The embedded store (fakeredis) has no sockets to talk to directly, and a cluster
        # client no single pool: both go through redis-py's command layer.
        self._direct_ok = hasattr(client, "connection_pool") and not type(
            client
        ).__module__.startswith("fakeredis")
        #: Whether scripts may be queued on a pipeline (redis-py's cluster pipelines refuse
        #: EVALSHA: callers then make one call per script).
        self._pipelines = not isinstance(client, redis.RedisCluster)
        self._scripts: dict[str, tuple[LuaSource, Script]] = {
            verb: (src, client.register_script(src.source)) for verb, src in sources().items()
        }
        #: The function of each verb, called as if the server had the library (one loaded it
        #: before: no process pays for loading it again); None once a call found it missing
        #: (the next call loads it), {} where it is not used (the calls use EVALSHA).
        self._functions: dict[str, str] | None = (
            function_library().functions if functions and self._direct_ok else {}
        )
        #: A load found a library of that name (True) and no call has got through since: if
        #: the next call still finds no function, stop loading (no load per call, forever).
        self._found_existing = False
        self._held = HeldConnections()

    def call(
        self,
        verb: str,
        keys: Sequence[str],
        args: Sequence[Any],
        client: Any = None,
    ) -> Any:
        """Run script ``verb``; pass a pipeline as ``client`` to queue it instead."""
        script = self._script(verb, keys)
        if client is None and self._direct_ok:
            try:
                return self._direct(verb, keys, args)
            except _FALL_BACK:
                pass  # the client's own path reconnects, retries and loads the script
        target = client or self._client
        try:
            return script(keys=list(keys), args=list(args), client=target)
        except redis.exceptions.NoScriptError:
            if client is not None:  # a pipeline loads its scripts itself when it executes
                raise
            # redis-py reloads a script Redis forgot and calls it again; a restart that lands
            # between the two makes it forget again. Nothing ran: one more reload is safe.
            return script(keys=list(keys), args=list(args), client=target)

    def _script(self, verb: str, keys: Sequence[str]) -> Script:
        src, script = self._scripts[verb]
        if len(keys) != src.nkeys and not (src.variadic and len(keys) >= src.nkeys):
            raise TypeError(f"script {verb!r} takes {src.nkeys} keys, got {len(keys)}")
        return script

    def call_many(
        self, verb: str, keys: Sequence[str], calls: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Run script ``verb`` once per argument list of ``calls``, in one round trip: written
        together on this thread's connection (see :meth:`call`), else on a pipeline, which
        loads the script if the server lost it (a pipeline would first send SCRIPT EXISTS, so a
        single call goes straight). A cluster client's pipelines refuse EVALSHA: it makes one
        call each."""
        if len(calls) == 1 or not self._pipelines:
            return [self.call(verb, keys, args) for args in calls]
        self._script(verb, keys)
        if self._direct_ok:
            try:
                return self._direct_calls(verb, keys, calls)
            except _FALL_BACK:
                pass  # the pipeline reconnects, retries and loads the script
        pipe = self._client.pipeline(transaction=False)
        for args in calls:
            self.call(verb, keys, args, client=pipe)
        return list(pipe.execute())

    def call_replicated(
        self, verb: str, keys: Sequence[str], args: Sequence[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run script ``verb``, then ``WAIT replicas timeout_ms`` on the same connection, in one
        write: returns the script's reply and how many replicas acknowledged its writes (Redis
        counts per connection, so the WAIT must follow on the connection that wrote)."""
        wait = ["WAIT", replicas, timeout_ms]
        if self._direct_ok:
            try:
                replies = self._direct(verb, keys, args, after=wait)
                return replies[0], _acked(replies[1])
            except _FALL_BACK:
                pass  # the pipeline below reconnects, retries and loads the script
        client: Any = self._client
        if not self._pipelines:  # a cluster: the script and its WAIT on the slot's master
            client = client.get_node_from_key(keys[0]).redis_connection
        pipe = client.pipeline(transaction=False)
        self.call(verb, keys, args, client=pipe)
        pipe.execute_command(*wait)
        reply, acked = pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        return reply, _acked(acked)

    def call_after_wait(
        self, wait: Sequence[Any], verb: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any | None:
        """Send a blocking command (``wait``, e.g. BZPOPMIN ...) and script ``verb`` in one
        write: Redis runs the script the moment the wait ends, so a sleeper that wakes gets its
        answer in the same round trip. Returns the script's reply, or None when this cannot be
        done here (the embedded store, a connection error): the caller then waits and calls as
        two steps."""
        if not self._direct_ok:
            return None
        try:
            return self._direct(verb, keys, args, before=wait)
        except redis.exceptions.NoScriptError:
            # Redis forgot the script (a restart) after the wait ended: the wait is over, only
            # the call is left to make (``call`` loads the script again).
            return self.call(verb, keys, args)
        except (redis.ConnectionError, redis.TimeoutError):
            return None

    def functions(self) -> dict[str, str]:
        """The function of each verb ({}: the calls use EVALSHA), loading the library first
        when a call found it missing. A library of that name (the same code) already on the
        server counts as loaded."""
        functions = self._functions
        if functions is not None:
            return functions
        library = function_library()
        try:
            command: Any = self._client.execute_command
            command("FUNCTION", "LOAD", library.code)
        except redis.ResponseError as exc:
            self._found_existing = "already exists" in str(exc)
            if not self._found_existing:
                expected = isinstance(exc, NoPermissionError) or "unknown" in str(exc)
                log.log(  # a user without function|load, Redis 6: as designed
                    logging.DEBUG if expected else logging.WARNING,
                    "SHIM's scripts run by EVALSHA: FUNCTION LOAD refused: %s",
                    exc,
                )
                self._functions = {}
                return {}
        self._functions = library.functions
        return library.functions

    def _direct(
        self,
        verb: str,
        keys: Sequence[str],
        args: Sequence[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> Any:
        """FCALL (EVALSHA where the server has no library) on this thread's connection, after
        command ``before`` in the same write. With a command ``after``, returns [the script's
        reply, that command's reply]. Raises NoScriptError when the server lost the function
        (or the script): the caller's fallback then runs it by EVALSHA, loading it if need
        be."""
        replies = self._direct_calls(verb, keys, [args], before, after)
        return replies if after else replies[0]

    def _direct_calls(
        self,
        verb: str,
        keys: Sequence[str],
        calls: Sequence[Sequence[Any]],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> list[Any]:
        """The calls of :meth:`_direct`, one per argument list of ``calls``, in one write, every
        reply read: the scripts' replies in order, then the reply of ``after`` if any. The
        first script that failed raises (the rest still ran, as in a pipeline)."""
        conn = self._held.connection(self._client.connection_pool)
        done = False
        try:
            function = self._write(conn, verb, keys, calls, before=before, after=after)
            replies = _read_replies(conn, len(calls) + bool(before) + bool(after))
            done = True
        finally:
            if not done:  # broken, or replies left unread: never used again
                self._held.drop()
        return self._checked(replies[1:] if before else replies, function, len(calls))

    def _write(
        self,
        conn: Any,
        verb: str,
        keys: Sequence[str],
        calls: Sequence[Sequence[Any]],
        *,
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> str | None:
        """Write the commands of :meth:`_direct_calls` on ``conn``; returns the function
        called (None: EVALSHA)."""
        function = self.functions().get(verb)
        call = ["FCALL", function] if function else ["EVALSHA", self._scripts[verb][1].sha]
        commands = [list(before)] if before else []
        commands.extend([*call, len(keys), *keys, *args] for args in calls)
        if after:
            commands.append(list(after))
        conn.send_packed_command(_packed(conn, commands))
        return function

    def _checked(self, replies: list[Any], function: str | None, calls: int) -> list[Any]:
        """``replies``, after raising the error of the first of its ``calls`` script replies
        that failed."""
        for reply in replies[:calls]:
            if function and isinstance(reply, Exception):
                self._refused(reply)
            elif isinstance(reply, Exception):
                raise reply
        if function and self._found_existing:
            self._found_existing = False
        return replies

    def line(self) -> ScriptLine | None:
        """A connection of its own for calls written now and answered later (see
        :class:`ScriptLine`); None where calls cannot be made that way (the embedded store, a
        cluster)."""
        return ScriptLine(self) if self._direct_ok and self._pipelines else None

    def _refused(self, error: Exception) -> NoReturn:
        """Raise for an FCALL that failed: NoScriptError (the caller runs the call by EVALSHA)
        when the function did not run, the error itself when the function raised it."""
        text = str(error)
        if text.startswith("Function not found"):
            if self._found_existing:  # loaded, yet missing: never try again in this process
                log.warning("SHIM's scripts run by EVALSHA: library loaded but not found")
                self._functions = {}
            else:
                self._functions = None  # a new, restarted or flushed server: load it next
        elif text.startswith("unknown command") or (
            isinstance(error, NoPermissionError) and "'fcall'" in text
        ):
            self._functions = {}  # Redis 6, or a user who may not call functions
        elif not isinstance(error, OutOfMemoryError) and not text.startswith(_REFUSED_UP_FRONT):
            raise error
        # Refused before it ran (OOM, too few replicas, a failed save): a script runs until
        # its first write that needs what is missing, so one that frees memory or only reads
        # still works by EVALSHA.
        raise redis.exceptions.NoScriptError(text) from error


def _read_replies(conn: Any, count: int) -> list[Any]:
    """The next ``count`` replies of ``conn``; an error reply is returned, not raised (it is a
    whole reply: the connection is fine)."""
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


class ScriptLine:
    """A pooled connection of its own on which a script call is written now and its reply read
    later (:meth:`write`, then :meth:`Written.read`): the caller goes on working while Redis
    runs the script, and no thread hands the round trip to another. Replies are read in the
    order the calls were written. A connection that failed is disconnected and given back (the
    replies of calls written on it are lost: reading them makes the calls again); the next
    write takes another. :meth:`close` gives the connection back (so does the line's end)."""

    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._held: _Held | None = None
        self._unread = 0  # calls written whose reply is not read yet

    def write(self, verb: str, keys: Sequence[str], args: Sequence[Any]) -> Written:
        """Write one call of script ``verb``. Never raises for Redis: a call that could not be
        written is made by :meth:`Written.read`, the way :meth:`Scripts.call` makes it."""
        self._scripts._script(verb, keys)
        call = (verb, keys, args)
        held = self._held
        try:
            if held is None or held.pid != os.getpid():
                held = self._held = _Held(self._scripts._client.connection_pool)
            function = self._scripts._write(held.conn, verb, keys, [args])
        except _FALL_BACK:
            if held is not None:
                self._drop(held)
            return Written(self, None, None, call)
        except BaseException:
            if held is not None:
                self._drop(held)
            raise
        self._unread += 1
        return Written(self, held, function, call)

    def close(self) -> None:
        """Give the connection back to the pool (disconnected if a reply is left unread)."""
        held, self._held = self._held, None
        if held is not None:
            if self._unread:
                held.discard()
            else:
                held.release()

    def _drop(self, held: _Held) -> None:
        """Discard ``held`` (see :meth:`_Held.discard`); the next write takes another."""
        if self._held is held:
            self._held = None
            self._unread = 0
        held.discard()


class Written:
    """A script call written on a :class:`ScriptLine`, its reply not read yet."""

    def __init__(
        self,
        line: ScriptLine,
        held: _Held | None,
        function: str | None,
        call: tuple[str, Sequence[str], Sequence[Any]],
    ) -> None:
        self._line = line
        self._held = held  # None: the write failed, read() makes the call
        # The socket the call went out on: a connection closed (a failover disconnects a
        # pool's connections) or reconnected since has lost the reply with it.
        self._sock = held.conn._sock if held is not None else None
        self._function = function
        self._call = call

    def _lost(self, held: _Held) -> bool:
        return held.conn._sock is not self._sock or held.pid != os.getpid()

    def ready(self) -> bool:
        """Whether :meth:`read` would return without waiting for Redis (its reply, or an
        error, has come). A system call, no more; it never reconnects."""
        held = self._held
        if held is None or self._lost(held):
            return True
        try:
            return bool(held.conn.can_read(timeout=0))
        except Exception:  # broken: read() says how
            return True

    def read(self) -> Any:
        """The call's reply, waiting for it if need be. Where the direct call failed (a broken
        connection, a server that lost the script), the call is made again the way
        :meth:`Scripts.call` makes it: reconnecting, loading the script."""
        held, self._held = self._held, None
        scripts = self._line._scripts
        if held is not None and self._lost(held):
            self._line._drop(held)  # the reply went with the old socket (a forked child's
            held = None  # copy of its parent's connection is left alone: see _Held.discard)
        if held is not None:
            done = False
            try:
                replies = _read_replies(held.conn, 1)
                self._line._unread -= 1
                done = True
                return scripts._checked(replies, self._function, 1)[0]
            except _FALL_BACK:
                pass
            finally:
                if not done:
                    self._line._drop(held)
        return scripts.call(*self._call)


def _packed(conn: Any, commands: list[list[Any]]) -> Any:
    """``conn.pack_commands(commands)``. Where redis-py packs with hiredis, the commands go to
    hiredis as they are: redis-py first copies each command's arguments one by one in Python
    (looking for memoryviews, which SHIM never sends), a few microseconds per task of an add."""
    if type(getattr(conn, "_command_packer", None)) is not HiredisRespSerializer:
        return conn.pack_commands(commands)
    try:
        return [hiredis.pack_command(tuple(command)) for command in commands]
    except TypeError as exc:  # as redis-py reports an argument it cannot send
        raise redis.DataError(str(exc)) from exc


class HeldConnections:
    """One pooled connection per thread, kept between calls instead of taken from the pool and
    given back each time.

    redis-py's pool checks a connection it hands out for unread data (a ``poll`` system call)
    and records both moves for its instrumentation: about 35 µs a call on loopback, a third of
    a round trip. A connection here is only ever left with every reply read; one that failed
    or was interrupted is disconnected and given back (:meth:`drop`), and the next call takes
    another. A thread's connection goes back to the pool when the thread ends; a forked child
    never uses its parent's."""

    def __init__(self) -> None:
        self._local = threading.local()

    def connection(self, pool: Any) -> Any:
        """This thread's connection of ``pool`` (taken from it on first use)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.pool is pool and held.pid == os.getpid():
            return held.conn
        if held is not None:
            held.release()
        held = self._local.held = _Held(pool)
        return held.conn

    def drop(self) -> None:
        """Disconnect this thread's connection and give it back: the next call takes another."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._local.held = None
            held.discard()


class _Held:
    """A connection taken from ``pool``, given back when this object is dropped (its thread
    ended) or :meth:`release` is called, unless the process has forked since."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.pid = os.getpid()
        self.conn = pool.get_connection()
        self._finalizer = weakref.finalize(self, _give_back, pool, self.conn, self.pid)

    def release(self) -> None:
        self._finalizer()

    def discard(self) -> None:
        """Disconnect and give back the connection (its state is unknown: replies unread, or
        broken), unless it went back to the pool already, where it may be someone else's by
        now, or was taken in the parent of this forked process."""
        if self._finalizer.alive and self.pid == os.getpid():
            self.conn.disconnect()
            self.release()


def _give_back(pool: Any, conn: Any, pid: int) -> None:
    if os.getpid() == pid:  # a child's copy of the pool is not the parent's to return to
        pool.release(conn)


#: Errors of a direct call after which the same call goes through redis-py's own path, which
#: reconnects, retries and loads the script.
_FALL_BACK = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoScriptError)

#: Errors (besides OOM) with which Redis refuses a function that may write, before running it.
_REFUSED_UP_FRONT = ("NOREPLICAS ", "MISCONF ")


def _acked(reply: Any) -> int:
    """Replicas a WAIT reply counts; a refused WAIT (no permission, a master being demoted)
    counts none: the script's writes are recorded all the same, only their copies unknown."""
    return int(reply) if isinstance(reply, int) else 0
