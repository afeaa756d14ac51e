"""Reproduction of the FuseMax study (Nayak et al., MICRO 2024) from attnscope's general model."""
