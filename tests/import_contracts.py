"""Import-linter contract types of this repository (registered in pyproject.toml).

``standard_library_only``: a module may import, directly or through any chain, only the
standard library and the modules it names. The CNI plugin is exec'd by the container runtime
for every pod ADD and DEL: it must start fast and run where only the interpreter is, so it
imports nothing beyond the standard library and the socket protocol's modules.
"""

from __future__ import annotations

import sys
from typing import Any

from importlinter import Contract, ContractCheck, fields, output


class StandardLibraryOnlyContract(Contract):
    """``source_module`` imports only the standard library and ``allowed_modules``."""

    type_name = "standard_library_only"

    source_module = fields.StringField()
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        source = str(self.source_module)  # type: ignore[attr-defined]
        allowed = {str(m) for m in self.allowed_modules}  # type: ignore[attr-defined]
        reached = graph.find_upstream_modules(source)
        bad = sorted(
            module
            for module in reached
            if module not in allowed
            and module.split(".")[0] not in sys.stdlib_module_names
        )
        chains = {
            module: graph.find_shortest_chain(importer=source, imported=module) for module in bad
        }
        return ContractCheck(kept=not bad, metadata={"chains": chains})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, chain in check.metadata["chains"].items():
            output.print_error(f"{module} is not allowed: {' -> '.join(chain or ())}")
            output.new_line()
