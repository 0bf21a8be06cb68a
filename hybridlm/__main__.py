"""`python -m hybridlm ...` = the `hybridlm` command, for a checkout that is not pip-installed (scripts/gpu_check.sh
runs it so on a GPU machine with no network: the tree on sys.path is enough, no console script is needed)."""

from hybridlm.cli import app

app(prog_name="hybridlm")
