"""Online side of tipml: what the BentoML service and the event consumers need at run time.

Offline by design: LiteLLM downloads a model price map from GitHub when imported unless told
it is offline, so the package says so before any of its modules can import LiteLLM.
"""

import os

os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
