"""``agentserve kuberay`` (and ``python -m serve_app.kuberay``): render, validate, apply, status, delete."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from serve_app.config_file import CONFIG_ERRORS, config_problem
from serve_app.kuberay.render import DEFAULT_IMAGE, FILES, render_files
from serve_app.kuberay.validate import validate_object

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def _echo(line: str, err: bool = False) -> None:
    print(line, file=sys.stderr if err else sys.stdout)


def cmd_render(args: argparse.Namespace) -> int:
    opts = {"name": args.name, "namespace": args.namespace, "image": args.image, "host": args.host}
    try:
        files = render_files(args.config, ingress_class=args.ingress_class, **opts)
    except CONFIG_ERRORS as exc:
        print(f"agentserve kuberay render: nothing written: {args.config}: {config_problem(exc)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        (out / file_name).write_text(text)
        print(out / file_name)
    return 0


def _load(paths: list[str]) -> tuple[list[dict[str, Any]], int]:
    """The manifests of ``paths``, each validated; and how many failed to load or validate."""
    docs, failed = [], 0
    for path in paths:
        try:
            loaded = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as exc:
            loaded, failed = [], failed + 1
            print(f"{path}: {exc}", file=sys.stderr)
        else:
            if not loaded:
                failed += 1
                print(f"{path}: no Kubernetes objects in it", file=sys.stderr)
        for doc in loaded:
            what = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            try:
                validate_object(doc)
                print(f"{what}: ok")
                docs.append(doc)
            except ValueError as exc:
                failed += 1
                print(f"{what}: {exc}", file=sys.stderr)
    return docs, failed


def cmd_validate(args: argparse.Namespace) -> int:
    return 1 if _load(args.files)[1] else 0


def _with_cluster(args: argparse.Namespace, action: Callable[[ApiClient], int]) -> int:
    """Run ``action`` with a client from ``--context``; an unusable kubeconfig or API server is one error line."""
    import urllib3
    from kubernetes.config import ConfigException

    from serve_app.kuberay.cluster import load_client

    try:
        api = load_client(args.context)
    except ConfigException as exc:
        print(f"error: no usable kubeconfig or in-cluster service account: {exc}", file=sys.stderr)
        return 1
    with api:
        try:
            return action(api)
        except urllib3.exceptions.HTTPError as exc:
            print(f"error: cannot reach the API server at {api.configuration.host}: {exc}", file=sys.stderr)
            return 1


def cmd_apply(args: argparse.Namespace) -> int:
    from serve_app.kuberay.cluster import apply_manifests

    docs, failed = _load([str(Path(args.dir) / f) for f in FILES.values()])
    if failed:
        print("error: nothing applied: fix the manifests (or re-render) first", file=sys.stderr)
        return 1
    return _with_cluster(
        args, lambda api: apply_manifests(api, docs, _echo, force=args.force_conflicts, dry_run=args.dry_run)
    )


def cmd_status(args: argparse.Namespace) -> int:
    from kubernetes.client import ApiException

    from serve_app.kuberay.cluster import describe_status, get_rayservice, reason

    def status(api: ApiClient) -> int:
        try:
            service = get_rayservice(api, args.name, args.namespace)
        except ApiException as exc:
            print(f"error: rayservice {args.namespace}/{args.name}: {reason(exc)}", file=sys.stderr)
            return 1
        ready, lines = describe_status(service)
        print("\n".join(lines))
        return 0 if ready else 2

    return _with_cluster(args, status)


def cmd_delete(args: argparse.Namespace) -> int:
    from serve_app.kuberay.cluster import delete_all

    return _with_cluster(args, lambda api: delete_all(api, args.name, args.namespace, _echo))


def _add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = sub.add_parser("render", help="write the manifests of kuberay/ from a Serve config")
    render.add_argument("--config", default="configs/production.yaml")
    render.add_argument("--out", default="kuberay")
    render.add_argument("--image", default=DEFAULT_IMAGE, help="e.g. registry.example.com/agentserve:0.1.0")
    render.add_argument("--host", default=None, help="the Ingress host (with TLS from <name>-tls); default: any")
    render.add_argument("--ingress-class", default="nginx")
    validate = sub.add_parser("validate", help="check manifests: CRDs, Kubernetes schemas, serveConfigV2")
    validate.add_argument("files", nargs="+")
    apply = sub.add_parser("apply", help="validate kuberay/, then server-side apply it (not the Secret template)")
    apply.add_argument("--dir", default="kuberay")
    apply.add_argument("--force-conflicts", action="store_true", help="take over fields other managers set")
    apply.add_argument("--dry-run", action="store_true", help="the API server checks everything, persists nothing")
    status = sub.add_parser("status", help="the RayService's conditions and Serve apps (exit 2: not Ready)")
    delete = sub.add_parser("delete", help="delete the RayService, its Ingress and PodMonitor (not the Secret)")
    for p in (render, status, delete):
        p.add_argument("--name", default="agentserve")
        p.add_argument("--namespace", default="agentserve")
    for p in (apply, status, delete):
        p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    commands = {render: cmd_render, validate: cmd_validate, apply: cmd_apply, status: cmd_status, delete: cmd_delete}
    for p, func in commands.items():
        p.set_defaults(func=func)


def add_kuberay_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kuberay render|validate|apply|status|delete`` on the ``agentserve`` parser's subcommands."""
    kuberay = sub.add_parser("kuberay", help="KubeRay: render and validate manifests, apply, status, delete")
    _add_subcommands(kuberay.add_subparsers(dest="kuberay_command", required=True))


def main(argv: list[str] | None = None) -> int:
    from serve_app import kuberay

    parser = argparse.ArgumentParser(prog="python -m serve_app.kuberay", description=kuberay.__doc__)
    _add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
