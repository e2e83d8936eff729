"""``python -m libra_cli …`` runs the ``libra`` command; ``torchrun … -m libra_cli train …`` needs this."""

from libra_cli.cli import app

if __name__ == "__main__":
    app(prog_name="libra")
