"""attnscope."""
