"""What loading plugins costs: SHIM's own strategies are imported only when strategies are asked
for (a worker never does), package names are read from the installed metadata only for
``provided``, entry points are found without importing importlib.metadata, and none of it changes
which plugins are found nor which provider of a name wins."""

from __future__ import annotations

import functools
import sys
import types
import zipfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import pytest

from shim_core import plugins as plugins_module
from shim_core.hookspecs import hookimpl
from shim_core.plugins import KINDS, EntryPoint, Plugins
from shim_plugins.decomposers import LinesDecomposer, PlanFileDecomposer
from tests.helpers import run_python


def test_what_a_worker_reads_imports_no_strategy_nor_package_metadata() -> None:
    """Executors, backends, adapters and errors: no strategy module, no plan reader, and no
    METADATA file read; ``decomposers`` then imports them, ``provided`` reads the metadata once."""
    out = run_python(
        """
        import sys
        from importlib import metadata

        reads = []
        real = metadata.PathDistribution.read_text

        def read_text(self, filename):
            reads.append(filename)
            return real(self, filename)

        metadata.PathDistribution.read_text = read_text
        from shim_core.plugins import Plugins

        plugins = Plugins(env={})
        found = (plugins.executors, plugins.backends, plugins.adapters, plugins.errors)
        loaded = lambda: sorted(
            m for m in sys.modules
            if m.startswith("shim_plugins.decomposers") or m == "shim_core.supervisor.plan"
        )
        print(loaded(), "METADATA" in reads, sorted(found[0]))
        print(sorted(plugins.decomposers), loaded() != [])
        before = reads.count("METADATA")
        packages = {p.package for p in plugins.provided}
        print(packages, reads.count("METADATA") - before)
        """
    )
    assert out.splitlines() == [
        "[] False ['agent', 'python', 'shell', 'sim']",
        "['agent', 'lines', 'plan'] True",
        "{'shim'} 1",
    ]


def plugin_module(name: str, **hooks: Callable[..., object]) -> types.ModuleType:
    """A module-like plugin whose given functions are shim hook implementations."""
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return module


def test_the_builtin_strategy_still_wins_over_a_later_plugin() -> None:
    """A plugin registered after the entry points that provides a ``plan`` strategy loses to
    SHIM's own, though SHIM's is imported after it, and is reported; its other strategy is kept."""
    mine = LinesDecomposer(name="mine")
    clash = plugin_module("clash", shim_decomposers=lambda: [PlanFileDecomposer(), mine])
    plugins = Plugins(env={}, extra=[clash])

    assert isinstance(plugins.decomposers["plan"], PlanFileDecomposer)
    assert plugins.decomposers["plan"] is not clash.shim_decomposers()[0]
    assert plugins.decomposers["mine"] is mine
    assert [str(e) for e in plugins.errors] == [
        "plugin 'clash': strategy 'plan' is already provided"
    ]
    provided = {(p.name, p.plugin) for p in plugins.provided if p.kind == "strategy"}
    assert ("plan", "shim-decomposers") in provided
    assert ("mine", "clash") in provided


def test_provided_lists_the_kinds_in_order_and_refresh_collects_strategies_again() -> None:
    """``provided`` goes executors, strategies, backends, adapters whatever was read first; a
    refresh after the strategies were loaded collects them at once, errors included."""
    broken = plugin_module("broken", shim_decomposers=lambda: 1 / 0)
    plugins = Plugins(env={}, extra=[broken])
    assert plugins.errors == []  # the strategies were not looked at yet

    kinds = [p.kind for p in plugins.provided]
    assert kinds == sorted(kinds, key=KINDS.index)
    assert set(kinds) == set(KINDS)
    assert [e.plugin for e in plugins.errors] == ["broken"]

    plugins.refresh()
    assert [e.plugin for e in plugins.errors] == ["broken"]
    assert {"plan", "lines", "agent"} <= set(plugins.decomposers)


def test_strategies_only_entry_points_filtered_out_are_not_loaded() -> None:
    """SHIM_DISABLE_PLUGINS applies to the deferred entry point too."""
    plugins = Plugins(env={"SHIM_DISABLE_PLUGINS": "shim-decomposers"})
    assert plugins.decomposers == {}
    assert "sim" in plugins.executors


# ------------------------------------------------------------ finding entry points
def pairs(found: Iterable[EntryPoint]) -> list[tuple[str, str]]:
    return [(ep.name, ep.value) for ep in found]


@pytest.mark.parametrize("group", ["shim", "pytest11", "console_scripts"])
def test_the_entry_points_found_are_importlib_metadata_s(group: str) -> None:
    """In this environment: the same entry points, in the same order, without importlib's."""
    found = plugins_module.entry_points(group=group)
    assert pairs(found) == pairs(metadata.entry_points(group=group))
    assert all(not isinstance(ep, metadata.EntryPoint) for ep in found)


def dist_info(site: Path, directory: str, name: str, entry_points: str | None) -> None:
    """A distribution directory with its METADATA and, when given, its entry_points.txt."""
    path = site / directory
    path.mkdir()
    (path / ("PKG-INFO" if directory.endswith(".egg-info") else "METADATA")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
    )
    if entry_points is not None:
        (path / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def test_a_site_directory_is_read_as_importlib_metadata_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first distribution of a name wins (names compared normalised, across the path),
    egg-info directories count, comments and other sections are skipped; the package name is
    read from the metadata only when asked."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    dist_info(first, "My.Pkg-1.0.dist-info", "My.Pkg", "# mine\n[shim]\nmine = my_pkg.plugin\n")
    dist_info(first, "quiet-1.0.dist-info", "quiet", None)
    dist_info(first, "legacy.egg-info", "legacy", "[other]\nx = y\n\n[shim]\n old = legacy:hook \n")
    dist_info(second, "my_pkg-2.0.dist-info", "my_pkg", "[shim]\nshadowed = my_pkg.old\n")
    dist_info(second, "quiet-2.0.dist-info", "quiet", "[shim]\nshadowed2 = quiet.x\n")
    dist_info(second, "extra-1.0.dist-info", "Extra", "[shim]\nextra = extra.mod:obj [feature]\n")
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(second)])

    found = plugins_module.entry_points(group="shim")

    assert sorted(pairs(found)) == sorted(pairs(metadata.entry_points(group="shim")))
    assert sorted(pairs(found)) == [
        ("extra", "extra.mod:obj [feature]"),
        ("mine", "my_pkg.plugin"),
        ("old", "legacy:hook"),
    ]
    assert {ep.name: ep.dist.name for ep in found} == {
        "mine": "My.Pkg",
        "old": "legacy",
        "extra": "Extra",
    }


def test_anything_else_on_the_path_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip file on the path, or a finder that lists distributions of its own: importlib's."""
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\nVersion: 1.0\n")
        zipped.writestr("zipped-1.0.dist-info/entry_points.txt", "[shim]\nzipped = z.plugin\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    found = plugins_module.entry_points(group="shim")
    assert pairs(found) == [("zipped", "z.plugin")]
    assert all(isinstance(ep, metadata.EntryPoint) for ep in found)

    class Finder:
        @staticmethod
        def find_distributions(context: object = None) -> list[metadata.Distribution]:
            return []

    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert all(isinstance(ep, metadata.EntryPoint) for ep in plugins_module.entry_points(group="x"))


def test_an_entry_point_loads_what_it_names() -> None:
    """``module``, ``module:attr.attr`` and extras, as importlib.metadata's ``load``."""
    dist = plugins_module._Distribution("nowhere")
    make = functools.partial(plugins_module._EntryPoint, group="shim", dist=dist)
    assert make("a", "shim_core.plugins").load() is plugins_module
    assert make("b", "shim_core.plugins:Plugins.refresh").load() is Plugins.refresh
    assert make("c", "shim_core.plugins : KINDS [extra]").load() is KINDS
    with pytest.raises(ValueError, match="malformed"):
        make("d", "not a module").load()
    with pytest.raises(ModuleNotFoundError):
        make("e", "shim_no_such_module_xyz").load()
