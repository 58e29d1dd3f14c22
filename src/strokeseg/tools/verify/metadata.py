"""Check 2: version in changelog; metadata valid against the carried schema (offline)."""

from __future__ import annotations

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import CARRIED_SCHEMAS, SCHEMA_DIR, _Context, _load_json, _shorten

# ---------------------------------------------------------------------------------------------- check 2


def _check_metadata(ctx: _Context) -> str:
    from monai.bundle import verify_metadata

    ctx.require(ctx.meta)
    meta = _load_json(ctx.meta, "configs/metadata.json")
    if not isinstance(meta, dict):
        raise BundleError("configs/metadata.json: the top level must be a JSON object")
    problems = []
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(changelog, dict):
        problems.append("configs/metadata.json has no 'changelog' object")
    elif version not in changelog:
        problems.append(
            f"configs/metadata.json: version {version!r} is not a key of 'changelog' "
            f"(keys: {', '.join(map(str, changelog)) or 'none'})"
        )
    url = meta.get("schema")
    schema_name = str(url).rsplit("/", 1)[-1] if url else None
    if not url:
        problems.append("configs/metadata.json has no 'schema' URL")
    elif schema_name not in CARRIED_SCHEMAS:
        problems.append(
            f"configs/metadata.json: schema {url!r} names {schema_name!r}, of which no offline copy is carried "
            f"(carried: {', '.join(sorted(CARRIED_SCHEMAS))})"
        )
    else:
        schema_file = SCHEMA_DIR / schema_name
        if not schema_file.is_file():
            raise BundleError(f"the carried schema {schema_file} is missing; reinstall strokeseg")
        # verify_metadata downloads only when `filepath` does not exist; it exists, and the md5 pins our copy
        try:
            verify_metadata(
                meta_file=str(ctx.meta),
                filepath=str(schema_file),
                hash_val=CARRIED_SCHEMAS[schema_name],
                hash_type="md5",
            )
        except Exception as err:  # ValueError carries the validation error; anything else is as fatal
            problems.append(f"configs/metadata.json does not validate against {schema_name}: {_shorten(err, 600)}")
    if problems:
        raise BundleError("; ".join(problems))
    return f"version {version} in changelog; valid against {schema_name} (offline copy)"
