"""Check 4: ``verify_net_in_out network_def``."""

from __future__ import annotations

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import _Context, _describe, _load_json

# ---------------------------------------------------------------------------------------------- check 4

#: smallest spatial size of the eager-vs-TorchScript comparison input (check 5)
EXPORT_MIN_SIZE = 32


def _input_shape(meta: dict, min_size: int = 1) -> tuple[int, ...]:
    """``(1, C, *spatial)`` of the metadata's ``image`` input, with ``p = 1``, ``*`` = 1 and the smallest ``n``
    that makes every ``"k*n"`` dimension at least ``min_size`` (``n = 1`` by default).

    MONAI's own expansion of ``"16*n"``-style entries is used, so with ``min_size=1`` this is the shape
    ``verify_net_in_out`` and traced ``ckpt_export`` build; the export comparison asks for a larger one, so
    that the network's deeper layers see more than a single pixel.
    """
    from monai.bundle.scripts import _get_fake_spatial_shape

    try:
        image = meta["network_data_format"]["inputs"]["image"]
        channels, spatial = int(image["num_channels"]), image["spatial_shape"]
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(
            "configs/metadata.json: network_data_format#inputs#image needs an int 'num_channels' and a "
            f"'spatial_shape' list ({type(err).__name__}: {err})"
        ) from err
    n = 1
    while n < 1024 and min(_get_fake_spatial_shape(spatial, n=n) or (min_size,)) < min_size:
        if _get_fake_spatial_shape(spatial, n=n) == _get_fake_spatial_shape(spatial, n=n + 1):
            break  # no dimension depends on n
        n += 1
    return (1, channels, *_get_fake_spatial_shape(spatial, n=n))


def _check_net_io(ctx: _Context) -> str:
    from monai.bundle import verify_net_in_out

    ctx.require(ctx.meta, ctx.inference)
    shape = _input_shape(_load_json(ctx.meta, "configs/metadata.json"))
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(ctx.meta),
            config_file=str(ctx.inference),
            device="cpu",
            bundle_root=str(ctx.bundle),
        )
    except Exception as err:
        raise BundleError(
            f"verify_net_in_out network_def (configs/inference.json, input {shape}) failed: {_describe(err)}"
        ) from err
    return f"network_def maps an input of shape {shape} to the channels and dtype the metadata declares"
