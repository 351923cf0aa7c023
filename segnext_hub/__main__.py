"""``python -m segnext_hub`` is ``segnext-hub`` (so that ``torchrun -m segnext_hub`` works)."""

from .cli.hub import main

if __name__ == "__main__":
    main(prog_name="segnext-hub")
