"""Modal sandboxes for rlm-core: ``RLM(environment="modal")``.

The plugin is a launcher: it creates a Modal sandbox, uploads the host's agent into it and
relays the bridge over the agent's exec stdio. Importing this package does not import the
``modal`` SDK.
"""

from rlm_modal.environment import ModalEnvironment

__all__ = ["ModalEnvironment"]
