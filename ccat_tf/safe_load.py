"""Bounded YAML and JSON loading for every settings, config and metadata file ccat_tf reads.

``yaml.safe_load`` and ``json.loads`` have no limits: a 1 KB YAML "billion laughs" (anchors of
aliases, nine levels of nine) builds a value that expands to 387 million items the moment anything
walks it, and both keep the last of two equal mapping keys without a word. Here every file is:

* at most :data:`MAX_BYTES` (1 MiB) long: a settings file is a few KB, a 50-shot config.yaml
  about 20 KB;
* at most :data:`MAX_VALUES` (100 000) values once YAML aliases are expanded (each use of an
  alias counts everything it stands for), counted while the document is composed, so a bomb
  stops at the alias that crosses the budget, in milliseconds;
* at most :data:`MAX_DEPTH` (50) levels deep (settings are 4 at most);
* free of recursive aliases and of duplicate mapping keys (a YAML merge key ``<<: *base`` may
  still be overridden: that is what it is for).

Every refusal is a :class:`LoadError`, one line naming the file, the line and the fix. It is a
:class:`~ccat_tf.errors.SettingsError` (the CLI prints it and exits 2) and a ``ValueError``
(callers that caught ``json.loads``' errors keep working). Values that did not come from a file
(Snakemake's ``--config``, a mapping built in Python) are checked with :func:`check_values`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingEndEvent

from ccat_tf.errors import SettingsError
from ccat_tf.regular_file import open_regular

MAX_BYTES = 1 << 20
MAX_VALUES = 100_000
MAX_DEPTH = 50

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LoadError(SettingsError, ValueError):
    """A file (or value) over a limit, with a duplicate key, or not YAML/JSON.

    ``kind`` is one of ``unreadable``, ``size``, ``syntax``, ``values``, ``depth``,
    ``recursive``, ``duplicate``; for ``duplicate``, ``path`` is the keys leading to the
    mapping, ``key`` the repeated key and ``line`` (1-based) its second appearance.
    """

    def __init__(self, message, *, kind, source="", line=None, path=(), key=None):
        super().__init__(message)
        self.kind, self.source, self.line = kind, source, line
        self.path, self.key = tuple(path), key


def _at(source: str, mark) -> str:
    return f"{source} line {mark.line + 1}" if mark is not None else source


# ---- reading ----------------------------------------------------------------------------------


def read_text(path: str | Path, source: str | None = None, max_bytes: int = MAX_BYTES) -> str:
    """The file's text, refusing it unread past ``max_bytes`` (a device or FIFO included)."""
    path = Path(path)
    source = source or str(path)
    try:
        with open_regular(path) as f:  # a FIFO would block, a device never end
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise LoadError(
            f"cannot read {source}: {err.strerror or err}; check the path",
            kind="unreadable",
            source=source,
        ) from None
    if len(data) > max_bytes:
        raise LoadError(
            f"{source} is larger than {max_bytes} bytes, the limit for this file; a settings "
            "file is a few KB: check it is the right file",
            kind="size",
            source=source,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LoadError(
            f"{source} is not UTF-8 text (byte {err.start}); save it as UTF-8",
            kind="syntax",
            source=source,
        ) from None


def load_file(path: str | Path, source: str | None = None, max_bytes: int = MAX_BYTES) -> Any:
    """A YAML file, or JSON if its name ends in .json (YAML reads JSON too, but stricter JSON
    errors help a .json file's author)."""
    source = source or str(path)
    text = read_text(path, source, max_bytes)
    if Path(path).suffix.lower() == ".json":
        return load_json_text(text, source)
    return load_yaml_text(text, source)


# ---- YAML -------------------------------------------------------------------------------------


class _BoundedComposer(yaml.composer.Composer):
    """PyYAML's composer, counting values (aliases at their expanded size), nesting and keys.

    Aliases share nodes, so composing a bomb is cheap; what explodes is whatever walks the
    result later. Each node's expanded size is known when it is complete, so an alias costs its
    size at once and a recursive one (to a node still open) is refused.
    """

    def _init_rest(self, source: str) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._source, self._count, self._depth = source, 0, 0
        self._sizes: dict[int, int] = {}
        self._path: list = []

    def _spend(self, n: int, mark, alias: bool = False) -> None:
        self._count += n
        if self._count <= MAX_VALUES:
            return
        what = (
            f"YAML aliases expand past {MAX_VALUES} values, the limit (an alias counts "
            "everything it stands for); write the values out instead of nesting aliases"
            if alias
            else f"more than {MAX_VALUES} values, the limit; a settings or config file holds "
            "a few thousand at most: check it is the right file"
        )
        raise LoadError(
            f"{_at(self._source, mark)}: {what}",
            kind="values",
            source=self._source,
            line=mark.line + 1,
        )

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._sizes:
                raise LoadError(
                    f"{_at(self._source, event.start_mark)}: alias *{event.anchor} refers to a "
                    "value that contains it; YAML aliases must not be recursive",
                    kind="recursive",
                    source=self._source,
                    line=event.start_mark.line + 1,
                )
            node = super().compose_node(parent, index)  # an undefined alias raises here
            self._spend(self._sizes[id(node)], event.start_mark, alias=True)
            return node
        mark = self.peek_event().start_mark
        if self._depth >= MAX_DEPTH:
            raise LoadError(
                f"{_at(self._source, mark)}: nested more than {MAX_DEPTH} levels deep; settings "
                "are a few levels at most",
                kind="depth",
                source=self._source,
                line=mark.line + 1,
            )
        start = self._count
        self._spend(1, mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._count - start
        return node

    def compose_mapping_node(self, anchor):
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start_event.implicit)
        node = yaml.MappingNode(
            tag, [], start_event.start_mark, None, flow_style=start_event.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict = {}
        while not self.check_event(MappingEndEvent):
            key_node = self.compose_node(node, None)
            key = self._check_key(key_node, seen)
            self._path.append(key)
            try:
                value_node = self.compose_node(node, key_node)
            finally:
                self._path.pop()
            node.value.append((key_node, value_node))
        node.end_mark = self.get_event().end_mark
        return node

    def _check_key(self, key_node, seen: dict):
        """The key's value; refuse a key the mapping already has."""
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            return key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
        key = self.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable: the constructor refuses it later, naming the line
            return key
        line = key_node.start_mark.line + 1
        if first is not None:
            name = ".".join(str(k) for k in [*self._path, key])
            raise LoadError(
                f"{self._source} line {line}: {name} is given twice (first on line {first}); "
                "keep one",
                kind="duplicate",
                source=self._source,
                line=line,
                path=self._path,
                key=key,
            )
        seen[key] = line
        return key


class _PyLoader(
    _BoundedComposer,
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.constructor.SafeConstructor,
    yaml.resolver.Resolver,
):
    """yaml.SafeLoader with the bounded composer (pure Python)."""

    def __init__(self, text: str, source: str):
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        self._init_rest(source)


_LOADER: type = _PyLoader
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(
        _BoundedComposer,
        yaml.cyaml.CParser,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        """The same on libyaml's parser (faster); the composer stays Python."""

        def __init__(self, text: str, source: str):
            yaml.cyaml.CParser.__init__(self, text)
            self._init_rest(source)

    _LOADER = _CLoader


def load_yaml_text(text: str, source: str) -> Any:
    """One YAML document (None if empty) as yaml.safe_load gives it, within the limits."""
    if len(text) > MAX_BYTES:
        raise LoadError(
            f"{source} is longer than {MAX_BYTES} characters, the limit for this text",
            kind="size",
            source=source,
        )
    loader = _LOADER(text, source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LoadError(
            f"{source} is not valid YAML/JSON{where}: {why}; fix the syntax there",
            kind="syntax",
            source=source,
            line=mark.line + 1 if mark else None,
        ) from None
    finally:
        loader.dispose()


# ---- JSON -------------------------------------------------------------------------------------


def _unique_pairs(source: str):
    def hook(pairs):
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise LoadError(
                    f"{source}: key {key!r} is given twice; keep one",
                    kind="duplicate",
                    source=source,
                    key=key,
                )
            out[key] = value
        return out

    return hook


def load_json_text(
    text: str | bytes,
    source: str,
    max_bytes: int = MAX_BYTES,
    max_values: int | None = MAX_VALUES,
) -> Any:
    """JSON text within the limits (size, values, depth; no duplicate keys).

    JSON has no aliases, so its size already bounds its values: metadata that may list many
    frames (a .cat's) passes its own ``max_bytes`` and ``max_values=None``.
    """
    if len(text) > max_bytes:
        raise LoadError(
            f"{source} is longer than {max_bytes} bytes, the limit for this text",
            kind="size",
            source=source,
        )
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs(source))
    except RecursionError:
        raise LoadError(
            f"{source}: nested more than {MAX_DEPTH} levels deep",
            kind="depth",
            source=source,
        ) from None
    except LoadError:
        raise
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise LoadError(
            f"{source} is not valid JSON ({err}); fix the syntax there",
            kind="syntax",
            source=source,
            line=getattr(err, "lineno", None),
        ) from None
    if max_values is not None:
        check_values(data, source, max_values)
    return data


def load_json_file(
    path: str | Path,
    source: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_values: int | None = MAX_VALUES,
) -> Any:
    source = source or str(path)
    return load_json_text(read_text(path, source, max_bytes), source, max_bytes, max_values)


# ---- values that did not come from a file -----------------------------------------------------


def check_values(data: Any, source: str, limit: int = MAX_VALUES) -> int:
    """Count ``data``'s values as YAML would expand them (a list used twice counts twice);
    refuse more than ``limit``, nesting past :data:`MAX_DEPTH` or a container inside itself.

    Shared containers are counted once and their count reused, so this takes time in the number
    of distinct containers, not in the expanded size. Returns the count.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(value, depth):
        if not isinstance(value, (dict, list, tuple)):
            return 1
        ident = id(value)
        if ident in sizes:
            return sizes[ident]
        if ident in open_:
            raise LoadError(
                f"{source} contains itself; remove the recursive alias",
                kind="recursive",
                source=source,
            )
        if depth >= MAX_DEPTH:
            raise LoadError(
                f"{source} is nested more than {MAX_DEPTH} levels deep", kind="depth", source=source
            )
        open_.add(ident)
        total = 1
        for item in (x for kv in value.items() for x in kv) if isinstance(value, dict) else value:
            total += size(item, depth + 1)
            if total > limit:
                raise LoadError(
                    f"{source} expands to more than {limit} values (YAML aliases count "
                    "everything they stand for); write the values out instead of nesting aliases",
                    kind="values",
                    source=source,
                )
        open_.discard(ident)
        sizes[ident] = total
        return total

    return size(data, 0)
