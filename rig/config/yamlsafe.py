"""Safe YAML loading: plain YAML only, bounded work, and the line of every field.

`load_yaml` reads one YAML document into plain dicts, lists, str, int, float, bool and
None, and keeps where each field was written so that later validation errors can name
``FILE:LINE``. It reads parser events (libyaml when available) and builds the data itself:

- any explicit tag (``!!python/object``, ``!include``, ``!!str``, ``!foo``) is refused;
- the file size is checked before parsing, the nesting depth and the number of nodes
  *after alias expansion* are bounded, so an alias bomb ("billion laughs") is refused
  after at most ``max_nodes`` nodes, in bounded time and memory;
- aliases and merge keys (``<<: *base``) work; aliases are expanded into copies;
- duplicate keys, non-string keys (``1:``, ``on:``, ``null:``), duplicate anchors and
  recursive aliases are refused;
- scalars are typed as by ``yaml.safe_load`` (YAML 1.1: ``yes``/``on`` are booleans,
  ``1e3`` without a dot is a string), except that timestamps stay strings.

Every error is a `ConfigError` whose problem lines start ``FILE:LINE: `` (syntax errors
``FILE:LINE:COLUMN: ``). `resolve_include` checks that an included path stays inside
its folder.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from twin.errors import ConfigError

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_ALIAS_EXPANSIONS = 10_000
DEFAULT_MAX_DEPTH = 100
MAX_PROBLEMS = 50

_TAG = "tag:yaml.org,2002:"
_KINDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "null": "null"}

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedYaml:
    """The data of one YAML file and where each field was written."""

    data: Any
    source: str  # the file name used in messages
    locations: dict[FieldPath, tuple[int, int]] = field(repr=False, default_factory=dict)

    def locate(self, path: Sequence[str | int]) -> tuple[int, int]:
        """1-based (line, column) of the field at ``path``, else of its nearest parent."""
        key = tuple(path)
        while key and key not in self.locations:
            key = key[:-1]
        return self.locations.get(key, (1, 1))

    def where(self, path: Sequence[str | int]) -> str:
        """``FILE:LINE`` of the field at ``path`` (or its nearest parent)."""
        return f"{self.source}:{self.locate(path)[0]}"


# ----------------------------------------------------------------------------- the node graph


def _mark(event: Event) -> Mark:
    """Where ``event`` starts (the parser marks every event it emits)."""
    return cast(Mark, event.start_mark)


class _Node:
    __slots__ = ("column", "line")
    line: int  # 1-based
    column: int  # 1-based

    def __init__(self, event: Event) -> None:
        mark = _mark(event)
        self.line = mark.line + 1
        self.column = mark.column + 1


class _Scalar(_Node):
    __slots__ = ("merge", "raw", "value")
    merge: bool  # the merge key ``<<``
    raw: str  # the text as written
    value: Any  # typed as by yaml.safe_load


class _Seq(_Node):
    __slots__ = ("items",)
    items: list[_Node]


class _Map(_Node):
    __slots__ = ("entries", "merges")
    entries: list[tuple[str, _Node, _Node]]  # (key, key node, value node)
    merges: list[_Node]  # values of ``<<`` keys


class _Alias(_Node):
    __slots__ = ("target",)
    target: _Node


class _Refused(Exception):
    """Stops loading; the problems are already recorded."""


def _shown_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


class _Builder:
    """Composes parser events into nodes, then expands them into plain data."""

    def __init__(self, resolver: Any, source: str, max_nodes: int, max_alias_expansions: int,
                 max_depth: int) -> None:
        self.resolver = resolver  # the loader: resolves plain scalars as yaml.safe_load does
        self.source = source
        self.max_nodes = max_nodes
        self.max_alias_expansions = max_alias_expansions
        self.max_depth = max_depth
        self.problems: list[tuple[int, int, str]] = []
        self.anchors: dict[str, _Node] = {}
        self.open_anchors: set[str] = set()
        self.composed = 0
        self.expanded = 0
        self.alias_expansions = 0
        self.alias_lines: list[int] = []  # lines of the aliases being expanded, outermost first
        self.locations: dict[FieldPath, tuple[int, int]] = {}
        self.scalars = SafeConstructor()

    # ------------------------------------------------------------------ problems
    def problem(self, line: int, message: str, *, column: int = 0, fatal: bool = False) -> None:
        self.problems.append((line, column, message))
        if fatal or len(self.problems) >= MAX_PROBLEMS:
            raise _Refused

    def error(self) -> ConfigError:
        ordered = sorted(self.problems, key=lambda p: (p[0], p[1]))
        return ConfigError([f"{self.source}:{line}: {message}" for line, _, message in ordered])

    # ------------------------------------------------------------------ composing
    def compose(self, loader: Any) -> _Node | None:
        """Compose the single document of the stream (None if there is none)."""
        loader.get_event()  # StreamStartEvent
        if loader.check_event(StreamEndEvent):
            return None
        loader.get_event()  # DocumentStartEvent
        root = self._node(loader, 1)
        loader.get_event()  # DocumentEndEvent
        if loader.check_event(DocumentStartEvent):
            event = loader.peek_event()
            self.problem(event.start_mark.line + 1,
                         "more than one YAML document ('---'); a file holds one", fatal=True)
        return root

    def _count(self, event: Event) -> None:
        self.composed += 1
        if self.composed > self.max_nodes:
            self.problem(_mark(event).line + 1,
                         f"more than {self.max_nodes:,} nodes (limit max_nodes)", fatal=True)

    def _node(self, loader: Any, depth: int) -> _Node:
        event = loader.get_event()
        self._count(event)
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            if event.anchor in self.open_anchors:
                self.problem(line, f"alias '*{event.anchor}' refers to a node that contains it "
                             "(recursive alias)", fatal=True)
            if event.anchor not in self.anchors:
                self.problem(line, f"alias '*{event.anchor}' has no anchor '&{event.anchor}' "
                             "before it", fatal=True)
            alias = _Alias(event)
            alias.target = self.anchors[cast(str, event.anchor)]  # an alias always names one
            return alias
        if depth > self.max_depth:
            self.problem(line, f"nesting deeper than {self.max_depth} levels", fatal=True)
        tag = getattr(event, "tag", None)
        if tag is not None:
            self.problem(line, f"tag '{_shown_tag(tag)}' is not allowed (plain YAML only: no "
                         "tags; quote the value if it is text)")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            if anchor in self.anchors:
                first = self.anchors[anchor].line
                self.problem(line, f"duplicate anchor '&{anchor}' (first at line {first})")
            self.open_anchors.add(anchor)
        node: _Node
        if isinstance(event, ScalarEvent):
            node = self._scalar(event)
        elif isinstance(event, SequenceStartEvent):
            node = _Seq(event)
            node.items = []
            if anchor is not None:
                self.anchors[anchor] = node
            while not loader.check_event(SequenceEndEvent):
                node.items.append(self._node(loader, depth + 1))
            loader.get_event()
        elif isinstance(event, MappingStartEvent):
            node = _Map(event)
            if anchor is not None:
                self.anchors[anchor] = node
            self._mapping(loader, node, depth)
        else:  # pragma: no cover - the parser guarantees the event order
            raise AssertionError(f"unexpected YAML event {event!r}")
        if anchor is not None:
            self.anchors[anchor] = node
            self.open_anchors.discard(anchor)
        return node

    def _scalar(self, event: ScalarEvent) -> _Scalar:
        node = _Scalar(event)
        node.raw = event.value
        resolved = str(self.resolver.resolve(ScalarNode, event.value, event.implicit))
        node.merge = event.tag is None and resolved == _TAG + "merge"
        kind = resolved[len(_TAG):] if event.tag is None else "str"  # tagged: refused anyway
        try:
            if kind in ("int", "float", "bool"):
                plain = ScalarNode(resolved, event.value)
                node.value = getattr(self.scalars, f"construct_yaml_{kind}")(plain)
            elif kind == "null":
                node.value = None
            else:  # str, timestamps, merge and value indicators stay text
                node.value = event.value
        except ValueError as exc:
            self.problem(node.line, f"cannot read {event.value[:40]!r} as {_KINDS[kind]}: {exc}")
            node.value = event.value
        return node

    def _mapping(self, loader: Any, node: _Map, depth: int) -> None:
        node.entries = []
        node.merges = []
        seen: dict[str, int] = {}
        while not loader.check_event(MappingEndEvent):
            key = self._node(loader, depth + 1)
            value = self._node(loader, depth + 1)
            target = key.target if isinstance(key, _Alias) else key
            if not isinstance(target, _Scalar):
                self.problem(key.line, "a key must be a plain string, not a list or mapping")
                continue
            raw = target.value
            if target.merge:
                node.merges.append(value)
                continue
            if not isinstance(raw, str):
                kind = ("a boolean" if isinstance(raw, bool) else "null" if raw is None
                        else "a number")
                text = target.raw[:40]
                self.problem(key.line, f"key {text} is read as {kind}, not a string; quote it: "
                             f"'{text}'")
                continue
            if raw in seen:
                self.problem(key.line, f"duplicate key '{raw}' (first at line {seen[raw]})")
                continue
            seen[raw] = key.line
            node.entries.append((raw, key, value))
        loader.get_event()

    # ------------------------------------------------------------------ expanding
    def expand(self, node: _Node, path: FieldPath, depth: int) -> Any:
        """Plain data of ``node``, counting every node including alias re-expansions."""
        self.expanded += 1
        line = self.alias_lines[0] if self.alias_lines else node.line
        if self.expanded > self.max_nodes:
            self.problem(line, f"more than {self.max_nodes:,} nodes after expanding "
                         "aliases (limit max_nodes); refusing a possible alias bomb",
                         fatal=True)
        if depth > self.max_depth:
            self.problem(line, f"nesting deeper than {self.max_depth} levels after "
                         "expanding aliases", fatal=True)
        if isinstance(node, _Alias):
            self.alias_expansions += 1
            if self.alias_expansions > self.max_alias_expansions:
                self.problem(line, f"more than {self.max_alias_expansions:,} alias "
                             "expansions (limit max_alias_expansions); refusing a possible "
                             "alias bomb", fatal=True)
            self.alias_lines.append(node.line)
            try:
                return self.expand(node.target, path, depth)
            finally:
                self.alias_lines.pop()
        if isinstance(node, _Scalar):
            return node.value
        if isinstance(node, _Seq):
            items = []
            for index, item in enumerate(node.items):
                self.locations[(*path, index)] = (item.line, item.column)
                items.append(self.expand(item, (*path, index), depth + 1))
            return items
        assert isinstance(node, _Map)
        result: dict[str, Any] = {}
        for source in reversed(self._merge_sources(node)):  # earlier sources win
            result.update(self.expand(source, path, depth))
        for key, key_node, value in node.entries:
            self.locations[(*path, key)] = (key_node.line, key_node.column)
            result[key] = self.expand(value, (*path, key), depth + 1)
        return result

    def _merge_sources(self, node: _Map) -> list[_Node]:
        sources: list[_Node] = []
        for merge in node.merges:
            target = merge.target if isinstance(merge, _Alias) else merge
            candidates = target.items if isinstance(target, _Seq) else [merge]
            for candidate in candidates:
                final = candidate.target if isinstance(candidate, _Alias) else candidate
                if not isinstance(final, _Map):
                    self.problem(candidate.line, "merge key '<<' needs a mapping or a list of "
                                 "mappings (such as '<<: *defaults')", fatal=True)
                sources.append(candidate)
        return sources


# ----------------------------------------------------------------------------- public API


def parse_yaml(
    text: str,
    *,
    source: str = "<string>",
    max_nodes: int = DEFAULT_MAX_NODES,
    max_alias_expansions: int = DEFAULT_MAX_ALIAS_EXPANSIONS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> LoadedYaml:
    """Parse YAML text already in memory (see `load_yaml`); ``source`` names it in errors."""
    loader = _Loader(text)
    builder = _Builder(loader, source, max_nodes, max_alias_expansions, max_depth)
    try:
        try:
            root = builder.compose(loader)
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(source, exc) from None
        except yaml.YAMLError as exc:  # reader errors: bad characters
            position = getattr(exc, "position", None)
            raise ConfigError([f"{source}:1: YAML error: {exc}"
                               + (f" (character {position})" if position is not None else "")
                               ]) from None
        if root is None:
            data = None
        else:
            builder.locations[()] = (root.line, root.column)
            data = builder.expand(root, (), 0)
    except _Refused:
        raise builder.error() from None
    finally:
        loader.dispose()
    if builder.problems:
        raise builder.error()
    return LoadedYaml(data=data, source=source, locations=builder.locations)


def load_yaml(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_alias_expansions: int = DEFAULT_MAX_ALIAS_EXPANSIONS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> LoadedYaml:
    """Read one plain-YAML document (UTF-8, at most ``max_bytes`` bytes) from ``path``.

    ``max_nodes`` bounds the nodes of the document after alias expansion, and
    ``max_alias_expansions`` the number of aliases expanded (counted again each time an
    enclosing alias is expanded). Raises `ConfigError` with ``FILE:LINE: `` problem lines.
    """
    source = str(path)
    text = _read_text(Path(path), source, max_bytes)
    return parse_yaml(text, source=source, max_nodes=max_nodes,
                      max_alias_expansions=max_alias_expansions, max_depth=max_depth)


def resolve_include(base_dir: str | Path, relative: str | Path, *,
                    where: str | None = None) -> Path:
    """The real path of ``relative`` inside ``base_dir``; refused if it could leave it.

    Absolute paths are refused, and so is any path that resolves (following symlinks and
    ``..``) outside ``base_dir``. ``where`` (``FILE:LINE`` of the reference) starts the
    problem line; it defaults to ``BASE_DIR:1``. The file need not exist yet.
    """
    prefix = where or f"{base_dir}:1"
    if not isinstance(relative, str | Path) or not str(relative).strip():
        raise ConfigError([f"{prefix}: include must be a non-empty relative path, "
                           f"got {relative!r}"])
    text = str(relative)
    if Path(text).is_absolute() or text.startswith("~"):
        raise ConfigError([f"{prefix}: include '{text}' is an absolute or home path; give a "
                           "path relative to the including file's folder"])
    try:
        base = Path(base_dir).resolve(strict=True)
        target = (base / text).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError([f"{prefix}: include '{text}' cannot be resolved: {exc}"]) from None
    if target == base:
        raise ConfigError([f"{prefix}: include '{text}' names the folder itself, not a file"])
    if not target.is_relative_to(base):
        raise ConfigError([f"{prefix}: include '{text}' resolves to {target}, outside "
                           f"{base}; includes must stay inside that folder"])
    return target


def _read_text(path: Path, source: str, max_bytes: int) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([f"{source}:1: not a regular file"])
        if info.st_size > max_bytes:
            raise ConfigError([f"{source}:1: file is {info.st_size:,} bytes, more than the "
                               f"{max_bytes:,} allowed (max_bytes)"])
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError([f"{source}:1: cannot read the file: {exc.strerror or exc}"]) from None
    if len(raw) > max_bytes:
        raise ConfigError([f"{source}:1: file is more than the {max_bytes:,} bytes allowed "
                           "(max_bytes)"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{source}:{line}: not valid UTF-8 (byte {exc.start})"]) from None


def _syntax_error(source: str, exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "invalid YAML"
    if exc.context:
        context_mark = exc.context_mark
        at = (f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
              if context_mark is not None else "")
        problem = f"{problem} ({exc.context}{at})"
    return ConfigError([f"{source}:{line}:{column}: YAML syntax error: {problem}"])
