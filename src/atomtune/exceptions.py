"""User-facing errors: one clear message naming the file / structure / element and what to do.

Every part of atomtune raises these (or subclasses) for bad input; the CLI prints the message without a traceback.
"""


class AtomtuneError(Exception):
    """Bad input or an unmet requirement, with a message that says what to do."""


class DatasetError(AtomtuneError):
    """A dataset file or structure is malformed (names the file and structure index)."""


class UnsupportedElementsError(AtomtuneError):
    """Structures contain elements a backbone was not trained on."""

    def __init__(self, elements, backbone: str, where: str = "", alternatives: dict | None = None):
        self.elements = sorted(set(elements))
        self.backbone = backbone
        message = f"{backbone} does not support element(s) {', '.join(self.elements)}"
        if where:
            message += f" (found in {where})"
        message += "."
        if alternatives:
            covering = [name for name, ok in alternatives.items() if ok]
            if covering:
                message += f" Backbones that cover them: {', '.join(covering)}."
        message += " Remove these structures or choose another backbone (`atomtune models`)."
        super().__init__(message)


class ModelNotFoundError(AtomtuneError):
    """A model name or path that does not resolve to a checkpoint."""
