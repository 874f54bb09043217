"""Regenerate tests/data/regionvit_parity.pt from the official RegionViT code (run outside the test suite).

Usage: .venv/bin/python tests/data/regionvit_parity_make.py /path/to/IBM-RegionViT-checkout
The checkout is IBM/RegionViT (regionvit/regionvit.py and regionvit/attention/*.py), never part of this
repository. Weights and inputs come from closed-form formulas (``formula_state_dict``, ``parity_input`` in
tests/test_models_regionvit.py), so only the official outputs are stored.
"""
import argparse
import os
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/

from test_models_regionvit import PARITY_CASES, formula_state_dict, parity_input, sample_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("official_root")
    args = parser.parse_args()
    sys.path.insert(0, args.official_root)
    warnings.filterwarnings("ignore")
    from regionvit.regionvit import RegionViT, _model_cfg

    out = {}
    for case, (official_cfg, overrides, _, sizes) in PARITY_CASES.items():
        model = RegionViT(**{**_model_cfg[official_cfg], **overrides}).eval()
        model.load_state_dict(formula_state_dict(model.state_dict()), strict=True)
        for hw in sizes:
            x = parity_input(*hw)
            with torch.no_grad():
                out[f"{case}/{hw[0]}x{hw[1]}/logits"] = model(x)
                feats = model.forward_features(x, detection=True)
            for s, f in enumerate(feats):
                out[f"{case}/{hw[0]}x{hw[1]}/stage{s}"] = sample_features(f)
    torch.save(out, os.path.join(HERE, "regionvit_parity.pt"))
    print(f"wrote {len(out)} tensors")


if __name__ == "__main__":
    main()
