"""``segnext-convert``: any SegNeXt checkpoint to verified MMSeg-named weights."""

from __future__ import annotations

import json

import click

from .._version import __version__
from ..conversion.layouts import layout_names
from .common import command_options, shown_lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(dir_okay=True, path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--from", "from_layout", type=click.Choice(["auto", *layout_names()]),
              default="auto", show_default=True, help="Source key layout.")
@click.option("--to", "to", type=click.Choice(layout_names(targets_only=True)), default="mmseg", show_default=True,
              help="Target key layout (official = back to the official repo's names).")
@click.option("--variant", type=click.Choice(["t", "s", "b", "l"], case_sensitive=False),
              help="Override the detected size.")
@click.option("--num-classes", type=click.IntRange(min=1), help="Override the detected class count.")
@click.option("--md-r", type=click.IntRange(min=1),
              help="NMF rank the weights were trained with (default: the checkpoint's config text, "
                   "else --log's, else the layout's default).")
@click.option("--seed", type=int, help="Training seed to record (default: the checkpoint's meta.seed, else --log's).")
@click.option("--log", "log_path", type=click.Path(exists=True, dir_okay=False),
              help="The run's training log (.log.json or text): read for MD_R and seed where the checkpoint "
                   "records none.")
@click.option("--no-verify", is_flag=True, help="Skip the numerical comparison (not recommended).")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="Largest accepted abs difference between source and converted outputs.")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.version_option(__version__, prog_name="segnext-convert")
@command_options
def main(src: str, dst: str, from_layout: str, to: str, variant: str, num_classes: int, md_r: int,
         seed: int, log_path: str, no_verify: bool, atol: float, force: bool, as_json: bool) -> None:
    """Convert SRC (official .pth, Jittor .pkl, MMSeg .pth or .safetensors) into DST.

    SRC may also be a registry name (its cached model.safetensors, pulled if needed) or
    hf://org/repo; a bare name is the registry's even where a file of that name exists
    (write ./NAME for the file), see README "Names and paths".

    DST is .safetensors (with metadata) or .pth (an MMSeg-loadable checkpoint with
    dataset_meta). MD_R, the training seed and the classes/palette the checkpoint
    records about itself (mmcv meta / MMEngine meta and message_hub) are kept in the
    output's metadata. The source weights are loaded into a model laid out like their source
    and the converted ones into the target model; both run on fixed inputs with the same
    seed and the outputs must match within --atol (default: exactly).

    Exit codes: 0 converted, 1 verification failed (nothing written), 2 bad input.

    \b
    Examples:
      segnext-convert segnext_tiny_ade.pth mscan-t.safetensors
      segnext-convert mscan_b.pth mscan-b.safetensors --from official --md-r 64
      segnext-convert model.safetensors official.pth --to official
    """
    from ..conversion.converter import convert
    from ..loading import source_file

    report = convert(source_file(src), dst, from_layout=from_layout, to=to, variant=variant, num_classes=num_classes,
                     md_r=md_r, seed=seed, log=log_path, verify=not no_verify, atol=atol, force=force)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(shown_lines(report.format_text()))


if __name__ == "__main__":
    main()
