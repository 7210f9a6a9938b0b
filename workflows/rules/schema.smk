# The configuration checked against workflows/schemas/config.schema.yaml before anything else, with a one-line error
# naming the first offending key (the Snakefile then runs Snakemake's own validation, which fills in defaults), and
# integral floats made integers where the schema asks for one.

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


def _integers(value, schema):
    """`value` with every integral float (700.0) that the schema asks to be an integer made an int: JSON Schema counts
    700.0 as an integer, the commands the rules call refuse it."""
    if isinstance(value, float) and schema.get("type") == "integer" and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _integers(v, properties.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_integers(v, schema["items"]) for v in value]
    return value


config.update(_integers(dict(config), _SCHEMA))
