"""The kopf operator: `kopf run -m lockgate.controller` or `lockgate operator`."""

from . import handlers as handlers
