"""The files export.py copies into an exported LoopGPT folder: transformers' remote code."""
