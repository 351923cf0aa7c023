"""Cache commands: list, pull, path, info, verify, rm, log.

None of them imports torch unless a pull has to download and convert: the registry and the
cache are plain data, and hub.pull imports the converter only then. Each command imports
what it uses on call, so ``--help`` imports none of it. tests/cli/test_fast_commands.py runs
every one of them in a subprocess and checks the interpreter's import list.
"""

from __future__ import annotations

import json
from typing import Optional

import click

from .common import command_options, shown, shown_lines


def _mib(size: Optional[int]) -> str:
    return f"{size / 2**20:.0f} MiB" if size else "-"


@click.command("list")
@click.option("--cached", is_flag=True, help="Only artifacts already in the cache.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@command_options
def list_command(cached: bool, as_json: bool) -> None:
    """Every published SegNeXt artifact: name, dataset, mIoU, parameters, cached or not."""
    from ..hub.pull import cache_state
    from ..hub.registry import expected_param_count, list_artifacts

    rows = []
    for art in list_artifacts():
        state = cache_state(art.name)[0]
        if cached and state == "not cached":
            continue
        rows.append({"name": art.name, "kind": art.kind, "dataset": art.dataset, "miou": art.metrics.miou,
                     "miou_ms": art.metrics.miou_ms, "params": expected_param_count(art),
                     "cached": state == "cached", "damaged": state == "damaged", "source": art.layout})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if cached and not rows:
        from ..hub.cache import cache_root

        click.echo(shown(f"nothing cached in {cache_root()} (segnext-hub pull NAME adds one)"))
        return
    # mIoU in percent: single-scale, then multi-scale (+flip where the publisher says so).
    click.echo(f"{'name':<30} {'dataset':<11} {'mIoU':>6} {'mIoU-ms':>7} {'params':>7} {'source':<9} cached")
    for row in rows:
        miou = f"{row['miou']:.2f}" if row["miou"] is not None else "-"
        ms = f"{row['miou_ms']:.2f}" if row["miou_ms"] is not None else "-"
        click.echo(f"{row['name']:<30} {row['dataset']:<11} {miou:>6} {ms:>7} {row['params'] / 1e6:>6.1f}M "
                   f"{row['source']:<9} {'yes' if row['cached'] else 'DAMAGED' if row['damaged'] else ''}")


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="A file-name hash prefix mismatch is fatal (default: warning).")
@click.option("--force", is_flag=True, help="Download and convert again even if cached (offline: convert the kept download again).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@command_options
def pull(names: tuple[str, ...], strict: bool, force: bool, quiet: bool) -> None:
    """Download, verify and convert NAMES into the cache; print each folder.

    A cached name returns at once without touching the network. Interrupted downloads
    resume on the next pull. Set SEGNEXT_HUB_MIRROR to fetch through a mirror.
    """
    from ..hub.pull import pull as pull_artifact

    for name in names:
        result = pull_artifact(name, strict=strict, force=force, progress=False if quiet else None)
        click.echo(shown(str(result.path)))


@click.command()
@click.argument("name")
@command_options
def path(name: str) -> None:
    """Print the cache folder of NAME (exit 2 if it is not cached)."""
    from ..errors import BadInputError
    from ..hub.cache import artifact_dir
    from ..hub.pull import cached_manifest
    from ..hub.registry import get_artifact

    art = get_artifact(name)
    if cached_manifest(art.name) is None:
        raise BadInputError(f"{art.name} is not cached; run: segnext-hub pull {art.name}")
    click.echo(shown(str(artifact_dir(art.name))))


@click.command()
@click.argument("name_or_path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@command_options
def info(name_or_path: str, as_json: bool) -> None:
    """What NAME_OR_PATH is: a registry name, or a local checkpoint / model folder.

    For a registry name: the registry entry, cache state, hash status, the artifact's record
    and training-log summary (or why the log is missing). For a local file (any format
    segnext-convert reads) or a folder with model.safetensors + config.json: layout,
    variant, kind, classes, MD_R and training seed with their sources, and the registry
    artifact whose sha256 it has. Nothing is written.
    """
    from ..errors import BadInputError
    from ..hub.names import resolve

    source = resolve(name_or_path)
    if source.kind == "hf":
        raise BadInputError(f"{name_or_path}: info reads a registry name or a local file; "
                            "download the repo first (segnext_hub.load) and give its folder")
    if source.kind == "path":
        from ..tasks.describe import describe_path, format_description

        described = describe_path(source.path)
        if as_json:
            click.echo(json.dumps(described, indent=2, default=str))
            return
        for line in format_description(described):
            click.echo(shown(line))
        for line in described.get("disagreements") or []:
            click.echo(shown(f"warning: {line}"), err=True)
        return
    _registry_info(source.name, as_json)


def _registry_info(name: str, as_json: bool) -> None:
    import dataclasses

    from ..hub.entry import CacheEntry
    from ..hub.registry import get_artifact

    art = get_artifact(name)
    entry = CacheEntry(art.name)
    state, manifest, problem = entry.state()
    data = {"artifact": dataclasses.asdict(art), "cached": manifest is not None, "cache_state": state,
            "layout": art.layout, "training_seed": None, "training_seed_source": None, "record_warnings": []}
    data.update((key, getattr(art, key)) for key in ("variant", "kind", "num_classes", "md_r"))
    data["md_r_source"] = f"registry: {art.md_r_source}" if art.md_r is not None else None
    if problem:
        data["damage"] = problem
    if manifest:
        config = entry.read_config()
        data.update({key: getattr(config, key) for key in ("md_r", "md_r_source", "training_seed",
                                                           "training_seed_source")},
                    record_warnings=list(manifest.record_disagreements))
        data.update(path=str(entry.folder), raw_sha256=manifest.raw_sha256,
                    hash_status=manifest.hash_status, warnings=list(manifest.warnings),
                    verification=dict(manifest.verification) or None,
                    random_weights=manifest.random_weights)
        if manifest.log_file:
            from ..tasks.logs import parse_log_bytes

            try:
                data["log"] = parse_log_bytes(*entry.read_log(manifest)).as_dict()
            except Exception as err:  # noqa: BLE001 - a bad log must not hide the rest
                data["log_error"] = str(err)
        elif manifest.log_error:
            data["log_error"] = f"download failed: {manifest.log_error}"
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data["artifact"].items():
        if key == "sha256":
            value = value or "not pinned by the registry (the pull records the file's own)"
        elif value is None:
            continue  # a field that does not apply (a backbone's classes) or is unknown: no "None" lines
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        click.echo(shown(f"{key:<15} {value}"))
    state_text = {"cached": f"yes: {data.get('path')}", "damaged": f"DAMAGED: {problem}"}.get(state, "no")
    click.echo(shown(f"{'cached':<15} {state_text}"))
    if data.get("random_weights"):
        click.echo(shown(f"{'weights':<15} RANDOM: {data['random_weights']}"))
    if data["md_r"] is not None:
        click.echo(shown(f"{'MD_R':<15} {data['md_r']} ({data['md_r_source']})"))
    if manifest:
        seed = data["training_seed"]
        click.echo(shown(f"{'training seed':<15} " + (f"{seed} ({data['training_seed_source']})" if seed is not None
                                                       else "not recorded")))
    for line in data["record_warnings"]:
        click.echo(shown(f"warning: {line}"), err=True)
    if manifest:
        click.echo(shown(f"{'pulled sha256':<15} {data['raw_sha256']}"))
        click.echo(shown(f"{'hash status':<15} {data['hash_status']}"))
        ver = data.get("verification") or {}
        click.echo(shown(f"{'verified':<15} {ver.get('verified')} (max abs diff {ver.get('max_abs_diff')})"))
        if "log" in data:
            log = data["log"]
            click.echo(shown(f"{'log':<15} best mIoU {log.get('best_miou')} @ {log.get('best_miou_iter')}, "
                             f"final {log.get('final_miou')}, seed {log.get('seed')}, MD_R {log.get('md_r')}"))
        elif data.get("log_error"):
            click.echo(shown(f"{'log':<15} {data['log_error']}"))
        elif not art.log_url:
            click.echo(shown(f"{'log':<15} none published"))


@click.command()
@click.argument("names", nargs=-1)
@command_options
def verify(names: tuple[str, ...]) -> None:
    """Re-hash cached files against the sha256 recorded at pull time (all if no NAMES).

    Exit 1 when a file is missing or changed (the message names the repair command, the
    same one a load of that entry names); exit 2 when a named artifact was never pulled.
    """
    import sys

    from ..hub.pull import cached_names, verify_cached
    from ..hub.registry import get_artifact

    from ..errors import BadInputError
    from ..hub.cache import read_manifest

    targets = [get_artifact(n).name for n in names] or cached_names()
    for name in (targets if names else []):  # a named artifact that was never pulled is bad input, as in `path`
        try:
            missing = not read_manifest(name)
        except Exception:  # noqa: BLE001 - a damaged manifest is verify's to report
            missing = False
        if missing:
            raise BadInputError(f"{name} is not cached; run: segnext-hub pull {name}")
    if not targets:
        click.echo("nothing cached to verify")
    problems = []
    for name in targets:
        found = verify_cached(name)
        problems.extend(found)
        click.echo(shown(f"{name}: {'OK' if not found else 'FAILED'}"))
    for problem in problems:
        click.echo(shown(f"error: {problem}"), err=True)
    if problems:
        sys.exit(1)


@click.command()
@click.argument("names", nargs=-1, required=True)
@command_options
def rm(names: tuple[str, ...]) -> None:
    """Remove NAMES from the cache."""
    from ..hub.cache import remove_artifact
    from ..hub.registry import get_artifact

    for name in names:
        art = get_artifact(name)
        click.echo(shown(f"{art.name}: {'removed' if remove_artifact(art.name) else 'was not cached'}"))


@click.command()
@click.argument("name_or_file")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write loss/mIoU curves to a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@command_options
def log(name_or_file: str, plot_path: Optional[str], as_json: bool) -> None:
    """Summarise a training log: best/final mIoU, aAcc, mAcc, iterations, seed, MD_R.

    NAME_OR_FILE is a cached artifact name (pulled if needed) or a .log.json file.
    """
    from ..errors import BadInputError
    from ..hub.names import resolve
    from ..tasks.logs import format_summary, parse_log, parse_log_bytes, plot_log

    source = resolve(name_or_file)  # a registry name wins over a local file of that name
    if source.kind == "hf":
        raise BadInputError(f"{name_or_file}: Hub repos carry no training log; give a registry name or a file")
    if source.kind == "registry":
        from ..hub.pull import pull as pull_artifact
        from ..hub.registry import get_artifact

        if get_artifact(source.name).log_url is None:  # known without a download
            raise BadInputError(f"{source.name}: none published (the publisher released no training log)")
        result = pull_artifact(source.name)
        if not result.manifest.log_file:
            reason = result.manifest.log_error or "reason not recorded"
            raise BadInputError(f"{result.name}: the training log's download failed: {reason}; "
                                f"retry with: segnext-hub pull --force {result.name}")
        summary = parse_log_bytes(*result.entry.read_log(result.manifest))
    else:
        summary = parse_log(source.path)
    if plot_path:
        plot_log(summary, plot_path)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        click.echo(shown_lines(format_summary(summary)))
        if plot_path:
            click.echo(shown(f"plot: {plot_path}"))
