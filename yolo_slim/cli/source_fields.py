"""A dataclass's fields, or a function's parameters, read from its module's source without importing it.

The CLI's schemas take their defaults from the library (``AugmentConfig``, ``SlimCallback.__init__``, ...),
whose modules import torch and Lightning: seconds spent before Hydra could say that ``fliplr=abc`` is
not a number. ``inspect`` and ``dataclasses`` need the imported object, so these few lines read the same
facts off the syntax tree instead, as setuptools' ``attr:`` does for a version string. What they cannot
read statically (a default that is not a literal) is an error, and tests/test_schemas.py checks that the
result equals what ``inspect.signature`` and ``dataclasses.fields`` give on the imported objects.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import typing
from pathlib import Path
from typing import Any

# The names an annotation may use to be checked by OmegaConf; any other makes it Any (the library checks it).
_ANNOTATION_NAMES: dict[str, Any] = {
    "int": int, "float": float, "str": str, "bool": bool, "tuple": tuple, "list": list, "dict": dict,
    "Any": Any, "Optional": typing.Optional, "Union": typing.Union, "Sequence": collections.abc.Sequence,
}


@dataclasses.dataclass(frozen=True)
class SourceField:
    """One field or parameter: ``default`` is ``dataclasses.MISSING`` when it has none."""

    name: str
    annotation: Any
    default: Any


class SourceFieldError(ValueError):
    """The source holds something the static reading cannot evaluate (a developer's error, not a user's)."""


def package_source(module: str) -> Path:
    """The ``.py`` file of one of yolo_slim's modules (``yolo_slim.data.augment``), found without importing it
    (``importlib.util.find_spec`` would import its parent packages, and with them torch)."""
    root = Path(__file__).resolve().parent.parent.parent  # the folder holding the yolo_slim package
    return root.joinpath(*module.split(".")).with_suffix(".py")


def dataclass_fields(path: Path, class_name: str) -> list[SourceField]:
    """The fields of the dataclass ``class_name`` in ``path``, in order (ClassVars left out)."""
    tree = _parse(path)
    definition = _find(tree, class_name, path)
    if not isinstance(definition, ast.ClassDef):
        raise SourceFieldError(f"{path}: {class_name} is not a class")
    constants = _module_constants(tree)
    fields = []
    for statement in definition.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        annotation = statement.annotation
        text = annotation.value if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str) \
            else ast.unparse(annotation)  # a quoted annotation, "ClassVar[int]", is a ClassVar as well
        if text.split("[")[0].strip() in ("ClassVar", "typing.ClassVar"):
            continue
        where = f"{path}: {class_name}.{statement.target.id}"
        default = dataclasses.MISSING if statement.value is None else _literal(statement.value, constants, where)
        fields.append(SourceField(statement.target.id, _annotation(statement.annotation), default))
    return fields


def function_parameters(path: Path, qualified_name: str) -> list[SourceField]:
    """The named parameters of ``qualified_name`` (``plan_pruning``, ``SlimCallback.__init__``) in ``path``, in
    order (``*args``/``**kwargs`` left out)."""
    tree = _parse(path)
    definition = _find(tree, qualified_name, path)
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise SourceFieldError(f"{path}: {qualified_name} is not a function")
    arguments = definition.args
    positional = [*arguments.posonlyargs, *arguments.args]
    # Python aligns the positional defaults with the last parameters; a keyword-only one's is None when absent.
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    constants = _module_constants(tree)
    fields = []
    for argument, default in [*zip(positional, defaults), *zip(arguments.kwonlyargs, arguments.kw_defaults)]:
        where = f"{path}: {qualified_name}({argument.arg})"
        value = dataclasses.MISSING if default is None else _literal(default, constants, where)
        annotation = Any if argument.annotation is None else _annotation(argument.annotation)
        fields.append(SourceField(argument.arg, annotation, value))
    return fields


def _parse(path: Path) -> ast.Module:
    if not path.is_file():  # an install without its .py files (byte code only, a zip)
        raise SourceFieldError(f"{path} is missing: yolo_slim's CLI reads its settings' defaults from the package's "
                               f"source files; reinstall the package from its wheel or sources")
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _find(tree: ast.Module, qualified_name: str, path: Path) -> ast.AST:
    """The class or function ``A.b`` defined at the top of ``tree`` (``b`` inside class ``A``)."""
    node: ast.AST = tree
    for part in qualified_name.split("."):
        found = [s for s in getattr(node, "body", [])
                 if isinstance(s, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == part]
        if not found:
            raise SourceFieldError(f"{path} defines no {qualified_name}")
        node = found[-1]  # the last definition is the one the module ends up with
    return node


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """``NAME = value`` at the module's top level, so that a default may name a module constant."""
    constants: dict[str, ast.expr] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0],
                                                                                            ast.Name):
            constants[statement.targets[0].id] = statement.value
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
            constants[statement.target.id] = statement.value
    return constants


def _literal(node: ast.expr, constants: dict[str, ast.expr], where: str) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        node = constants[node.id]  # one step only: a constant defined as another constant is refused below
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError):  # not a literal; TypeError: a literal set of unhashable items
        raise SourceFieldError(f"{where}: the default {ast.unparse(node)!r} is not a literal (or a module constant "
                               f"holding one); the CLI reads defaults without importing the module") from None


def _annotation(node: ast.expr) -> Any:
    """The annotation's value when it uses only :data:`_ANNOTATION_NAMES`, else ``Any``."""
    try:  # our own source, and no builtins: only the names above can be looked up
        return eval(compile(ast.Expression(node), "<annotation>", "eval"),  # noqa: S307
                    {"__builtins__": {}}, dict(_ANNOTATION_NAMES))
    except Exception:  # noqa: BLE001 - a name not listed (a library class): OmegaConf leaves it unchecked
        return Any
