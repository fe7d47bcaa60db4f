"""The API reference's pages, generated from each public module's ``__all__``.

:func:`write_pages` writes one reST page per module of :data:`MODULES`: the module docstring, then
every name of its ``__all__`` (a name re-exported from a module that has its own page links there:
one home per object). Renaming or adding a public name needs no edit; only a new public module
goes into :data:`MODULES`.
"""

from __future__ import annotations

import importlib
import inspect
import os

#: The public surface: (module, one-line title). Each page documents the module's ``__all__``.
MODULES = [
    ("lip_agnostic", "the core: LIP, the driver, its result"),
    ("lip_agnostic.metrics", "subspace and spectrum metrics"),
    ("lip_agnostic.noise", "label-noise generators"),
    ("lip_agnostic.errors", "typed errors"),
    ("lip_agnostic.options", "the options, parsed once, and the policy that picks the repair"),
    ("lip_agnostic.repairs", "the repairs behind one protocol (the paper's diagonal refit, the full tail, the label-aware heads)"),
    ("lip_agnostic.selection", "the one guarded selection: held-out scoring and the sign test"),
    ("lip_agnostic.svd", "the SVD code: reduced, Gram route, randomized top-k"),
    ("lip_agnostic.label_issues", "suspect labels in one call (beyond the paper)"),
    ("lip_agnostic.out_of_fold", "out-of-fold scores without retraining"),
    ("lip_agnostic.confident_learning", "confident learning in array-API"),
    ("lip_agnostic.neighbours", "the feature-space neighbour vote"),
    ("lip_agnostic.temperature", "one temperature: NLL and calibration error"),
    ("lip_agnostic.suspects", "the suspect-label result type"),
    ("lip_agnostic.report", "what a refinement changed"),
    ("lip_agnostic.progress", "progress lines for long steps"),
    ("lip_agnostic.adapters.torch", "PyTorch face"),
    ("lip_agnostic.adapters.keras", "Keras 3 face"),
    ("lip_agnostic.adapters.sklearn", "scikit-learn face"),
    ("lip_agnostic.adapters.transformers", "Hugging Face Transformers face"),
    ("lip_agnostic.adapters.lightning", "Lightning face"),
    ("lip_agnostic.tools", "lip-onnx's Python API"),
    ("lip_agnostic.tools.errors", "lip-onnx's errors and exit codes"),
]


def _directive(module, name: str) -> str | None:
    obj = getattr(module, name)
    if inspect.ismodule(obj):
        return None  # a submodule re-exported by name: it has its own page
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
    elif callable(obj):
        kind = "function"
    else:
        kind = "data"
    # Document each object where it lives when it is re-exported (one home, one anchor), but
    # list it under every module that exports it.
    home = getattr(obj, "__module__", None) if kind != "data" else None
    target = f"{module.__name__}.{name}"
    if kind == "data":
        return f".. autodata:: {target}\n   :no-value:\n"
    role = "func" if kind == "function" else "class"
    if home and home != module.__name__ and _exported_by_page(home, name):
        return f"- :py:{role}:`{name} <{home}.{name}>`\n"
    # An object whose home module has no page is documented on the first page that exports it
    # (pages are written in MODULES order) and linked from the others: one anchor per object.
    first = _DOCUMENTED.setdefault(id(obj), target)
    if first != target:
        return f"- :py:{role}:`{name} <{first}>`\n"
    return f".. auto{kind}:: {target}\n"


#: id(object) -> the target it was documented under (filled as the pages are written).
_DOCUMENTED: dict[int, str] = {}


def _exported_by_page(home: str, name: str) -> bool:
    for mod, _ in MODULES:
        if mod == home:
            return name in getattr(importlib.import_module(mod), "__all__", ())
    return False


def write_pages(out: str, modules: list[tuple[str, str]] | None = None) -> list[str]:
    """Write ``out/<module>.rst`` for each public module (unchanged pages keep their mtime); return the paths."""
    paths = []
    _DOCUMENTED.clear()
    os.makedirs(out, exist_ok=True)
    for mod_name, title in MODULES if modules is None else modules:
        module = importlib.import_module(mod_name)
        names = list(getattr(module, "__all__", ()))
        heading = f"``{mod_name}``: {title}"
        lines = [heading, "=" * len(heading), "", f".. automodule:: {mod_name}", "   :no-members:", ""]
        links, blocks = [], []
        for name in names:
            d = _directive(module, name)
            if d is None:
                continue
            (links if d.startswith("- ") else blocks).append(d)
        if links:
            lines += ["Also exported here (documented where they are defined):", "", *links, ""]
        lines += blocks
        text = "\n".join(lines) + "\n"
        path = os.path.join(out, f"{mod_name}.rst")
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:  # unchanged pages keep their mtime: incremental builds stay incremental
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        paths.append(path)
    return paths
