# The configuration checked against workflows/schemas/config.schema.yaml before anything else, with a one-line error
# naming the first offending key (the Snakefile then runs Snakemake's own validation, which fills in defaults).

from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError

with open(Path(workflow.basedir) / "workflows" / "schemas" / "config.schema.yaml", encoding="utf-8") as _handle:
    _SCHEMA = yaml.safe_load(_handle)
_ERRORS = sorted(jsonschema.validators.validator_for(_SCHEMA)(_SCHEMA).iter_errors(config),
                 key=lambda error: list(map(str, error.absolute_path)))
if _ERRORS:
    _where = ".".join(str(part) for part in _ERRORS[0].absolute_path) or "(top level)"
    raise WorkflowError(f"config key {_where!r}: {_ERRORS[0].message} (workflows/schemas/config.schema.yaml)")
