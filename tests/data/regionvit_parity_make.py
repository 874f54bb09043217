"""Regenerate tests/data/regionvit_parity.pt from the official RegionViT code (run outside the test suite).

Usage: .venv/bin/python tests/data/regionvit_parity_make.py /path/to/IBM-RegionViT-checkout
The checkout is IBM/RegionViT (regionvit/regionvit.py and regionvit/attention/*.py), never part of this
repository. Weights and inputs come from closed-form formulas (``formula_state_dict``, ``parity_input`` in
tests/test_models_regionvit.py), so only the official outputs are stored.

The official model runs in float64 (weights and input are float32 values, upcast exactly), so the fixture is
the official computation with rounding errors of ~1e-16 relative: a reference that does not depend on the CPU's
float32 kernels. The script also runs the official model in float32 and prints how far that lands from the
float64 outputs, against the float32 tolerance the tests derive (``rounding_tolerance``): the official code's
own float32 error must be inside it, or the derivation is wrong.
"""
import argparse
import os
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/

from test_models_regionvit import (PARITY_CASES, formula_state_dict, parity_input, reduction_path_lengths,  # noqa: E402
                                   rounding_tolerance, sample_features)


def outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = {"logits": model(x)}
        for s, f in enumerate(model.forward_features(x, detection=True)):
            out[f"stage{s}"] = sample_features(f)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("official_root")
    args = parser.parse_args()
    sys.path.insert(0, args.official_root)
    warnings.filterwarnings("ignore")
    from regionvit.regionvit import RegionViT, _model_cfg

    from regionvit_video.models import create_model

    fixture = {}
    for case, (official_cfg, overrides, (ours, our_overrides), sizes) in PARITY_CASES.items():
        model = RegionViT(**{**_model_cfg[official_cfg], **overrides}).eval()
        model.load_state_dict(formula_state_dict(model.state_dict()), strict=True)
        ours_model = create_model(ours, **our_overrides)
        for hw in sizes:
            x = parity_input(*hw)
            ref = outputs(model.double(), x.double())
            f32 = outputs(model.float(), x)
            paths = reduction_path_lengths(ours_model, hw)
            for name, value in ref.items():
                fixture[f"{case}/{hw[0]}x{hw[1]}/{name}"] = value
                err = (f32[name].double() - value).abs().max().item()
                tol = rounding_tolerance(value, paths[name], torch.float32)
                print(f"{case:24s} {hw[0]}x{hw[1]} {name:7s} official float32 - float64: {err:.2e}  "
                      f"float32 tolerance {tol:.2e} (path {paths[name]})  {'OK' if err <= tol else 'EXCEEDED'}")
                if err > tol:
                    raise SystemExit("the official float32 output is outside the derived float32 tolerance")
    torch.save(fixture, os.path.join(HERE, "regionvit_parity.pt"))
    print(f"wrote {len(fixture)} float64 tensors")


if __name__ == "__main__":
    main()
