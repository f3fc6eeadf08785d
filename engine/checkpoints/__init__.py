"""Model weights: resolving, downloading (Hugging Face hub), strict loading, verifying and converting.

Submodules: `resolve` (where a world's files are), `download` (hub cache, offline errors),
`loading` (safe reads, strict `load_into`), `verify` (header-only checks, sha256, `.pt` conversion).
The command line is `python -m engine.checkpoints verify|convert|sha256`.
"""
