"""Command-line entry of the mock upstream (argument parsing only; the server loads on run)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port (default 9000; 0 = any free port)")
    parser.add_argument("--protocol", choices=["openai", "anthropic", "both"], default="both",
                        help="which API routes exist (default both)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="non-stream: delay before responding")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="stream: delay before the first content chunk")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="stream: delay between chunks")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests (0..1) answered with --error-status")
    parser.add_argument("--error-status", type=int, default=500, help="status of injected errors (default 500)")
    parser.add_argument("--tokens", type=int, default=None, help="output exactly this many tokens per reply")
    parser.add_argument("--seed", type=int, default=None, help="seed of the error-injection RNG")
    parser.add_argument("--require-api-key", default=None, metavar="KEY",
                        help="require `Authorization: Bearer KEY` / `api-key` (OpenAI) or `x-api-key` (Anthropic)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")


def main_from_args(args: argparse.Namespace) -> int:
    problems = []
    if not 0.0 <= args.error_rate <= 1.0:
        problems.append("--error-rate must be between 0 and 1")
    if not 400 <= args.error_status <= 599:
        problems.append("--error-status must be a 4xx or 5xx status")
    if args.workers < 1:
        problems.append("--workers must be at least 1")
    if args.tokens is not None and args.tokens < 0:
        problems.append("--tokens must not be negative")
    for flag in ("latency_ms", "ttft_ms", "itl_ms"):
        if getattr(args, flag) < 0:
            problems.append(f"--{flag.replace('_', '-')} must not be negative")
    if problems:
        for p in problems:
            print(f"faregate mock-upstream: {p}", file=sys.stderr)
        return 2
    from faregate.mock.server import run
    from faregate.mock.settings import MockSettings

    settings = MockSettings(latency_ms=args.latency_ms, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                            error_rate=args.error_rate, error_status=args.error_status, tokens=args.tokens,
                            seed=args.seed, require_api_key=args.require_api_key)
    try:
        return run(settings, args.host, args.port, args.protocol, workers=args.workers)
    except OSError as exc:
        print(f"faregate mock-upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faregate.mock", description="Mock OpenAI/Anthropic upstream.")
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))
