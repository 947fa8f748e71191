"""Pipeline steps (fine-tune, gate, export, quantize, prune): typed context in, artifacts out."""
