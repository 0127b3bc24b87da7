"""The entry point of the ``.pth`` line and the sitecustomize snippet (see
:mod:`turbolift._enabling.site`); kept under this name so that hooks
installed by earlier versions keep working."""
from ._enabling.site import activate_if_requested

__all__ = ["activate_if_requested"]
