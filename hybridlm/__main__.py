"""``python -m hybridlm`` is the ``hybridlm`` command: torchrun starts the training ranks this way."""

from hybridlm.cli import app

app(prog_name="hybridlm")
