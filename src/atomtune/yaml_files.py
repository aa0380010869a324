"""Reading the YAML settings files users write (campaigns, exploration files): one mapping, and the line of any key.

Every problem becomes one error that names ``file:line`` (pydantic's locations are mapped back onto the YAML nodes).
"""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_mapping(path: str | Path, error: type[Exception], expected: str):
    """``(content, root node)`` of a YAML file that must hold a mapping; ``error`` (an AtomtuneError subclass) for a
    missing file, invalid YAML (with its line) or another top-level type (``expected`` says what the mapping holds)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: file not found.")
    text = path.read_text()
    try:
        content = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise error(f"{path}{line}: not valid YAML ({getattr(problem, 'problem', problem)}).") from None
    if not isinstance(content, dict):
        raise error(f"{path}:1: expected a mapping ({expected}).")
    return content, root


def line_of(root, location) -> int:
    """1-based line of the YAML node at ``location`` (keys and list indices; the deepest node that exists)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    for part in location:
        if isinstance(node, yaml.MappingNode):
            child = next(((key, value) for key, value in node.value if key.value == str(part)), None)
            if child is None:
                break
            line = child[0].start_mark.line + 1
            node = child[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


__all__ = ["line_of", "read_yaml_mapping"]
