"""Every bundle has an ``inference_precision`` knob, ``auto`` by default, that follows the machine.

- ``auto`` resolves to bf16 only where the hardware has native bf16: the detection
  (:func:`strokeseg.runtime.precision.native_bf16`) is mocked both ways and every config item that reads the knob is
  evaluated; ``fp32``/``bf16`` force the choice and anything else is refused.
- the bf16 and channels-last paths compute what the plain fp32 path computes: the bundle's own inference
  evaluator runs one synthetic case at its smoke sizes in each variant (:func:`strokeseg.tools.bench.agreement.
  variant_agreement`); channels-last agrees with fp32 to float rounding, bf16 to bf16 rounding, and bf16 is not
  bit-identical to fp32 (so the knob really switched autocast on); the channels-last variants, and only they, run
  the network on channels-last weights or inputs (so that knob is not ignored either). The Dice of bf16 vs fp32
  segmentations of trained quick models is reported in each model card (measured with ``strokeseg evaluate``).
  ``make test`` runs this agreement on one representative bundle, ``.ci/run`` on every bundle.
"""

from __future__ import annotations

import json
import re

import pytest

import strokeseg.runtime.precision as precision
from strokeseg.knobs import KnobError
from strokeseg.runtime.description import BundleDescription
from strokeseg.tools.bench.agreement import variant_agreement
from tests.conformance.test_knobs import _referring_items

KNOB = "inference_precision"
USE = re.compile(rf"\$strokeseg\.runtime\.precision\.use_bf16\(@{KNOB}, @device\)")


def _needs_real_bundle(bundle: BundleDescription) -> None:
    if bundle.root.parent.name == "fixtures":
        pytest.skip("the two-network fixture bundle has no inference network to run in bf16")


def _items(files, bundle: BundleDescription, value):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.read_meta(str(bundle.configs / "metadata.json"))
    parser["bundle_root"] = str(bundle.root)
    parser[KNOB] = value
    return parser, _referring_items(parser, KNOB)


def test_inference_precision_is_auto_and_follows_the_machine(bundle, monkeypatch):
    _needs_real_bundle(bundle)
    configs = bundle.configs
    inference = json.loads((configs / "inference.json").read_text())
    assert inference.get(KNOB) == "auto", f"{bundle.name}: inference.json must set {KNOB} to 'auto'"
    for name in ("inference.json", "train.json"):
        text = (configs / name).read_text()
        uses = re.findall(rf"[^\"]*@{KNOB}[^\"]*", text)
        assert uses, f"{bundle.name}/{name} never reads {KNOB}"
        assert all(USE.search(u) for u in uses), f"{bundle.name}/{name}: {KNOB} read without use_bf16: {uses}"
    for name in ("inference.json", "train.json"):
        files = [configs / name]
        for native in (False, True):
            monkeypatch.setattr(precision, "native_bf16", lambda device=None, n=native: (n, "mocked"))
            for value, expected in (("auto", native), ("fp32", False), ("FP32", False), ("bf16", True)):
                parser, ids = _items(files, bundle, value)
                assert ids, f"{bundle.name}/{name}: no item reads {KNOB}"
                got = [parser.get_parsed_content(i, instantiate=False) for i in ids]
                assert got == [expected] * len(ids), f"{bundle.name}/{name} {value!r} (native {native}): {got}"
        parser, ids = _items(files, bundle, "fp16")
        with pytest.raises(Exception) as err:
            parser.get_parsed_content(ids[0], instantiate=False)
        cause = err.value
        while cause is not None and not isinstance(cause, KnobError):
            cause = cause.__cause__ or cause.__context__
        assert cause is not None and KNOB in str(cause)


@pytest.mark.representative("stroke_ctp_dwi_gan")
def test_bf16_and_channels_last_agree_with_fp32(bundle, tmp_path):
    _needs_real_bundle(bundle)
    results = variant_agreement(bundle.root, tmp_path, overrides=bundle.smoke_overrides)
    assert "bf16" in results, f"{bundle.name}: no bf16 variant ran ({results})"
    for variant, r in results.items():
        assert r["dtype"] == "float32", f"{bundle.name} {variant}: output is {r['dtype']}, not float32"
        assert r["rel_l2"] is not None, f"{bundle.name} {variant}: output shape {r['shape']} differs from fp32"
        wants_cl = variant.endswith("channels_last")
        assert r["ran_channels_last"] == wants_cl, f"{bundle.name} {variant}: channels-last ran: {not wants_cl}"
        if variant.startswith("bf16"):
            assert not r["identical"], f"{bundle.name}: bf16 output is bit-identical to fp32: autocast never ran"
            assert r["rel_l2"] <= 0.05, f"{bundle.name} {variant}: relative L2 error {r['rel_l2']:.4f} vs fp32"
        else:
            assert r["rel_l2"] <= 1e-4, f"{bundle.name} {variant}: relative L2 error {r['rel_l2']:.2e} vs fp32"
